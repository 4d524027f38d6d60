"""Kept for existing imports: the local GPTalk server now lives in ``g4f_gptalk.testing.server``."""

from .testing.faults import Faults
from .testing.server import GPTalkServer, ServerThread, echo_reply, serve_forever

__all__ = ["Faults", "GPTalkServer", "ServerThread", "echo_reply", "serve_forever"]
