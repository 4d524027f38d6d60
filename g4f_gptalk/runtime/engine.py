"""The engine: one event loop in a daemon thread that runs every chat's network I/O, whatever loop or thread calls.

Connections, tokens and timers belong to the engine's loop, which lives as long as the process; callers' loops come
and go at their whim and hold nothing of ours. A sync caller takes the items of a chat from any thread
(``iterate``); an async caller awaits them in its own loop, asyncio's or uvloop's (``relay``). Either is woken
once per burst of items, never per item. ``docs/design.md`` ("The engine") says why, and what it costs.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

from ..compat import G4FError
from ..redaction import scrub_error
from .pool import Pool

T = TypeVar("T")
CANCEL_WAIT = 5.0
"""Seconds a sync caller that stopped early, or the interpreter at exit, waits for chats to be cancelled."""
FINISH_WAIT = 2.0
"""Seconds the interpreter's exit waits for the tasks it lets finish (``Engine.kept_at_exit``)."""
SIGNAL_SLICE = 0.5
"""Seconds at most that a sync caller waits for a chat's next items without running the signal handlers due."""


class EngineThreadError(RuntimeError, G4FError):
    """A sync call made on the engine's own thread, which would wait for itself (a ``g4f.debug.log_handler`` that
    chats, called for a debug line of ours). AnyIO's portal refuses such a call the same way."""


class _End:
    """The last item of a chat: how it ended."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Channel(Generic[T]):
    """Items from a task on the engine to one consumer in another thread. The consumer takes what has arrived in one
    go; only when nothing has does it leave a wake-up, which the engine calls once the items of its current turn are
    in: one wake per burst (the last text of a reply and its end go together)."""

    __slots__ = ("_due", "_guard", "_items", "_loop", "_wake")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: list[T | _End] = []
        self._guard = threading.Lock()
        self._wake: Callable[[], None] | None = None
        self._due = False

    def put(self, item: T | _End) -> None:
        """Add ``item``; on the engine's loop."""
        with self._guard:
            self._items.append(item)
            due = self._wake is not None and not self._due
            self._due = self._due or due
        if due:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        with self._guard:
            wake, self._wake, self._due = self._wake, None, False
        if wake is not None:
            wake()

    def _take_or_wait(self, wake: Callable[[], None] | None) -> list[T | _End] | None:
        """What has arrived, or None after leaving ``wake`` (if any) for the next ``put``."""
        with self._guard:
            items = self._items
            if items:
                self._items = []
                return items
            self._wake = wake
            return None

    def _forget_wake(self) -> None:
        with self._guard:
            self._wake = None

    def take(self, timeout: float | None = None) -> list[T | _End]:
        """What has arrived, waiting in this thread if nothing has (a signal interrupts the wait, so Ctrl-C works);
        an empty list if ``timeout`` ran out.

        The wait goes in slices of ``SIGNAL_SLICE``: a signal that comes just before a lock's wait begins is taken
        but does not end the wait, and its handler (Ctrl-C's KeyboardInterrupt) runs between two slices."""
        gate = threading.Lock()
        gate.acquire()
        items = self._take_or_wait(gate.release)
        if items is not None:
            return items
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                wait = SIGNAL_SLICE if deadline is None else min(SIGNAL_SLICE, deadline - time.monotonic())
                if wait <= 0 or gate.acquire(timeout=wait):
                    break
        finally:
            self._forget_wake()
        return self._take_or_wait(None) or []

    async def take_async(self) -> list[T | _End]:
        """What has arrived, waiting in the running loop if nothing has. The wake-up is the only thing of ours the
        loop ever holds, and only while it waits."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        items = self._take_or_wait(lambda: _wake_up(loop, future))
        if items is not None:
            return items
        try:
            await future
        finally:
            self._forget_wake()
        return self._take_or_wait(None) or []


def _wake_up(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    try:
        loop.call_soon_threadsafe(_resolve, future)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Engine:
    """An event loop running forever in a daemon thread, with the process's connection pool."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.kept_at_exit: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()
        """Tasks that the interpreter's exit lets finish (``FINISH_WAIT`` at most) before it cancels the rest: a
        login whose token the next process will find in the shared file."""
        self.loop = asyncio.new_event_loop()
        self.pool = Pool(self.loop)
        self.thread = threading.Thread(target=self.loop.run_forever, name="g4f-gptalk", daemon=True)
        self.thread.start()

    def _start(self, items: AsyncIterator[T], stream: bool) -> tuple[Channel[T], Callable[[], None]]:
        """A channel of ``items``, made a task of the engine, and what cancels that task (from any thread: the
        engine runs what it is handed in order, so the task exists by the time a cancel reaches it)."""
        channel: Channel[T] = Channel(self.loop)
        started: list[asyncio.Task[None]] = []
        self.loop.call_soon_threadsafe(lambda: started.append(self.loop.create_task(_produce(items, channel, stream))))

        def cancel() -> None:
            try:
                self.loop.call_soon_threadsafe(lambda: started[0].cancel())
            except RuntimeError:  # the engine's loop is closed (the interpreter is exiting): nothing runs there
                pass

        return channel, cancel

    def iterate(self, items: AsyncIterator[T], stream: bool = True) -> Iterator[T]:
        """The items of ``items``, run as a task of the engine, for a sync caller in any thread (each ``next()`` may
        come from another): each as soon as it is produced, or with ``stream=False`` all at the end. An error comes
        after the items before it; a caller that stops early (``close()``, ``break``, Ctrl-C) cancels the task and
        waits, boundedly, until it has ended."""
        if threading.current_thread() is self.thread:
            raise EngineThreadError(
                "GPTalk: a sync call on g4f-gptalk's own thread (from a g4f.debug.log_handler, say) would wait for "
                "itself; make it from another thread, or use the async API")
        channel, cancel = self._start(items, stream)
        ended = False
        try:
            while not ended:
                got, end = _split(channel.take())
                yield from got
                ended = end is not None
                _raise_error_of(end)
        finally:
            if not ended:
                cancel()
                _wait_for_end(channel)

    async def relay(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """The items of ``items``, run as a task of the engine, for a caller in another event loop: woken once per
        burst. A caller that stops early (``aclose()``, ``break``, a cancelled task) cancels the task; nothing is
        left in the caller's loop. On the engine's own loop ``items`` is simply iterated."""
        if asyncio.get_running_loop() is self.loop:
            try:
                async for own in items:
                    yield own
            except Exception as exc:
                scrub_error(exc)
                raise
            return
        channel, cancel = self._start(items, True)
        ended = False
        try:
            while not ended:
                got, end = _split(await channel.take_async())
                for item in got:
                    yield item
                ended = end is not None
                _raise_error_of(end)
        finally:
            if not ended:
                cancel()

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The result of ``coroutine``, run as a task of the engine, for a caller in any event loop."""
        async for result in self.relay(_one(coroutine)):
            return result
        raise AssertionError("a relay of one item ended without it")

    def shut_down(self) -> None:
        """Cancel the chats under way, close the pool and stop the loop."""
        if os.getpid() != self.pid or not self.thread.is_alive():
            return

        async def finish() -> None:
            if kept := [task for task in self.kept_at_exit if not task.done()]:
                await asyncio.wait(kept, timeout=FINISH_WAIT)
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=CANCEL_WAIT)
            await self.pool.close()

        try:
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(timeout=3 * CANCEL_WAIT)
        except Exception:  # noqa: BLE001 - at exit: what could not close in time is the interpreter's to free
            pass
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=CANCEL_WAIT)
            if not self.thread.is_alive():
                self.loop.close()


def _split(batch: list[T | _End]) -> tuple[list[T], _End | None]:
    """The items of a batch before its end, and the end if it came (always the last item put)."""
    last = batch[-1] if batch else None
    if isinstance(last, _End):
        return batch[:-1], last  # type: ignore[return-value]
    return batch, None  # type: ignore[return-value]


def _raise_error_of(end: _End | None) -> None:
    """The error that ended a chat, if any, raised scrubbed: the one exit of every error to a caller."""
    if end is not None and end.error is not None:
        raise scrub_error(end.error)


async def _produce(items: AsyncIterator[T], channel: Channel[T], stream: bool) -> None:
    collected: list[T] = []
    error: BaseException | None = None
    try:
        async for item in items:
            if stream:
                channel.put(item)
            else:
                collected.append(item)
    except BaseException as exc:  # noqa: BLE001 - it belongs to the caller, in its own thread
        error = exc
    for item in collected:
        channel.put(item)
    channel.put(_End(error))


async def _one(coroutine: Coroutine[Any, Any, T]) -> AsyncIterator[T]:
    yield await coroutine


def _wait_for_end(channel: Channel[Any]) -> None:
    """Wait (boundedly) until a cancelled chat has put its end: its request is gone by then."""
    while True:
        items = channel.take(timeout=CANCEL_WAIT)
        if not items or any(isinstance(item, _End) for item in items):
            return


_engine: Engine | None = None
_engine_guard = threading.Lock()


def engine() -> Engine:
    """The process's engine, started on first use (and afresh in a forked child)."""
    global _engine
    current = _engine
    if current is None:
        with _engine_guard:
            current = _engine = _engine or Engine()
    return current


def close_connections() -> None:
    """Close the engine's pooled connections now (they are made again on next use): for servers and tests that
    want the next chat to start without them. From any thread but the engine's."""
    current = _engine
    if current is not None:
        asyncio.run_coroutine_threadsafe(current.pool.close(), current.loop).result(timeout=CANCEL_WAIT)


@atexit.register
def _shut_down_at_exit() -> None:
    try:
        if _engine is not None:
            _engine.shut_down()
    except KeyboardInterrupt:  # Ctrl-C while the interpreter exits: the process is going anyway, quietly
        pass


_inherited: list[object] = []
"""In a forked child: the parent's engine, set aside. Never run, closed or freed: its loop shares an epoll (or libuv)
instance with the parent's, and closing it would unregister the parent's sockets."""


def _start_afresh_after_fork() -> None:
    global _engine, _engine_guard
    _inherited.append(_engine)
    _engine, _engine_guard = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_start_afresh_after_fork)
