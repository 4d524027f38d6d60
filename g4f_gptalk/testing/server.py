"""A local server that speaks the GPTalk protocol, for tests, demos and benchmarks. It binds to loopback.

It answers like gptalk.net: anonymous logins issue tokens that expire and serve at most 5 asks (a sixth ask gets
HTTP 401), an ask returns a stream token, and the stream sends a deterministic reply built from the prompt in many
server-sent events of cumulative ``content``. It counts what clients did (``stats``) and can misbehave on demand
(``Faults``), so that tests assert on the wire. Use it as the ``gptalk_server`` pytest fixture, as
``async with GPTalkServer() as server:`` in a loop, as ``with ServerThread() as server:`` from sync code, or as
``g4f-gptalk serve``; ``/_local/stats``,
``/_local/reset`` and ``/_local/faults`` control a server running in another process, for loopback clients only.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import re
import secrets
import ssl
import threading
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from . import faults
from .faults import Faults

LOGIN_PATH = "/api/chatgpt/user/login"
ASK_PATH = "/api/chatgpt/chatapi/text"
STREAM_PATH = "/api/chatgpt/chatapi/stream"
FINGERPRINT = re.compile(r"[0-9a-f]{32}")
MAX_REQUEST_BYTES = 64 * 2**20
"""The largest request body the server reads (an ask with a long conversation); aiohttp's default is 1 MiB."""


def echo_reply(prompt: str) -> str:
    """The default reply: the prompt, framed by text in several scripts so that clients must handle UTF-8."""
    return f"GPTalk heard: «{prompt}» — Grüße, 你好, привет 🌍!"


class GPTalkServer:
    """The GPTalk protocol on ``http://127.0.0.1:<port>``; port 0 picks a free one (read ``url`` after start).

    With ``ssl_context`` it serves https instead, for checking that clients verify certificates.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        token_ttl: float = 3600.0,
        max_asks: int = 5,
        chunk_chars: int = 3,
        reply: Callable[[str], str] = echo_reply,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
        keepalive_timeout: float = 75.0,
        prefix: str = "",
    ) -> None:
        self.host, self.port, self.ssl_context, self.prefix = host, port, ssl_context, prefix.rstrip("/")
        self.keepalive_timeout = keepalive_timeout
        self.token_ttl, self.max_asks, self.chunk_chars, self.reply = token_ttl, max_asks, chunk_chars, reply
        self.faults = Faults()
        self.before_event: Callable[[int], Awaitable[None]] | None = None
        """Awaited before the stream sends its event number N (from 0): lets a test pace the server."""
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._next_request: asyncio.Future[None] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every token and count from zero."""
        self.stats: Counter[str] = Counter()
        self.first_event_at: float | None = None
        """When a stream last sent its first event (``time.time()``)."""
        self.prompts: list[str] = []
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self._tokens: dict[str, list[float]] = {}  # token -> [expires_at, asks]
        self._fingerprints: dict[str, str] = {}  # token -> the fingerprint it was issued for
        self._last_fingerprint: str | None = None
        self.issued: list[str] = []
        """Every token and stream token this server has issued, echoed ones included (what a client must hide)."""
        self._streams: dict[str, tuple[str, str]] = {}  # stream token -> (prompt, model)
        self._connections_seen: weakref.WeakSet[Any] = weakref.WeakSet()  # their transports

    @property
    def url(self) -> str:
        """The service address (with ``prefix``, the path the API is under)."""
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}{self.prefix}"

    def now(self) -> float:
        """The time by the server's clock (``Faults.clock_offset`` from the real one)."""
        return time.time() + self.faults.clock_offset

    @property
    def open_connections(self) -> int:
        """TCP connections open right now (a handler still running for a client that hung up does not count)."""
        server = self._runner.server if self._runner is not None else None
        handlers = server.connections if server is not None else []
        return sum(1 for handler in handlers if handler.transport is not None and not handler.transport.is_closing())

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._loopback_only], client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post(self.prefix + LOGIN_PATH, self._login)
        app.router.add_post(self.prefix + ASK_PATH, self._ask)
        app.router.add_get(self.prefix + STREAM_PATH, self._stream)
        app.on_response_prepare.append(self._date_by_own_clock)
        app.router.add_get("/_local/stats", self._get_stats)
        app.router.add_post("/_local/reset", self._post_reset)
        app.router.add_post("/_local/faults", self._post_faults)
        return app

    async def start(self) -> GPTalkServer:
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5,
            keepalive_timeout=self.keepalive_timeout,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        """Stop serving; calling it again does nothing."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> GPTalkServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the protocol ---------------------------------------------------------------------------------------------

    def _seen(self, step: str, request: web.Request, body: Any) -> None:
        self.stats[step + "s"] += 1
        if self._next_request is not None:  # streams whose body ends with the next request
            self._next_request.set_result(None)
            self._next_request = None
        transport = request.transport  # not the peer address: a new connection may reuse an old one's port
        if transport is not None and transport not in self._connections_seen:
            self._connections_seen.add(transport)
            self.stats["connections"] += 1
        self.requests.append((step, {key.lower(): value for key, value in request.headers.items()}, body))
        del self.requests[:-200]

    def _reset_if_reused(self, step: str, request: web.Request) -> bool:
        """Close the request's connection unanswered if it is a reused one and ``reset_reused`` names ``step``."""
        transport = request.transport
        if step not in self.faults.reset_reused or transport is None or transport not in self._connections_seen:
            return False
        self.faults.reset_reused.remove(step)
        self.stats["resets"] += 1
        transport.abort()
        return True

    async def _receive(self, step: str, request: web.Request) -> tuple[dict[str, Any], str | None, web.Response | None]:
        """A JSON request counted for ``step``, the fault mode picked for it, and the answer that fault makes."""
        body = await request.json()
        if self._reset_if_reused(step, request):
            return body, None, web.Response()  # never sent: the connection is gone
        self._seen(step, request, body)
        mode = self.faults.pick(step)
        if mode is None:
            return body, None, None
        self.stats["faults"] += 1
        return body, mode, faults.answer(mode, request)

    def _echo_secrets(self, fingerprint: str | None) -> web.Response:
        """A 500 that quotes a fresh working token, which the client gets nowhere else, and ``fingerprint``."""
        fresh = self._issue()
        self._tokens[fresh] = [self.now() + self.token_ttl, 0]
        return web.json_response({"code": 500, "msg": f"internal error for fingerprint {fingerprint}",
                                  "data": {"token": fresh, "fingerprint": fingerprint}}, status=500)

    def _issue(self) -> str:
        token = secrets.token_hex(16)
        self.issued.append(token)
        return token

    async def _login(self, request: web.Request) -> web.StreamResponse:
        body, mode, fault = await self._receive("login", request)
        if fault is not None:
            return fault
        if mode == "echo-secrets":
            return self._echo_secrets(body.get("fingerprint"))
        if mode == "quote-fingerprint":
            return web.json_response({"code": 10001, "msg": f"fingerprint {body.get('fingerprint')} is banned",
                                      "data": None})
        if self.faults.login_delay:
            await asyncio.sleep(self.faults.login_delay)
        if not FINGERPRINT.fullmatch(str(body.get("fingerprint"))) or body.get("platform") != "fingerprint":
            return web.json_response({"code": 400, "msg": "bad login request", "data": None}, status=400)
        token = self._issue()
        expires_at = self.now() + self.token_ttl
        self._tokens[token] = [expires_at, 0]
        self._fingerprints[token] = self._last_fingerprint = str(body.get("fingerprint"))
        data: dict[str, Any] = {"token": token, "expires_at": faults.expires_at_field(self.faults.expires_at, expires_at)}
        if mode == "no-expiry":
            del data["expires_at"]
        elif mode == "bad-expiry":
            data["expires_at"] = "soon"
        return web.json_response({"code": 0, "msg": "ok", "data": data})

    async def _ask(self, request: web.Request) -> web.StreamResponse:
        body, mode, fault = await self._receive("ask", request)
        if fault is not None:
            return fault
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if mode == "echo-secrets":
            return self._echo_secrets(self._fingerprints.get(token))
        state = self._tokens.get(token)
        if state is None or state[0] <= self.now() or state[1] >= self.max_asks:
            self.stats["rejected"] += 1
            return web.json_response({"code": 401, "msg": "token invalid or used up", "data": None}, status=401)
        state[1] += 1
        if mode == "count-drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        self.prompts.append(body["content"])
        stream_token = self._issue()
        self._streams[stream_token] = (body["content"], body.get("model", ""))
        return web.json_response({"code": 0, "msg": "ok", "data": {"token": stream_token}})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._stream_reply(request)
        except ConnectionError:  # the client hung up mid-reply (a chat it stopped): nothing to report
            self.stats["streams_ended_by_client"] += 1
            return web.Response()

    async def _stream_reply(self, request: web.Request) -> web.StreamResponse:
        if self._reset_if_reused("stream", request):
            return web.Response()
        self._seen("stream", request, dict(request.query))
        mode = self.faults.pick("stream")
        if mode == "redirect-loop":  # to itself, stream token and all, before the token is spent
            return faults.answer(mode, request) or web.Response()
        job = self._streams.pop(request.query.get("token", ""), None)
        if job is None or mode == "500":
            self.stats["faults" if job else "bad_streams"] += 1
            return web.json_response({"code": 404, "msg": "unknown stream token", "data": None}, status=500 if job else 404)
        if mode is not None:
            self.stats["faults"] += 1
        if mode == "echo-secrets":
            return self._echo_secrets(self._last_fingerprint)
        if mode == "envelope":
            return web.json_response({"code": 10010, "msg": "the stream token has expired", "data": None})
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await response.prepare(request)
        if mode == "bom":
            await response.write(b"\xef\xbb\xbf")
        if self.faults.first_event_delay:
            await asyncio.sleep(self.faults.first_event_delay)
        self.first_event_at = time.time()  # benchmarks compare it with when the client saw its first delta
        reply = self.reply(job[0])
        pieces = [reply[i : i + self.chunk_chars] for i in range(0, len(reply), self.chunk_chars)]
        middle = len(pieces) // 2
        for index in range(len(pieces)):
            content = reply[: (index + 1) * self.chunk_chars]
            if index == middle and mode in ("cut", "stall", "bad-json", "non-string", "rewrite", "deep", "endless-line",
                                            "endless-event"):
                await faults.break_stream(mode, request, response, content, self._event, self._closing)
                return response
            if self.before_event is not None:
                await self.before_event(index)
            event = self._event(content, noisy=mode == "noise")
            await response.write(event.replace(b"\n", b"\r") if mode == "cr" else event)
        if mode == "no-done":
            await response.write_eof()
        elif mode in ("linger", "flood"):
            await response.write(b"data: [DONE]\n\n" + (faults.FLOOD if mode == "flood" else b""))
            if await faults.linger(response, self._closing):
                self.stats["lingers_ended_by_client"] += 1
        else:  # [DONE] and the body's end in one write, unless a tail is asked for
            done = {"noise": b"data: [DONE]\r\n\r\n", "cr": b"data: [DONE]\r\r"}.get(mode or "", b"data: [DONE]\n\n")
            try:
                if self.faults.tail_after_done or self.faults.tail_until_next_request:
                    await response.write(done)
                    done = b""
                    await self._tail()
                await response.write_eof(done)
            except ConnectionError:
                return response  # the client hung up before the body's end
            self.stats["bodies_ended"] += 1
        return response

    async def _tail(self) -> None:
        """Wait as the faults say between ``data: [DONE]`` and the end of the body."""
        if self.faults.tail_after_done:
            await asyncio.sleep(self.faults.tail_after_done)
        if self.faults.tail_until_next_request:
            if self._next_request is None:
                self._next_request = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._next_request], timeout=10)

    async def _date_by_own_clock(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.faults.clock_offset:
            response.headers["Date"] = email.utils.formatdate(self.now(), usegmt=True)

    @staticmethod
    def _event(content: str, noisy: bool = False) -> bytes:
        data = json.dumps({"content": content}, ensure_ascii=False).encode()
        if noisy:
            return b": keep-alive\r\nevent: message\r\nid: 7\r\nretry: 1000\r\ndata: " + data + b"\r\n\r\n"
        return b"data: " + data + b"\n\n"

    # -- control, for a server in another process, from this machine only ------------------------------------------

    @web.middleware
    async def _loopback_only(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                             ) -> web.StreamResponse:
        if request.path.startswith("/_local/") and not _is_loopback(request.remote):
            raise web.HTTPForbidden(text="the /_local/ control endpoints answer loopback clients only")
        return await handler(request)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {**self.stats, "first_event_at": self.first_event_at, "open_connections": self.open_connections})

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})

    async def _post_faults(self, request: web.Request) -> web.Response:
        self.faults = Faults(**await request.json())
        return web.json_response(asdict(self.faults))


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class ServerThread:
    """A ``GPTalkServer`` running on its own loop in a daemon thread, for sync code: ``with ServerThread() as s``."""

    def __init__(self, **options: Any) -> None:
        self.server = GPTalkServer(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gptalk-server", daemon=True)

    def __enter__(self) -> GPTalkServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=10)
        return self.server

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


    async def _close(self) -> None:
        """Close the server, and end what its handlers still do (a stream that lingers, a tail): a loop closed with
        tasks pending would have them reported as destroyed when they are freed."""
        await self.server.close()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)


async def serve_forever(port: int, host: str = "127.0.0.1", on_ready: Callable[[str], None] = print) -> None:
    """Run a server until cancelled (``g4f-gptalk serve``)."""
    async with GPTalkServer(port, host=host) as server:
        on_ready(server.url)
        await asyncio.Event().wait()
