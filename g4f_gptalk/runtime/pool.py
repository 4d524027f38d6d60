"""The engine's HTTP sessions; the one retry policy for requests on reused connections; bodies drained after the
reply so that their connections stay pooled. ``docs/design.md`` ("Connections") says why each rule is as it is.
Everything here runs on the engine's loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import re
import weakref
from collections.abc import Mapping
from typing import Any

from aiohttp import (
    BaseConnector,
    ClientConnectorError,
    ClientError,
    ClientOSError,
    ClientRequest,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    ServerDisconnectedError,
    TCPConnector,
)
from aiohttp import __version__ as aiohttp_version
from aiohttp.http import HttpResponseParser
from g4f import debug

from ..compat import log

DRAIN_SECONDS = 5.0
"""How long a body may go on after ``data: [DONE]`` before its connection is closed instead of kept."""
DRAIN_BYTES = 16384
"""How much a body may hold after ``data: [DONE]`` before its connection is closed instead of kept (Chromium's
``HttpResponseBodyDrainer`` bounds, as the time bound above)."""
PAUSING_PARSER = (HttpResponseParser.__module__ == "aiohttp._http_parser"
                  and tuple(int(part) for part in re.findall(r"\d+", aiohttp_version)[:2]) >= (3, 14))
"""Whether aiohttp's HTTP parser is its C one, which since aiohttp 3.14 stops at the end of a body read that leaves
more than twice the read buffer waiting, and parses what follows only once that has been read."""
STREAM_BUFFER = 1 if PAUSING_PARSER else None
"""The stream request's ``read_bufsize``. With a pausing parser a reply whose head, body and junk after it (a broken
proxy's) come in one read is then read whole before the junk fails its connection, which is closed, not pooled;
with aiohttp's default buffer the parser raises on the junk at once and drops the reply it parsed. Elsewhere the
default (the pure-Python parser stalls with so small a buffer)."""
STREAM_READ = 2**16
"""The size of the stream's reads (``iter_chunked``), which raises its buffer to this, once its head has arrived,
so that the rest of the body is parsed as it comes."""
LARGE_BODY = 2**20
"""Request bodies larger than this are streamed from memory rather than handed to aiohttp as raw bytes."""
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS"))
"""The methods among GPTalk's requests that aiohttp itself sends once more when a reused connection fails before
the answer (aiohttp's own set also has PUT, DELETE and TRACE, which GPTalk never sends)."""
HELD_ASIDE = 4
"""Pooled connections a re-sent request sets aside (and gives back) while it looks for a new one; past these it
closes them."""

_opened: contextvars.ContextVar[bool] = contextvars.ContextVar("gptalk_connection_opened", default=False)
_connects: contextvars.ContextVar[int] = contextvars.ContextVar("gptalk_connects", default=0)


class _Connector(TCPConnector):
    """A ``TCPConnector`` that tells a request whether its connection is new, gives a request sent again (its first
    connection failed) a new connection, and never hands out a pooled connection on which bytes arrived while it sat
    idle (a 408, or what a broken proxy sent after a body): they would be read as the next request's answer. urllib3
    and Chromium never reuse such a connection either."""

    def __init__(self) -> None:
        super().__init__()
        self._handed_out: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connect(self, req: ClientRequest, traces: Any, timeout: ClientTimeout) -> Any:
        again = _connects.get() > 0  # in the requesting task's own context, as ``_opened``
        _connects.set(_connects.get() + 1)
        held: list[Any] = []
        try:
            while True:
                connection = await super().connect(req, traces, timeout)
                protocol = connection.protocol
                if protocol not in self._handed_out:
                    self._handed_out.add(protocol)
                    _opened.set(True)
                    return connection
                if protocol is not None and protocol.should_close:
                    connection.close()
                elif not again:
                    return connection
                elif len(held) < HELD_ASIDE:
                    held.append(connection)  # a pooled one: the request goes again on a new one
                else:
                    connection.close()
        finally:
            for connection in held:
                connection.release()


class StaleConnectionError(Exception):
    """A request sent on a reused keep-alive connection got no answer: the connection failed before the first byte
    of a response. The server may have closed it while it was idle, or read the request and then dropped it."""


async def request(session: ClientSession, method: str, url: str, *, body: bytes | None = None, resend: bool = True,
                  **options: Any) -> ClientResponse:
    """``session.request(...)``, its response's headers read; the caller releases it (``async with response``).

    A request on a reused connection that fails before any answer, or is answered 408 (the server timed the idle
    connection out), goes once more, on a new connection. aiohttp itself re-sends a GET that fails so; here a POST,
    or with ``resend=False`` a ``StaleConnectionError``, for a caller that counts what the server may have read. A
    408 is re-sent whatever the method: the server says it never read the request. Nothing goes out more than twice.
    Sessions through a SOCKS proxy (another connector) cannot tell new connections from reused ones: no re-sends.
    ``body`` goes as it is, or streamed from memory past ``LARGE_BODY`` (aiohttp warns about larger raw bytes).
    """
    _opened.set(False)
    _connects.set(0)
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
            log(f"GPTalk: a pooled connection was closed by the server ({exc}); sending again on a new one")
        return await _again(session, method, url, body, options)
    if response.status != 408 or _opened.get() or not ours:
        return response
    response.close()
    if debug.logging:
        log("GPTalk: the server timed out a pooled connection (HTTP 408); sending again on a new one")
    return await _again(session, method, url, body, options)


def _payload(body: bytes) -> bytes | io.BytesIO:
    return io.BytesIO(body) if len(body) > LARGE_BODY else body


async def _again(session: ClientSession, method: str, url: str, body: bytes | None,
                 options: dict[str, Any]) -> ClientResponse:
    """The request sent once more, with its body afresh (a streamed one was read the first time)."""
    if body is not None:
        options["data"] = _payload(body)
    return await session.request(method, url, **options)


class Pool:
    """The engine's HTTP sessions, by SOCKS proxy, and the bodies it drains."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # by SOCKS proxy and by which headers object (kept here, so that its id stays its own)
        self._sessions: dict[tuple[str | None, int], tuple[ClientSession, Mapping[str, str]]] = {}
        self.draining: set[asyncio.Task[None]] = set()
        """The tasks reading what follows a complete reply (see ``finish``)."""

    def finish(self, response: ClientResponse, read: int = 0) -> None:
        """Let go of a stream ``response`` whose reply is complete, ``read`` bytes after it already read: its
        connection goes back to the pool once its body ends, if that takes at most ``DRAIN_SECONDS`` and
        ``DRAIN_BYTES`` in all; else it is closed."""
        if response.content.is_eof():
            response.release()
            return
        task = self.loop.create_task(_drain(response, DRAIN_BYTES - read))
        self.draining.add(task)
        task.add_done_callback(self.draining.discard)

    def session(self, socks_proxy: str | None, headers: Mapping[str, str]) -> ClientSession:
        """The shared session that sends ``headers`` by default; with ``socks_proxy``, one whose connector goes
        through that proxy. ``headers`` is a constant of the caller's, told apart by identity."""
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

    async def close(self) -> None:
        """Close the sessions and the bodies still draining (they are made again on next use)."""
        for task in list(self.draining):
            task.cancel()
        sessions, self._sessions = [session for session, _ in self._sessions.values()], {}
        for session in sessions:
            await session.close()


async def _drain(response: ClientResponse, left: int) -> None:
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while left >= 0:
                chunk = await response.content.readany()
                if not chunk:
                    response.release()  # the body ended: its connection goes back to the pool
                    return
                left -= len(chunk)
    except (TimeoutError, ClientError):
        pass
    finally:
        response.close()  # past a bound, failed or cancelled; after a release, nothing more
