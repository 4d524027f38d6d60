"""What keeps chats cheap: HTTP sessions pooled per event loop (``pool``) and event loops kept for sync callers
(``loops``)."""
