"""What keeps chats cheap and correct however g4f is hosted: HTTP sessions pooled per event loop (``pool``) and
the one loop thread that runs sync callers' chats (``portal``)."""

import g4f  # noqa: F401 - g4f first: its import runs the start-up hook, which loads the provider module whole
