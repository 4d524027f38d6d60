"""What keeps chats cheap and correct however g4f is hosted: the engine, one event loop in a thread of its own that
runs every chat (``engine``), and its pooled HTTP sessions (``pool``)."""

import g4f  # noqa: F401 - g4f first: its import runs the start-up hook, which loads the provider module whole
