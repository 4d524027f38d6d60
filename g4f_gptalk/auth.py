"""The GPTalk token lifecycle: one anonymous token serves at most 5 asks, and never past its expiry.

All the rules live here. The HTTP login itself is the provider's (``_Call.login`` in ``provider``); this module decides when
it is needed and makes concurrent chats share its result:

- a token is handed out for one ask at a time (``reserve``), at most ``MAX_ASKS_PER_TOKEN`` times, and only while
  it is ``CLOCK_SKEW`` seconds or more from its ``expires_at``;
- when no token is usable, one coroutine per event loop logs in while the others wait for its token (single
  flight), so N chats cost exactly ceil(N / 5) logins;
- a token the service rejects is dropped (``drop``) so that the next ``reserve`` logs in again.

The token is shared by every event loop of the process (``ChatCompletion.create`` runs each call in a new loop);
a ``threading.Lock`` guards the counters, and the asyncio lock that makes logins single-flight belongs to the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

MAX_ASKS_PER_TOKEN = 5
CLOCK_SKEW = 5.0
"""Seconds before ``expires_at`` at which a token is no longer used, for clocks that disagree a little."""


@dataclass(eq=False)
class Token:
    """An anonymous GPTalk token. Its value stays out of ``repr`` so that it never reaches a log line."""

    value: str = field(repr=False)
    expires_at: float
    asks: int = 0

    def usable(self, now: float) -> bool:
        return self.asks < MAX_ASKS_PER_TOKEN and now < self.expires_at - CLOCK_SKEW


class TokenCache:
    """The current token for one GPTalk service URL."""

    def __init__(self) -> None:
        self._token: Token | None = None
        self._guard = threading.Lock()

    def _take(self) -> Token | None:
        with self._guard:
            token = self._token
            if token is None or not token.usable(time.time()):
                return None
            token.asks += 1
            return token

    async def reserve(self, login_lock: asyncio.Lock, login: Callable[[], Awaitable[Token]]) -> Token:
        """A token counted for one ask: the current one if it has asks left, else one from a fresh ``login()``."""
        token = self._take()
        if token is not None:
            return token
        async with login_lock:
            token = self._take()  # a chat that held the lock before us may have logged in already
            if token is not None:
                return token
            token = await login()
            token.asks = 1  # a fresh token always serves the ask it was fetched for
            with self._guard:
                self._token = token
            return token

    def drop(self, token: Token) -> None:
        """Forget ``token`` (the service rejected it) unless a newer one has replaced it already."""
        with self._guard:
            if self._token is token:
                self._token = None
