"""The GPTalk token lifecycle: one anonymous token serves at most 5 asks, and never past its expiry.

All the rules live here. The HTTP login itself is the provider's (``_Call.login`` in ``provider``); this module decides when
it is needed and makes concurrent chats share its result:

- a token is handed out for one ask at a time (``reserve``), at most ``MAX_ASKS_PER_TOKEN`` times, and only while
  it is ``CLOCK_SKEW`` seconds or more from its ``expires_at``;
- when no token is usable, one chat logs in while the others queue for its token (single flight, across every
  event loop and thread of the process), so N chats cost exactly ceil(N / 5) logins. The login's token is handed
  to the first waiters in turn; the next waiter, if any, logs in next, so no waiter wakes for nothing;
- a waiter waits no longer than its own call's deadline, and a login whose loop died, stopped or is blocked by its
  own thread's sync call is taken over, so that nothing can wedge the queue;
- a token the service rejects is dropped (``drop``) so that the next ``reserve`` logs in again.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..compat import log
from ..runtime.pool import running_loop
from ..runtime.portal import is_blocked
from .errors import http_date

MAX_ASKS_PER_TOKEN = 5
CLOCK_SKEW = 5.0
"""Seconds before ``expires_at`` at which a token is no longer used, for clocks that disagree a little."""
STUCK_CHECK = 1.0
"""Seconds between a waiter's checks that the login it waits for can still go on."""
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


class _Login:
    """A login under way, and the loop it runs on."""

    __slots__ = ("loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def stuck(self) -> bool:
        """Whether the login cannot go on now: its loop is closed, stopped, or blocked by a sync call of its own
        thread (a notebook cell calling sync g4f while that loop's chat logs in)."""
        loop = self.loop
        return loop.is_closed() or not loop.is_running() or is_blocked(loop)


class _Waiter:
    """A chat queued for a login: its future resolves to a token counted for its ask, or to None (its turn to log
    in). ``handed`` and ``gone`` change only under the cache's guard, so a handover and a give-up never cross."""

    __slots__ = ("flight", "future", "gone", "handed", "loop", "value")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Token | None] = self.loop.create_future()
        self.handed = self.gone = False
        self.value: Token | None = None
        self.flight: _Login | None = None
        """The login that became this waiter's to make, when it is handed None."""

    def hand(self, value: Token | None, here: asyncio.AbstractEventLoop | None) -> bool:
        """Resolve the waiter's future with ``value`` from ``here``, the loop running in this thread (if any);
        False if the waiter's loop is closed, so that nothing can reach it."""
        if self.loop is here:
            _resolve(self.future, value)  # the same loop: no thread hop
        else:
            try:
                self.loop.call_soon_threadsafe(_resolve, self.future, value)
            except RuntimeError:  # closed, now or a moment ago
                return False
        self.handed, self.value = True, value
        return True


def _resolve(future: asyncio.Future[Token | None], value: Token | None) -> None:
    if not future.done():
        future.set_result(value)


class TokenCache:
    """The current token for one GPTalk service URL, shared by every loop and thread of the process."""

    def __init__(self) -> None:
        self._token: Token | None = None
        self._guard = threading.Lock()
        self._login: _Login | None = None
        self._waiters: collections.deque[_Waiter] = collections.deque()
        _caches.add(self)

    def _take(self) -> Token | None:
        token = self._token
        if token is None or not token.usable(time.time()):
            return None
        token.asks += 1
        return token

    def take(self) -> Token | None:
        """The current token counted for one ask if it has asks left, else None (then ``reserve``): four asks in
        five need nothing more, and no coroutine."""
        with self._guard:
            return self._take()

    async def reserve(self, login: Callable[[], Awaitable[Token]], wait: float) -> Token:
        """A token counted for one ask: the current one if it has asks left, else one from a login: ``login()``,
        or another chat's. Raises ``TimeoutError`` if another chat's login takes more than ``wait`` seconds.

        A chat logs in itself instead of waiting when the login under way is stuck (``_Login.stuck``), and a
        waiter does the same when it finds it stuck, at least once a second (``STUCK_CHECK``)."""
        with self._guard:
            token = self._take()
            if token is not None:
                return token
            flight = self._login
            if flight is None or flight.stuck():
                flight = self._login = _Login(asyncio.get_running_loop())
                waiter = None
            else:
                waiter = _Waiter()
                self._waiters.append(waiter)
        if waiter is not None:
            token = await self._wait(waiter, wait)
            if token is not None:
                return token
            flight = waiter.flight
        try:
            token = await login()
        except BaseException:
            with self._guard:
                if self._login is flight:
                    self._hand_on(None)
            raise
        token.asks = 1  # a fresh token always serves the ask it was fetched for
        with self._guard:
            if self._login is flight:
                self._token = token
                self._hand_on(token)
            elif self._token is None or not self._token.usable(time.time()):
                self._token = token  # a login another chat took over: its token is as good
        return token

    async def _wait(self, waiter: _Waiter, wait: float) -> Token | None:
        """The token handed to ``waiter``, or None when it is its turn to log in."""
        deadline = time.monotonic() + wait
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait((waiter.future,), timeout=min(left, STUCK_CHECK))
                if done:
                    return waiter.future.result()
                with self._guard:
                    if not waiter.handed and (self._login is None or self._login.stuck()):
                        waiter.gone = waiter.handed = True  # out of the queue: it logs in itself
                        waiter.flight = self._login = _Login(waiter.loop)
                        return None
        except BaseException:
            with self._guard:
                if not waiter.handed:
                    waiter.gone = True  # still queued: skipped when its turn comes
                elif waiter.value is None and self._login is waiter.flight:
                    self._hand_on(None)  # it was handed the next login: that turn passes on
            raise

    def _hand_on(self, token: Token | None) -> None:
        """With the guard held, after a login: ``token`` to the first waiters while it lasts, then the next
        waiter's turn to log in; with no waiter left, no login is under way. Waiters whose loop is closed are
        skipped."""
        now = time.time()
        here = running_loop()
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.gone:
                continue
            if token is not None and token.usable(now):
                if waiter.hand(token, here):
                    token.asks += 1
                continue
            waiter.flight = _Login(waiter.loop)  # before the hand: the waiter may read it at once, in its thread
            if waiter.hand(None, here):
                self._login = waiter.flight
                return
        self._login = None

    def offer(self, token: Token) -> None:
        """Make ``token`` (from a login outside any chat, such as a health check) the current one, unless the
        current one has asks left."""
        with self._guard:
            if self._token is None or not self._token.usable(time.time()):
                self._token = token

    def drop(self, token: Token) -> None:
        """Forget ``token`` (the service rejected it) unless a newer one has replaced it already."""
        with self._guard:
            if self._token is token:
                self._token = None

    def _forget(self) -> None:
        """In a forked child: the parent's token and login are the parent's (the guard may be held by a thread
        that does not exist here)."""
        self._token, self._guard, self._login = None, threading.Lock(), None
        self._waiters = collections.deque()


_caches: weakref.WeakSet[TokenCache] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for cache in list(_caches):
        cache._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
