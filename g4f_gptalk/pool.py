"""HTTP sessions pooled per event loop, closed when that loop shuts down, and requests that survive stale
keep-alive connections.

Every chat in a loop shares one ``aiohttp.ClientSession`` (one per SOCKS proxy, which needs its own connector), so
sequential and concurrent chats reuse keep-alive connections instead of opening one per call. Sync callers get a
loop that lasts as long as their thread (see ``loops``), so their chats share connections too.

aiohttp sessions belong to the loop they were made in. To close each loop's sessions at the right moment without
asking callers to do anything, the pool parks an async generator in the loop: ``asyncio.run``, g4f and ``loops``
call ``loop.shutdown_asyncgens()`` before closing a loop, which runs the generator's ``finally`` and closes the
sessions there. A loop closed without that (``run_until_complete`` then ``close()``) is noticed the next time the
pool serves a new loop: its sessions are marked closed and dropped, so that nothing keeps them or the loop alive,
and Python closes their sockets when it frees them.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from aiohttp import (
    BaseConnector,
    ClientConnectorError,
    ClientOSError,
    ClientResponse,
    ClientSession,
    ServerDisconnectedError,
    TCPConnector,
)
from g4f import debug

from .compat import log

STALE_RETRIES = 8
"""How many reused connections in a row a request may find closed by the server before it gives up."""

_opened: contextvars.ContextVar[bool] = contextvars.ContextVar("gptalk_connection_opened", default=False)


class _Connector(TCPConnector):
    """A ``TCPConnector`` that tells a request when it opened a new connection rather than reusing a pooled one.

    Only a new connection passes through ``_create_connection``, so a reused one costs nothing extra."""

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        _opened.set(True)  # in the requesting task's own context, so ``request`` reads it after a failure
        return await super()._create_connection(req, traces, timeout)


async def request(session: ClientSession, method: str, url: str, **options: Any) -> ClientResponse:
    """``session.request(...)``, its response's headers read; the caller releases it (``async with response``).

    A keep-alive connection the server closed while it sat in the pool fails the request before any byte of the
    response arrives. As in Go's net/http and urllib3, such a request is sent again on another connection, and
    only then: a failure on a new connection, or once the response has begun, is final, so the server never sees a
    request twice. Sessions through a SOCKS proxy (another connector) are not retried.
    """
    for _ in range(STALE_RETRIES):
        _opened.set(False)
        try:
            return await session.request(method, url, **options)
        except (ServerDisconnectedError, ClientOSError) as exc:
            if isinstance(exc, ClientConnectorError) or _opened.get() or not isinstance(session.connector, _Connector):
                raise
            if debug.logging:
                log(f"GPTalk: a pooled connection was closed by the server ({exc}); sending again")
    return await session.request(method, url, **options)


class LoopResources:
    """What GPTalk keeps for one event loop: its HTTP sessions, by SOCKS proxy."""

    def __init__(self) -> None:
        # by SOCKS proxy and by which headers object (kept here, so that its id stays its own)
        self._sessions: dict[tuple[str | None, int], tuple[ClientSession, Mapping[str, str]]] = {}
        self._closer: AsyncGenerator[None, None] | None = None

    def session(self, socks_proxy: str | None, headers: Mapping[str, str]) -> ClientSession:
        """The loop's shared session that sends ``headers`` by default; with ``socks_proxy``, one whose connector
        goes through that proxy. ``headers`` is a constant of the caller's: it is told apart from others by
        identity, not by content, which would cost hashing every header at every call."""
        key = (socks_proxy, id(headers))
        entry = self._sessions.get(key)
        if entry is None or entry[0].closed:
            connector: BaseConnector
            if socks_proxy is None:
                connector = _Connector()
            else:
                from g4f.requests.aiohttp import get_connector  # needs aiohttp_socks, only for SOCKS proxies

                connector = get_connector(proxy=socks_proxy)
            entry = self._sessions[key] = (ClientSession(connector=connector, headers=headers), headers)
        return entry[0]

    async def aclose(self) -> None:
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
