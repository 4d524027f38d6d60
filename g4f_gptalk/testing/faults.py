"""What the local GPTalk server can do wrong on demand (``Faults``), for tests of how clients cope."""

from __future__ import annotations

import asyncio
import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Faults:
    """Misbehaviour to switch on. Each step names the modes to pick from; each request misbehaves with ``rate``.

    login/ask modes: ``"429"``, ``"500"``, ``"401"``, ``"403"`` (that status), ``"html"`` (a web page),
    ``"cloudflare"`` (a 403 Cloudflare challenge page), ``"code"`` (``{"code": 10001, ...}``), ``"auth-code"``
    (``{"code": 401, ...}``), ``"auth-code-10401"``, ``"no-token"``, ``"drop"`` (the connection is closed
    unanswered, after the request was counted), ``"retry-after"`` (429 asking to wait
    30 s), ``"redirect-loop"`` (307 to itself), ``"deep"`` (a token nested 100,000 lists deep), ``"crlf-token"``
    (a token with a line break), ``"echo-auth"`` (400 quoting the request's authorization), ``"echo-proxy-auth"``
    (400 quoting its proxy-authorization, as a proxy may), ``"echo-secrets"`` (500 quoting a fresh working token,
    never sent otherwise, and the fingerprint the request's token was issued for; on the stream too); login only:
    ``"no-expiry"``, ``"bad-expiry"`` (a working token without a readable ``expires_at``), ``"quote-fingerprint"``
    (refused with words that quote the fingerprint); ask only:
    ``"count-drop"`` (the ask is read and counted against its token, then the connection is dropped unanswered).
    stream modes: ``"cut"`` (connection dropped midway), ``"no-done"``, ``"bad-json"``, ``"non-string"``,
    ``"stall"`` (stops sending midway), ``"rewrite"`` (changes sent text), ``"noise"`` (SSE comments, ``event:``/
    ``id:``/``retry:`` lines and ``\\r\\n`` endings, all valid), ``"cr"`` (bare ``\\r`` line ends, valid too),
    ``"bom"`` (a byte order mark first, valid too), ``"linger"`` (keeps the stream open after ``[DONE]``, sending
    comments), ``"flood"`` (as ``"linger"``, after ``FLOOD`` at once), ``"deep"`` (an event nested 100,000 lists
    deep midway), ``"envelope"`` (200 with a JSON error envelope instead of events), ``"500"``, ``"echo-secrets"``,
    ``"redirect-loop"``, ``"endless-line"`` (midway, one line that never ends) and ``"endless-event"`` (midway, one
    event of ``data:`` lines that never ends), each up to ``ENDLESS_BYTES`` or until the client hangs up.
    """

    login: list[str] = field(default_factory=list)
    ask: list[str] = field(default_factory=list)
    stream: list[str] = field(default_factory=list)
    rate: float = 1.0
    times: int | None = None
    """How many requests may misbehave in all; None for no limit."""
    first_event_delay: float = 0.0
    login_delay: float = 0.0
    """Seconds each login waits before it is answered."""
    reset_reused: list[str] = field(default_factory=list)
    """Steps whose next request on a reused keep-alive connection is met by closing that connection, unanswered and
    uncounted, as a server does that closed an idle connection just as the client sent on it; one entry a request."""
    seed: int = 0
    tail_after_done: float = 0.0
    """Seconds between ``data: [DONE]`` and the end of the stream's body, as behind a proxy that ends it late."""
    tail_until_next_request: bool = False
    """End each stream's body after ``data: [DONE]`` only when the server's next request arrives: a tail shorter
    than the time to the client's next chat, as a few milliseconds are on a real network, without timing."""
    expires_at: str = "seconds"
    """How logins give ``expires_at``: ``"seconds"``, ``"milliseconds"``, ``"iso"`` (ISO-8601, UTC), ``"zero"``,
    ``"empty"`` or ``"far-future"`` (9999-12-31 in seconds); the token lasts ``token_ttl`` whatever it says."""
    clock_offset: float = 0.0
    """Seconds the server's clock is ahead of the real time (behind if negative): its ``Date`` header, its
    ``expires_at`` and its own expiry checks all follow it."""

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def pick(self, step: str) -> str | None:
        modes: list[str] = getattr(self, step)
        if not modes or self.times == 0 or self._random.random() >= self.rate:
            return None
        if self.times is not None:
            self.times -= 1
        return self._random.choice(modes)


def answer(mode: str, request: web.Request) -> web.Response | None:
    """The answer a login or ask gets in fault ``mode``; None for a mode the step itself applies."""
    if mode == "drop":
        assert request.transport is not None
        request.transport.abort()
        return web.Response()
    if mode == "retry-after":
        return web.json_response({"code": 429, "msg": "slow down", "data": None}, status=429,
                                 headers={"Retry-After": "30"})
    if mode == "redirect-loop":
        raise web.HTTPTemporaryRedirect(request.path_qs)
    if mode == "deep":
        return web.Response(text='{"code": 0, "data": {"token": ' + "[" * 100_000 + "]" * 100_000 + "}}",
                            content_type="application/json")
    if mode == "crlf-token":
        return web.json_response({"code": 0, "data": {"token": "abc\r\nx-injected: 1", "expires_at": 2**31}})
    if mode == "echo-auth":
        return web.Response(status=400, text=f"bad request with authorization: {request.headers.get('authorization')}")
    if mode == "echo-proxy-auth":
        return web.Response(status=400, text=f"proxy refused: {request.headers.get('proxy-authorization')}")
    if mode in ("no-expiry", "bad-expiry", "count-drop", "echo-secrets", "quote-fingerprint"):
        return None  # the step answers with that flaw, or applies it itself
    if mode.isdigit():
        return web.json_response({"code": int(mode), "msg": f"simulated HTTP {mode}", "data": None}, status=int(mode))
    if mode == "html":
        return web.Response(text="<!DOCTYPE html><html><title>Down for maintenance</title></html>",
                            content_type="text/html")
    if mode == "cloudflare":
        return web.Response(text="<!DOCTYPE html><html><title>Just a moment...</title></html>", status=403,
                            content_type="text/html")
    if mode == "code":
        return web.json_response({"code": 10001, "msg": "fingerprint banned", "data": None})
    if mode in ("auth-code", "auth-code-10401"):
        code = 401 if mode == "auth-code" else 10401
        return web.json_response({"code": code, "msg": "token expired, please log in again", "data": None})
    return web.json_response({"code": 0, "msg": "ok", "data": {}})  # "no-token"


FAR_FUTURE = 253402300799  # 9999-12-31T23:59:59Z in Unix seconds


def expires_at_field(fmt: str, expires_at: float) -> object:
    """``expires_at`` as a login answer gives it in format ``fmt`` (see ``Faults.expires_at``)."""
    if fmt == "milliseconds":
        return int(expires_at * 1000)
    if fmt == "iso":
        return datetime.datetime.fromtimestamp(expires_at, datetime.UTC).isoformat()
    return {"zero": 0, "empty": "", "far-future": FAR_FUTURE}.get(fmt, int(expires_at))


async def break_stream(mode: str, request: web.Request, response: web.StreamResponse, content: str,
                       event_of: Callable[[str], bytes], closing: asyncio.Event) -> None:
    """Misbehave midway through a stream, in fault ``mode``, where the next event would carry ``content``."""
    if mode == "cut":
        assert request.transport is not None
        request.transport.close()
    elif mode == "stall":
        try:
            await asyncio.wait_for(closing.wait(), timeout=60)
        except TimeoutError:
            pass
    elif mode == "bad-json":
        await response.write(b"data: {not json\n\n")
    elif mode == "non-string":
        await response.write(b'data: {"content": 42}\n\n')
    elif mode == "deep":
        await response.write(b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n")
    elif mode in ("endless-line", "endless-event"):
        await endless(response, b"x" * 65536 if mode == "endless-line" else (b"data: " + b"x" * 1017 + b"\n") * 64,
                      closing)
    else:  # rewrite
        await response.write(event_of("X" + content[1:]))


ENDLESS_BYTES = 300 * 2**20
"""How much an endless stream sends at most: hundreds of MB, bounded."""


async def endless(response: web.StreamResponse, piece: bytes, closing: asyncio.Event) -> None:
    """Send ``piece`` after ``piece`` until ``ENDLESS_BYTES``, the client hangs up or the server closes."""
    sent = 0
    while sent < ENDLESS_BYTES and not closing.is_set():
        try:
            await response.write(piece)
        except (ConnectionError, RuntimeError):
            return
        sent += len(piece)


FLOOD = b": " + b"x" * 32766 + b"\n\n"
"""32 KiB of SSE comment sent at once after ``[DONE]`` by the ``"flood"`` stream mode."""


async def linger(response: web.StreamResponse, closing: asyncio.Event) -> bool:
    """Keep a finished stream open with comments until the client hangs up (60 s at most); whether it did."""
    for _ in range(600):
        if closing.is_set():
            return False
        try:
            await response.write(b": ping\n\n")
        except (ConnectionError, RuntimeError):
            return True
        await asyncio.sleep(0.1)
    return False
