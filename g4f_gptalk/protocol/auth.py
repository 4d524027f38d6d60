"""The GPTalk token lifecycle: one anonymous token serves at most 5 asks, and never past its expiry.

All the rules live here. The HTTP login itself is a chat's (``Call.login`` in ``chat``); this module decides when
it is needed and makes concurrent chats share its result:

- a token is handed out for one ask at a time (``reserve``), at most ``MAX_ASKS_PER_TOKEN`` times, and only while
  it is ``CLOCK_SKEW`` seconds or more from its ``expires_at``;
- when no token is usable, one chat logs in while the others wait for its token (single flight: every chat runs on
  the engine's one loop), so N chats cost ceil(N / 5) logins;
- a waiter waits no longer than its own call's deadline, and a login is bounded by the time of the call that began
  it, whatever becomes of that call, so nothing can wedge the cache;
- a token the service rejects is dropped (``drop``) so that the next ``reserve`` logs in again;
- a chat that takes the last ask while chats keep coming starts the next login ahead of need (``after_ask``).

Where the tokens and their counts are kept, in memory or in the file the machine's processes share, is
``token_store``'s.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..compat import log
from ..runtime.engine import engine
from .errors import http_date

MAX_ASKS_PER_TOKEN = 5
CLOCK_SKEW = 5.0
"""Seconds before ``expires_at`` at which a token is no longer used, for clocks that disagree a little."""
UNKNOWN_EXPIRY_LIFETIME = 300.0
"""Seconds a token is used for when the login answer does not say when it expires."""


def expiry_of(data: dict[str, Any], date: str | None = None) -> float:
    """When a login answer's token expires, in Unix seconds by this machine's clock.

    ``data.expires_at`` is read as Unix seconds or milliseconds (numbers or numeric strings), whichever reading is
    the nearer future, so that neither far-future seconds nor milliseconds are misread; or as an ISO-8601 time. It
    is a time by the server's clock: ``date``, the answer's ``Date`` header, says how far that clock is from ours,
    and the expiry moves by as much (as HTTP caches correct an age). Missing, 0, empty, unreadable or already past
    by the server's clock, it is not given: the token is used for ``UNKNOWN_EXPIRY_LIFETIME`` at most.
    """
    now = time.time()
    server_now = http_date(date) if date else None
    offset = 0.0 if server_now is None else now - server_now
    expires = _instant(data.get("expires_at"), now - offset)
    if expires is None:
        log(f"GPTalk login: the answer gives no usable expires_at; the token is used for "
            f"{UNKNOWN_EXPIRY_LIFETIME:g} s at most")
        return now + UNKNOWN_EXPIRY_LIFETIME
    if abs(offset) >= CLOCK_SKEW:
        log(f"GPTalk login: the service's clock is {abs(offset):.0f} s {'behind' if offset > 0 else 'ahead of'} "
            f"this machine's; its expires_at is read by its own clock")
    return expires + offset


def _instant(value: Any, server_now: float) -> float | None:
    """``expires_at`` as Unix seconds by the server's clock if it is a time after ``server_now``, else None."""
    if isinstance(value, str) and not _is_number(value):
        try:
            when = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp()
        return seconds if seconds > server_now else None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float: no time this century
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    # Seconds past the year 9999 are milliseconds; of two future readings the nearer wins, so that 9999-12-31 in
    # seconds stays far ahead rather than 1978 in milliseconds. A past reading in either unit is no expiry at all.
    later = [reading for reading in (number, number / 1000) if server_now < reading <= LAST_SECOND]
    return min(later) if later else None


LAST_SECOND = 253402300799.0
"""9999-12-31T23:59:59Z in Unix seconds: the last instant an ``expires_at`` in seconds may name."""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(eq=False)
class Token:
    """An anonymous GPTalk token. Its value stays out of ``repr`` so that it never reaches a log line."""

    value: str = field(repr=False)
    expires_at: float
    asks: int = 0

    def usable(self, now: float) -> bool:
        return self.asks < MAX_ASKS_PER_TOKEN and now < self.expires_at - CLOCK_SKEW


PREFETCH_WHILE = 60.0
"""Seconds since the previous chat within which a chat that leaves ``AHEAD_ASKS`` asks or fewer starts the next
login ahead of need; an idle process never logs in ahead."""
AHEAD_ASKS = 1
"""The login ahead starts when this many asks are left: one chat early, so that a login on a connection of its own,
TLS handshake included, is done before the next token is needed."""


class TokenCache:
    """One GPTalk service URL's tokens (kept by a ``token_store``), the login under way for them, and the chats
    queued for that login. Used on the engine's loop only, so it needs no lock: every chat of the process, whatever
    its caller, runs there."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._login: asyncio.Future[Any] | None = None
        """The login under way, or the queued chat whose turn it is to log in: while set, chats queue."""
        self._waiters: collections.deque[asyncio.Future[Token | None]] = collections.deque()
        self._last_chat: float | None = None

    def take(self) -> Token | None:
        """A token counted for one ask if one has asks left, else None (then ``reserve``): four asks in five need
        nothing more, and no coroutine."""
        return self.store.claim()

    async def reserve(self, login: Callable[[], Awaitable[Token]], wait: float) -> Token:
        """A token counted for one ask: one with asks left, else one from a login, ``login()`` or the one under way.
        Raises ``TimeoutError`` if another chat's login keeps this one waiting more than ``wait`` seconds.

        Chats queue for the login under way in their order; its token goes to the first of them while it has asks,
        and the next one in the queue logs in then. The login is a task of its own, bounded by its own call's time:
        a chat that gives up meanwhile leaves it running, and its token serves the next chats. A login that fails is
        the error of the chat that began it; the next queued chat logs in itself."""
        token = self.take()
        if token is not None:
            return token
        if self._login is not None:
            token = await self._queue(wait)
            if token is not None:
                return token
        flight = self._login = self._flight(login, wait, for_a_chat=True)
        try:
            token = await asyncio.shield(flight)
        except asyncio.CancelledError:
            flight.add_done_callback(self._give_back)  # the ask counted for this chat is the next chat's
            raise
        assert token is not None
        return token

    def after_ask(self, login: Callable[[], Awaitable[Token]], wait: float) -> None:
        """Start ``login`` in the background if the chat just served left ``AHEAD_ASKS`` asks or fewer and chats
        keep coming (the one before came within ``PREFETCH_WHILE``): the chat that needs a new token then finds
        one. A login fetched so that fails is no one's error: the next chat logs in itself."""
        now = asyncio.get_running_loop().time()
        previous, self._last_chat = self._last_chat, now
        if previous is None or now - previous > PREFETCH_WHILE or self._login is not None \
                or self.store.left > AHEAD_ASKS:
            return
        flight = self._login = self._flight(login, wait, for_a_chat=False)
        flight.add_done_callback(_ahead_of_need)

    def _flight(self, login: Callable[[], Awaitable[Token]], wait: float, for_a_chat: bool) -> asyncio.Future[Any]:
        """A login, as a task of its own that the interpreter's exit lets finish, so that its token is kept."""
        flight = asyncio.ensure_future(self._log_in(login, wait, for_a_chat))
        engine().kept_at_exit.add(flight)
        return flight

    async def _queue(self, wait: float) -> Token | None:
        """A token counted for this chat's ask, or None when it is this chat's turn to log in."""
        waiter: asyncio.Future[Token | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(wait):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # served as it gave up: pass on what it was given
                token = waiter.result()
                if token is not None:
                    self.store.give_back(token)
                if token is not None or self._login is waiter:
                    self._serve_waiters()
            raise

    async def _log_in(self, login: Callable[[], Awaitable[Token]], wait: float, for_a_chat: bool) -> Token | None:
        """A token counted for the chat that began the login (``for_a_chat``), or stored for the next chats; one
        process of the machine at a time (``store.login_turn``), so a token another one stored meanwhile serves."""
        try:
            async with self.store.login_turn(wait):
                token = self.store.claim() if for_a_chat else None
                if token is None and (for_a_chat or self.store.asks_left() <= AHEAD_ASKS):
                    token = await login()
                    token.asks = 1 if for_a_chat else 0  # the ask of the chat that began it, if any
                    self.store.add(token)
        finally:
            self._serve_waiters()
        return token

    def _serve_waiters(self) -> None:
        """Asks to the queued chats while there are any; then, if chats remain, the next one's turn to log in; else
        no login is under way."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():  # it gave up
                continue
            token = self.store.claim()
            if token is not None:
                waiter.set_result(token)
                continue
            self._login = waiter
            waiter.set_result(None)
            return
        self._login = None

    def _give_back(self, flight: asyncio.Future[Token | None]) -> None:
        if not flight.cancelled() and flight.exception() is None and (token := flight.result()) is not None:
            self.store.give_back(token)

    def offer(self, token: Token) -> None:
        """Keep ``token``, from a login outside any chat (a health check), for the next chats."""
        token.asks = 0
        self.store.add(token)

    def drop(self, token: Token) -> None:
        """Forget ``token``: the service rejected it."""
        self.store.drop(token)


def _ahead_of_need(flight: asyncio.Future[Token | None]) -> None:
    if not flight.cancelled() and (error := flight.exception()) is not None:
        log(f"GPTalk login (ahead of need): {error}; the next chat logs in itself")


caches: dict[str, TokenCache] = {}
"""The token cache of each service URL (as ``arguments.checked_url`` gives it)."""


def cache_for(url: str) -> TokenCache:
    """The token cache of the service at ``url``, made on first use, and again when g4f's cookies folder changed."""
    cache = caches.get(url)
    if cache is None or cache.store.moved():
        from .token_store import store_for

        cache = caches[url] = TokenCache(store_for(url))
    return cache


def _forget_after_fork() -> None:
    caches.clear()  # the parent's: its counts are the parent's to spend, its logins ran on the parent's engine


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
