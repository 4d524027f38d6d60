"""Event loops for sync callers, kept between calls so that sync chats reuse pooled connections and tokens.

g4f's sync API would run each call in a new event loop, and with it a new HTTP session and TCP connection. Instead,
``iterate`` runs an async generator on a loop that the calling thread keeps and drives itself: the generator runs
as one task, its items collect in a queue, and the caller runs the loop only while that queue is empty, so each
item reaches the caller as soon as it is produced and a sync chat costs what an async one does.

A thread whose own loop is running (Jupyter, an async framework calling sync code) cannot drive a second loop, so
its calls run on one shared background loop thread instead, one thread hop per item.

A chat run there for a caller whose own loop it blocks must not wait for anything that loop has to do: it never
queues for another chat's login (see ``must_not_wait``).

Lifecycle: a thread's loop is shut down (its pooled sessions closed) when the thread ends, and the main thread's
at interpreter exit. After ``fork`` the child sets aside the loops it inherited, with everything they hold, and
starts afresh: it never runs, closes or frees them, because they share their epoll instance (or libuv's) with the
parent's, and closing one, which an event loop also does when it is freed, would unregister the parent's sockets.
Only public event loop APIs are used, so any loop implementation, uvloop included, is handled alike.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import contextvars
import os
import queue
import signal
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from . import pool
from .pool import running_loop

T = TypeVar("T")
must_not_wait: contextvars.ContextVar[bool] = contextvars.ContextVar("gptalk_must_not_wait", default=False)
"""True in a chat run for a sync caller whose own event loop it blocks (a notebook cell): anything that loop has
to do, such as finishing a login other chats wait for, cannot happen meanwhile, so the chat must not wait for it."""
CANCEL_WAIT = 5.0
"""Seconds a caller that stopped early waits for its request to be cancelled."""


class _KeptLoop:
    """One thread's event loop, shut down when the thread ends (this object dies with its thread-local slot)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        _kept.add(self)

    def __del__(self) -> None:
        self.shut_down()

    def shut_down(self) -> None:
        """Cancel what still runs, close the pooled sessions (``shutdown_asyncgens``) and close the loop."""
        loop = self.loop
        if loop.is_closed() or loop.is_running() or running_loop() is not None or os.getpid() != self.pid:
            return  # a thread running another loop cannot run this one, nor may a forked child; left as it is
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=CANCEL_WAIT))
            # bounded: a connection an interrupt left half-closed must not keep a thread or the interpreter waiting
            loop.run_until_complete(asyncio.wait([loop.create_task(loop.shutdown_asyncgens())], timeout=CANCEL_WAIT))
        finally:
            loop.close()


class _LoopThread:
    """A loop running forever in a daemon thread, for callers whose own thread already runs a loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="g4f-gptalk-loop", daemon=True)
        self.thread.start()

    def shut_down(self) -> None:
        async def drain() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            await self.loop.shutdown_asyncgens()

        if self.loop.is_closed() or not self.thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout=CANCEL_WAIT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=CANCEL_WAIT)
            if not self.thread.is_alive():
                self.loop.close()


_local = threading.local()
_kept: weakref.WeakSet[_KeptLoop] = weakref.WeakSet()
_loop_thread: _LoopThread | None = None
_loop_thread_guard = threading.Lock()


def iterate(items: AsyncIterator[T], stream: bool = True) -> Iterator[T]:
    """The items of ``items`` for a sync caller, each as soon as it is produced (with ``stream=False`` all at the
    end). An error raised by ``items`` comes after the items before it. A caller that stops early cancels it."""
    if running_loop() is None:
        kept = getattr(_local, "kept", None)
        if kept is None or kept.loop.is_closed():
            kept = _local.kept = _KeptLoop()
        return _drive(kept.loop, items, stream)
    return _hand_over(_shared_loop_thread().loop, items, stream)


def _drive(loop: asyncio.AbstractEventLoop, items: AsyncIterator[T], stream: bool) -> Iterator[T]:
    """Run ``items`` as a task of ``loop``, which this thread runs only while it waits for the next item."""
    ready: collections.deque[T] = collections.deque()
    waiter: asyncio.Future[None] | None = None
    interrupted = False

    async def produce() -> None:
        try:
            async for item in items:
                ready.append(item)
                if stream and waiter is not None and not waiter.done():
                    waiter.set_result(None)
        finally:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def on_ctrl_c(signum: int, frame: object) -> None:
        # As asyncio.Runner does: an interrupt while the loop runs cancels the request rather than landing somewhere
        # inside asyncio's own code; KeyboardInterrupt follows once the request is gone.
        nonlocal interrupted
        if not loop.is_running() or task.done():
            raise KeyboardInterrupt
        interrupted = True
        task.cancel()
        loop.call_soon_threadsafe(lambda: None)  # wakes a select() that waits for the network

    task = loop.create_task(produce())
    try:
        with _ctrl_c_handled_by(on_ctrl_c):
            while True:
                while ready:
                    yield ready.popleft()
                if task.done():
                    if interrupted:
                        raise KeyboardInterrupt
                    task.result()  # the error, if the items ended with one
                    return
                waiter = loop.create_future()
                loop.run_until_complete(waiter)
    finally:
        if not task.done():
            _cancel(loop, task)
        elif not task.cancelled():
            task.exception()  # retrieved: asyncio must not log it as never retrieved


@contextlib.contextmanager
def _ctrl_c_handled_by(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGINT meanwhile, if this is the main thread and SIGINT has Python's default handler."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _cancel(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
    """Cancel a producer whose caller stopped early, and wait until the request is gone."""
    if loop.is_closed():
        return
    kept = getattr(_local, "kept", None)
    if kept is None or kept.loop is not loop or running_loop() is not None:
        loop.call_soon_threadsafe(task.cancel)  # dropped in another thread: the loop's owner finishes it
        return
    task.cancel()
    loop.run_until_complete(asyncio.wait([task], timeout=CANCEL_WAIT))


_END = object()


def _hand_over(loop: asyncio.AbstractEventLoop, items: AsyncIterator[T], stream: bool) -> Iterator[T]:
    """Run ``items`` on the shared loop thread; its items cross over through a queue."""
    handed: queue.SimpleQueue[tuple[object, BaseException | None]] = queue.SimpleQueue()

    async def produce() -> None:
        collected: list[T] = []
        error: BaseException | None = None
        try:
            async for item in items:
                if stream:
                    handed.put((item, None))
                else:
                    collected.append(item)
        except BaseException as exc:  # noqa: BLE001 - it belongs to the caller, in its own thread
            error = exc
        for item in collected:
            handed.put((item, None))
        handed.put((_END, error))

    # the chat runs in a copy of this context in which it must not wait for what the blocked loop has to do
    context = contextvars.copy_context()
    context.run(must_not_wait.set, True)
    future = context.run(asyncio.run_coroutine_threadsafe, produce(), loop)
    finished = False
    try:
        while True:
            item, error = handed.get()
            if item is _END:
                finished = True
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]
    finally:
        if not finished:
            future.cancel()
            try:
                while handed.get(timeout=CANCEL_WAIT)[0] is not _END:
                    pass
            except queue.Empty:
                pass


def _shared_loop_thread() -> _LoopThread:
    global _loop_thread
    with _loop_thread_guard:
        if _loop_thread is None or not _loop_thread.thread.is_alive():
            _loop_thread = _LoopThread()
        return _loop_thread


@atexit.register
def _shut_down_at_exit() -> None:
    """Close the kept loops' sessions before the interpreter goes (threads that ended closed theirs already)."""
    if _loop_thread is not None:
        _loop_thread.shut_down()
    for kept in list(_kept):
        kept.shut_down()


_inherited: list[object] = []
"""In a forked child: the parent's loops and all they hold, set aside. Never run, closed or freed (see above); the
child keeps its copies of their descriptors until it exits."""


def _forget_after_fork() -> None:
    """In a forked child: set aside what the parent's loops hold, and start afresh."""
    global _local, _kept, _loop_thread, _loop_thread_guard
    _inherited.append((_local, list(_kept), _loop_thread, pool.forget_all()))
    _local, _kept, _loop_thread, _loop_thread_guard = threading.local(), weakref.WeakSet(), None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
