"""What keeps chats cheap and correct however g4f is hosted: HTTP sessions pooled per event loop (``pool``) and
the one loop thread that runs sync callers' chats (``portal``)."""
