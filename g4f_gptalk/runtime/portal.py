"""One event loop in a daemon thread that runs every sync caller's chats, whatever thread calls.

Sync chats share this loop's pooled connections and tokens from any thread; a sync stream may be read a ``next()``
at a time from different threads; and the loop goes on serving the pool between calls, so that a close or a 408
the server sends meanwhile is read when it arrives. The design is AnyIO's blocking portal; ``docs/design.md`` says
why, and what it replaced.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

from . import pool
from .pool import running_loop

T = TypeVar("T")
CANCEL_WAIT = 5.0
"""Seconds a caller that stopped early, or the interpreter at exit, waits for chats to be cancelled."""


class _End:
    """The last thing a chat puts in its queue: how it ended."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Portal:
    """An event loop running forever in a daemon thread, for sync callers in any thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="g4f-gptalk", daemon=True)
        self.thread.start()

    def iterate(self, items: AsyncIterator[T], stream: bool = True) -> Iterator[T]:
        """The items of ``items``, run as a task of this loop, for a sync caller in any thread: each as soon as it
        is produced (with ``stream=False`` all at the end). An error raised by ``items`` comes after the items
        before it; a caller that stops early (``close()``, ``break``, Ctrl-C) cancels it."""
        handed: queue.SimpleQueue[T | _End] = queue.SimpleQueue()

        async def produce() -> None:
            # The caller blocks in handed.get(), woken by a put: it takes in one go what arrived meanwhile.
            collected: list[T] = []
            error: BaseException | None = None
            try:
                async for item in items:
                    if stream:
                        handed.put(item)
                    else:
                        collected.append(item)
            except BaseException as exc:  # noqa: BLE001 - it belongs to the caller, in its own thread
                error = exc
            for item in collected:
                handed.put(item)
            handed.put(_End(error))

        blocked = running_loop()  # a notebook: the caller's own loop stands still until this returns
        if blocked is not None:
            _block(blocked)
        future = asyncio.run_coroutine_threadsafe(produce(), self.loop)
        ended = False
        try:
            while True:
                item = handed.get()
                if item.__class__ is _End:
                    ended = True
                    error = item.error
                    if error is not None:
                        raise error
                    return
                yield item  # type: ignore[misc]
        finally:
            if blocked is not None:
                _unblock(blocked)
            if not ended:
                future.cancel()
                if threading.current_thread() is not self.thread:  # this loop cannot wait for itself
                    _wait_for_end(handed)

    def shut_down(self) -> None:
        """Cancel the chats under way, close the pooled sessions (``shutdown_asyncgens``) and stop the loop."""
        if os.getpid() != self.pid or not self.thread.is_alive():
            return

        async def finish() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=CANCEL_WAIT)
            await asyncio.wait([asyncio.ensure_future(self.loop.shutdown_asyncgens())], timeout=CANCEL_WAIT)

        try:
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(timeout=3 * CANCEL_WAIT)
        except Exception:  # noqa: BLE001 - at exit: what could not close in time is the interpreter's to free
            pass
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=CANCEL_WAIT)
            if not self.thread.is_alive():
                self.loop.close()


def _wait_for_end(handed: queue.SimpleQueue[T | _End]) -> None:
    """Wait (boundedly) until a cancelled chat has put its end: its request is gone by then."""
    try:
        while handed.get(timeout=CANCEL_WAIT).__class__ is not _End:
            pass
    except queue.Empty:
        pass


_portal: Portal | None = None
_portal_guard = threading.Lock()
_blocked: collections.Counter[asyncio.AbstractEventLoop] = collections.Counter()
"""Event loops whose thread is inside a sync call, and how many such calls: they cannot run meanwhile."""


_blocked_guard = threading.Lock()


def _block(loop: asyncio.AbstractEventLoop) -> None:
    with _blocked_guard:
        _blocked[loop] += 1


def _unblock(loop: asyncio.AbstractEventLoop) -> None:
    with _blocked_guard:
        _blocked[loop] -= 1
        if _blocked[loop] <= 0:
            del _blocked[loop]


def is_blocked(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop``'s thread waits in a sync call, so that nothing on ``loop`` can run until it returns."""
    return loop in _blocked


def portal() -> Portal:
    """The process's portal, started on first use."""
    global _portal
    current = _portal
    if current is not None:
        return current
    with _portal_guard:
        if _portal is None:
            _portal = Portal()
        return _portal


def iterate(items: AsyncIterator[T], stream: bool = True) -> Iterator[T]:
    """``portal().iterate(items, stream)``."""
    return portal().iterate(items, stream)


@atexit.register
def _shut_down_at_exit() -> None:
    if _portal is not None:
        _portal.shut_down()


_inherited: list[object] = []
"""In a forked child: the parent's portal and pooled sessions, set aside. Never run, closed or freed: their loops
share an epoll (or libuv) instance with the parent's, and closing one unregisters the parent's sockets."""


def _start_afresh_after_fork() -> None:
    global _portal, _portal_guard, _blocked, _blocked_guard
    _inherited.append((_portal, pool.forget_all()))
    _portal, _portal_guard, _blocked, _blocked_guard = None, threading.Lock(), collections.Counter(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_start_afresh_after_fork)
