"""Kept for existing imports: the provider now lives in ``g4f_gptalk.protocol.provider``."""

from .protocol.provider import GPTalk

__all__ = ["GPTalk"]
