"""HTTP sessions pooled per event loop, closed when that loop shuts down; requests that survive stale keep-alive
connections; and bodies drained after the reply so that their connections stay pooled.

Every chat in a loop shares one ``aiohttp.ClientSession`` (one per SOCKS proxy, which needs its own connector), so
sequential and concurrent chats reuse keep-alive connections instead of opening one per call. Sync callers get a
loop that lasts as long as their thread (see ``loops``), so their chats share connections too.

aiohttp sessions belong to the loop they were made in. To close each loop's sessions at the right moment without
asking callers to do anything, the pool parks an async generator in the loop: ``asyncio.run``, g4f and ``loops``
call ``loop.shutdown_asyncgens()`` before closing a loop, which runs the generator's ``finally`` and closes the
sessions there. A loop closed without that (``run_until_complete`` then ``close()``) is noticed the next time the
pool serves a new loop: its sessions are marked closed and dropped, so that nothing keeps them or the loop alive,
and Python closes their sockets when it frees them.

A reply is complete at ``data: [DONE]``, but a proxy in front of the service may end the body a moment later. The
chat does not wait for that: ``finish`` hands the response to a drain task of its loop, which reads and discards
the rest, as urllib3 does on release and Chromium's HttpResponseBodyDrainer does with a body nobody wants (at most
16 KiB, within 5 s: past that a new connection is cheaper). aiohttp returns a connection to the pool the moment its
body ends; a body that does not end within the bound is closed with its connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from aiohttp import (
    BaseConnector,
    ClientConnectorError,
    ClientError,
    ClientOSError,
    ClientResponse,
    ClientSession,
    ServerDisconnectedError,
    TCPConnector,
)
from g4f import debug

from ..plugin.compat import log

STALE_RETRIES = 8
"""How many reused connections in a row a request may find closed by the server before it gives up."""
DRAIN_BYTES = 16384
"""How much may follow ``data: [DONE]`` in a body whose connection is still worth keeping."""
DRAIN_SECONDS = 5.0
"""How long a body may go on after ``data: [DONE]`` before its connection is closed instead of kept."""

_opened: contextvars.ContextVar[bool] = contextvars.ContextVar("gptalk_connection_opened", default=False)


class _Connector(TCPConnector):
    """A ``TCPConnector`` that tells a request whether the connection it got is new or was pooled before.

    It overrides ``connect``, the connector's public coroutine that hands a request its connection, and knows each
    connection by its protocol object. (aiohttp's tracing signals tell the same, but cost about ten coroutine calls
    per request.)"""

    def __init__(self) -> None:
        super().__init__()
        self._handed_out: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol not in self._handed_out:
            self._handed_out.add(protocol)
            _opened.set(True)  # in the requesting task's own context, so ``request`` reads it after a failure
        return connection


class StaleConnectionError(Exception):
    """A request sent on a reused keep-alive connection got no answer: the connection failed before the first byte
    of a response. The server may have closed it while it was idle, or read the request and then dropped it."""


async def request(session: ClientSession, method: str, url: str, *, resend: bool = True,
                  **options: Any) -> ClientResponse:
    """``session.request(...)``, its response's headers read; the caller releases it (``async with response``).

    A keep-alive connection the server closed while it sat in the pool fails the request before any byte of the
    response arrives. Such a request is sent again on another connection (up to ``STALE_RETRIES`` times), and only
    then: a failure on a new connection, or once the response has begun, is final. With ``resend=False`` it raises
    ``StaleConnectionError`` instead, for a caller that must count what the server may have read before it sends
    again. Sessions through a SOCKS proxy (another connector) cannot tell, and are not retried.
    """
    for _ in range(STALE_RETRIES):
        _opened.set(False)
        try:
            return await session.request(method, url, **options)
        except (ServerDisconnectedError, ClientOSError) as exc:
            if isinstance(exc, ClientConnectorError) or _opened.get() or not isinstance(session.connector, _Connector):
                raise
            if not resend:
                raise StaleConnectionError(str(exc)) from exc
            if debug.logging:
                log(f"GPTalk: a pooled connection was closed by the server ({exc}); sending again")
    return await session.request(method, url, **options)


class LoopResources:
    """What GPTalk keeps for one event loop: its HTTP sessions, by SOCKS proxy."""

    def __init__(self) -> None:
        # by SOCKS proxy and by which headers object (kept here, so that its id stays its own)
        self._sessions: dict[tuple[str | None, int], tuple[ClientSession, Mapping[str, str]]] = {}
        self._closer: AsyncGenerator[None, None] | None = None
        self.draining: set[asyncio.Task[None]] = set()
        """Drain tasks under way (see ``finish``)."""

    def finish(self, response: ClientResponse) -> None:
        """Let go of a stream ``response`` whose reply is complete: its connection goes back to the pool when its body
        ends, now or within the drain bound, read meanwhile by a task of this loop; otherwise it is closed."""
        if response.content.is_eof():
            response.release()
            return
        task = asyncio.get_running_loop().create_task(_drain(response))
        self.draining.add(task)
        task.add_done_callback(self.draining.discard)

    def session(self, socks_proxy: str | None, headers: Mapping[str, str]) -> ClientSession:
        """The loop's shared session that sends ``headers`` by default; with ``socks_proxy``, one whose connector
        goes through that proxy. ``headers`` is a constant of the caller's: it is told apart from others by
        identity, not by content, which would cost hashing every header at every call."""
        key = (socks_proxy, id(headers))
        entry = self._sessions.get(key)
        if entry is None or entry[0].closed:
            if socks_proxy is None:
                session = ClientSession(connector=_Connector(), headers=headers)
            else:
                from g4f.requests.aiohttp import get_connector  # needs aiohttp_socks, only for SOCKS proxies

                connector: BaseConnector = get_connector(proxy=socks_proxy)
                session = ClientSession(connector=connector, headers=headers)
            entry = self._sessions[key] = (session, headers)
        return entry[0]

    async def aclose(self) -> None:
        for task in list(self.draining):
            task.cancel()
        if self.draining:
            await asyncio.wait(self.draining)
        sessions, self._sessions = [session for session, _ in self._sessions.values()], {}
        for session in sessions:
            await session.close()

    def abandon(self) -> None:
        """Let go of the sessions of a loop that was closed without shutting them down.

        Nothing can run on a closed loop, so the sessions cannot close their connections; closing them marks them
        closed (no "Unclosed" warnings), and the parked generator is finished here, not by the dead loop.
        """
        closer, self._closer = self._closer, None
        if closer is not None:
            step = closer.aclose().__await__()
            try:
                step.send(None)  # the generator's finally runs to its end: on a closed loop nothing waits
            except StopIteration:
                pass
            finally:
                step.close()


async def _drain(response: ClientResponse) -> None:
    """Read and discard what follows the reply, within ``DRAIN_BYTES`` and ``DRAIN_SECONDS``. aiohttp puts the
    connection back in the pool the moment the body ends; a body still going when reading stops is closed."""
    received = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while received <= DRAIN_BYTES and (chunk := await response.content.readany()):
                received += len(chunk)
    except (TimeoutError, ClientError):
        pass
    finally:
        response.close()  # nothing left to close if the body ended: its connection is pooled already


# The resources of each loop that has served a chat. A closed loop's entry is swept out when the next new loop
# arrives (``abandon_closed_loops``), so at most the last dead loop is held at a time.
_by_loop: dict[asyncio.AbstractEventLoop, LoopResources] = {}

async def _close_at_loop_shutdown(loop: asyncio.AbstractEventLoop, resources: LoopResources) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if _by_loop.get(loop) is resources:
            del _by_loop[loop]
        await resources.aclose()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """This thread's running event loop, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def of_running_loop() -> LoopResources | None:
    """The running loop's resources, if it has any yet (``for_running_loop`` makes them)."""
    return _by_loop.get(asyncio.get_running_loop())


async def for_running_loop() -> LoopResources:
    """The running loop's resources, made on first use."""
    loop = asyncio.get_running_loop()
    resources = _by_loop.get(loop)
    if resources is None:
        abandon_closed_loops()
        resources = _by_loop[loop] = LoopResources()
        closer = _close_at_loop_shutdown(loop, resources)
        await closer.asend(None)  # its first step registers it with the loop's shutdown_asyncgens()
        resources._closer = closer  # the loop holds it only weakly
    return resources


def loops() -> list[asyncio.AbstractEventLoop]:
    """The loops whose sessions the pool holds."""
    return list(_by_loop)


def forget_all() -> dict[asyncio.AbstractEventLoop, LoopResources]:
    """Let go of every loop's resources without touching them, and return them (for a forked child)."""
    global _by_loop
    inherited, _by_loop = _by_loop, {}
    return inherited


def abandon_closed_loops() -> None:
    """Let go of the sessions of every loop that was closed without shutting them down."""
    for loop in [loop for loop in list(_by_loop) if loop.is_closed()]:
        resources = _by_loop.pop(loop, None)
        if resources is not None:
            resources.abandon()


async def close_running_loop() -> None:
    """Close the running loop's sessions now (they are made again on next use); for servers and tests."""
    resources = _by_loop.pop(asyncio.get_running_loop(), None)
    if resources is not None:
        closer, resources._closer = resources._closer, None
        await resources.aclose()
        if closer is not None:
            await closer.aclose()
