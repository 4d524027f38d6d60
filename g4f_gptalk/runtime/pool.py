"""HTTP sessions pooled per event loop; the one retry policy for requests on reused connections; bodies drained
after the reply so that their connections stay pooled. ``docs/design.md`` ("Connections") says why each rule is
as it is.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import weakref
from collections.abc import AsyncGenerator, Coroutine, Mapping
from typing import Any

from aiohttp import (
    BaseConnector,
    ClientConnectorError,
    ClientOSError,
    ClientRequest,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    ServerDisconnectedError,
    TCPConnector,
)
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from g4f import debug

from ..compat import log

DRAIN_SECONDS = 5.0
"""How long a body may go on after ``data: [DONE]`` before its connection is closed instead of kept."""
LARGE_BODY = 2**20
"""Request bodies larger than this are streamed from memory rather than handed to aiohttp as raw bytes."""
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS"))
"""Methods that aiohttp itself sends once more when a connection fails before the answer."""

_opened: contextvars.ContextVar[bool] = contextvars.ContextVar("gptalk_connection_opened", default=False)


class _Connector(TCPConnector):
    """A ``TCPConnector`` that tells a request whether its connection is new, and never hands out a pooled
    connection on which bytes arrived while it sat idle (a 408, or what a broken proxy sent after a body): they
    would be read as the next request's answer. urllib3 and Chromium never reuse such a connection either."""

    def __init__(self) -> None:
        # No DNS cache: its lookups run as tasks of their own, which a loop closed mid-lookup would leave pending.
        # A lookup is made only when a connection is opened, which pooling makes rare.
        super().__init__(use_dns_cache=False)
        self._handed_out: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connect(self, req: ClientRequest, traces: list[Trace], timeout: ClientTimeout) -> Connection:
        while True:
            connection = await super().connect(req, traces, timeout)
            protocol = connection.protocol
            if protocol not in self._handed_out:
                self._handed_out.add(protocol)
                _opened.set(True)  # in the requesting task's own context, so ``request`` reads it after a failure
                return connection
            if protocol is None or not protocol.should_close:
                return connection
            connection.close()


class StaleConnectionError(Exception):
    """A request sent on a reused keep-alive connection got no answer: the connection failed before the first byte
    of a response. The server may have closed it while it was idle, or read the request and then dropped it."""


async def request(session: ClientSession, method: str, url: str, *, body: bytes | None = None, resend: bool = True,
                  **options: Any) -> ClientResponse:
    """``session.request(...)``, its response's headers read; the caller releases it (``async with response``).

    A request on a reused connection that fails before any answer, or is answered 408 (the server timed the idle
    connection out), goes once more. aiohttp itself re-sends a GET that fails so; here a POST, or with
    ``resend=False`` a ``StaleConnectionError``, for a caller that counts what the server may have read. A 408 is
    re-sent whatever the method: the server says it never read the request. Nothing goes out more than twice.
    Sessions through a SOCKS proxy (another connector) cannot tell new connections from reused ones: no re-sends.
    ``body`` goes as it is, or streamed from memory past ``LARGE_BODY`` (aiohttp warns about larger raw bytes).
    """
    _opened.set(False)
    ours = isinstance(session.connector, _Connector)
    if body is not None:
        options["data"] = _payload(body)
    try:
        response = await session.request(method, url, **options)
    except (ServerDisconnectedError, ClientOSError) as exc:
        if isinstance(exc, ClientConnectorError) or _opened.get() or not ours or method in IDEMPOTENT:
            raise
        if not resend:
            raise StaleConnectionError(str(exc)) from exc
        if debug.logging:
            log(f"GPTalk: a pooled connection was closed by the server ({exc}); sending again")
        await asyncio.sleep(0)  # takes in the closes of other pooled connections that arrived meanwhile
        return await _again(session, method, url, body, options)
    if response.status != 408 or _opened.get() or not ours:
        return response
    response.close()
    if debug.logging:
        log("GPTalk: the server timed out a pooled connection (HTTP 408); sending again")
    await asyncio.sleep(0)
    return await _again(session, method, url, body, options)


def _payload(body: bytes) -> bytes | io.BytesIO:
    return io.BytesIO(body) if len(body) > LARGE_BODY else body


async def _again(session: ClientSession, method: str, url: str, body: bytes | None,
                 options: dict[str, Any]) -> ClientResponse:
    """The request sent once more, with its body afresh (a streamed one was read the first time)."""
    if body is not None:
        options["data"] = _payload(body)
    return await session.request(method, url, **options)


class LoopResources:
    """What GPTalk keeps for one event loop: its HTTP sessions, by SOCKS proxy, and the bodies it drains."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # by SOCKS proxy and by which headers object (kept here, so that its id stays its own)
        self._sessions: dict[tuple[str | None, int], tuple[ClientSession, Mapping[str, str]]] = {}
        self._closer: AsyncGenerator[None, None] | None = None
        self.draining: dict[ClientResponse, asyncio.TimerHandle] = {}
        """Responses whose body goes on after the reply, each with the timer that closes it (see ``finish``)."""

    def finish(self, response: ClientResponse) -> None:
        """Let go of a stream ``response`` whose reply is complete. aiohttp gives its connection back to the pool the
        moment the body ends, read or not; a body that has not ended within ``DRAIN_SECONDS`` is closed with its
        connection. No task is involved: a loop that dies meanwhile takes its timer with it."""
        if response.content.is_eof():
            response.release()
            return
        self.draining[response] = self.loop.call_later(DRAIN_SECONDS, self._give_up, response)
        # What arrives meanwhile waits in the response's buffer, which aiohttp bounds by pausing the socket.
        response.content.on_eof(lambda: self._drained(response))

    def _drained(self, response: ClientResponse) -> None:
        timer = self.draining.pop(response, None)
        if timer is not None:
            timer.cancel()

    def _give_up(self, response: ClientResponse) -> None:
        self.draining.pop(response, None)
        response.close()

    def session(self, socks_proxy: str | None, headers: Mapping[str, str]) -> ClientSession:
        """The loop's shared session that sends ``headers`` by default; with ``socks_proxy``, one whose connector
        goes through that proxy. ``headers`` is a constant of the caller's, told apart by identity."""
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
        """Close the sessions and the bodies still draining. On a closed loop every step finishes at once: aiohttp
        leaves the transports of a closed loop alone, and a response released after its connector closed only lets
        go of its connection."""
        draining, self.draining = self.draining, {}
        sessions, self._sessions = [session for session, _ in self._sessions.values()], {}
        for session in sessions:
            await session.close()
        alive = not self.loop.is_closed()
        for response, timer in draining.items():
            if alive:
                timer.cancel()
            response.release()

    def abandon(self) -> None:
        """Let go of the sessions of a loop that was closed without shutting them down, without running anything on
        it: the parked generator is finished here, its sessions marked closed, and Python frees their sockets."""
        closer, self._closer = self._closer, None
        if closer is not None:
            _finish_without_a_loop(closer.aclose())


def _finish_without_a_loop(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` to its end here, stepping over bare yields (``sleep(0)``, aiohttp's ``noop``); if it waits
    for a future, which a closed loop will never resolve, it is closed there."""
    step = coroutine.__await__()
    try:
        for _ in range(100):
            if step.send(None) is not None:
                break
    except StopIteration:
        pass
    finally:
        step.close()


# The resources of each loop that has served a chat. A closed loop's entry is swept out when the next new loop
# arrives (``abandon_closed_loops``), so at most the last dead loops are held at a time.
_by_loop: dict[asyncio.AbstractEventLoop, LoopResources] = {}


async def _close_at_loop_shutdown(loop: asyncio.AbstractEventLoop, resources: LoopResources) -> AsyncGenerator[None, None]:
    # Parked in the loop: asyncio.run, g4f and the portal call loop.shutdown_asyncgens() before closing a loop,
    # which runs this finally there.
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
        resources = _by_loop[loop] = LoopResources(loop)
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
