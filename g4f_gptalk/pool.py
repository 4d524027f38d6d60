"""HTTP sessions pooled per event loop, and closed when that loop shuts down.

Every chat in a loop shares one ``aiohttp.ClientSession`` (one per SOCKS proxy, which needs its own connector), so
sequential and concurrent chats reuse keep-alive connections instead of opening one per call.

aiohttp sessions belong to the loop they were made in, and g4f's sync API runs each call in a new loop. To close
each loop's sessions at the right moment without asking callers to do anything, the pool parks an async generator
in the loop: ``asyncio.run`` and g4f both call ``loop.shutdown_asyncgens()`` before closing a loop, which runs the
generator's ``finally`` and closes the sessions there.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncGenerator, Mapping

from aiohttp import BaseConnector, ClientSession


class LoopResources:
    """What GPTalk keeps for one event loop: its HTTP sessions and its login locks (one per service URL)."""

    def __init__(self) -> None:
        self._sessions: dict[str | None, ClientSession] = {}
        self.login_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._closer: AsyncGenerator[None, None] | None = None

    def session(self, socks_proxy: str | None, headers: Mapping[str, str]) -> ClientSession:
        """The loop's shared session; with ``socks_proxy``, the one whose connector goes through that proxy.

        ``headers`` become the default headers of a session made now (every caller passes the same ones).
        """
        session = self._sessions.get(socks_proxy)
        if session is None or session.closed:
            connector: BaseConnector | None = None
            if socks_proxy is not None:
                from g4f.requests.aiohttp import get_connector  # needs aiohttp_socks, only for SOCKS proxies

                connector = get_connector(proxy=socks_proxy)
            session = self._sessions[socks_proxy] = ClientSession(connector=connector, headers=headers)
        return session

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


_by_loop: dict[asyncio.AbstractEventLoop, LoopResources] = {}


async def _close_at_loop_shutdown(loop: asyncio.AbstractEventLoop, resources: LoopResources) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if _by_loop.get(loop) is resources:
            del _by_loop[loop]
        await resources.aclose()


async def for_running_loop() -> LoopResources:
    """The running loop's resources, made on first use."""
    loop = asyncio.get_running_loop()
    resources = _by_loop.get(loop)
    if resources is None:
        resources = _by_loop[loop] = LoopResources()
        closer = _close_at_loop_shutdown(loop, resources)
        await closer.asend(None)  # its first step registers it with the loop's shutdown_asyncgens()
        resources._closer = closer  # the loop holds it only weakly
    return resources


async def close_running_loop() -> None:
    """Close the running loop's sessions now (they are made again on next use); for servers and tests."""
    resources = _by_loop.pop(asyncio.get_running_loop(), None)
    if resources is not None:
        await resources.aclose()
