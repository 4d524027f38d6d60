"""One chat with GPTalk: its login, ask and stream requests, and the flow that joins them, run on the engine.

A chat is three requests: a login (skipped while the cached token has asks left; see ``auth``), an ask that
returns a stream token, and an SSE stream of the reply (``sse``). Every chat runs on the engine's loop
(``runtime.engine``), whoever calls, and its requests share the engine's pooled sessions (``runtime.pool``).
``provider`` imports this module at the first chat, so that g4f's start-up does not pay for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import aiohttp
from g4f import debug
from g4f.errors import ResponseError
from g4f.typing import Messages

from ..compat import ProviderInfo, log
from ..redaction import remember, remember_credentials, scrub
from ..runtime import pool
from ..runtime.engine import engine
from . import arguments, auth, errors, sse

R = TypeVar("R")
HEALTH_TIMEOUT = 15.0
"""Seconds ``health`` waits for the service's login answer."""
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/117.0.0.0 Safari/537.36"
)
# What gptalk.net's web client sends with every API call: the pooled sessions' default headers. Origin, referer and
# timestamp are added per request.
BROWSER_HEADERS = {
    "accept": "*/*",
    "accept-language": "en-US,en;q=0.9",
    "content-type": "application/json",
    "sec-ch-ua": '"Google Chrome";v="117", "Not;A=Brand";v="8", "Chromium";v="117"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Linux"',
    "sec-fetch-dest": "empty",
    "sec-fetch-mode": "cors",
    "sec-fetch-site": "same-origin",
    "user-agent": USER_AGENT,
    "x-auth-appid": "2229",
    "x-auth-openid": "",
    "x-auth-platform": "",
}


def ask_payload(prompt: str, model: str, temperature: float = 0) -> dict[str, Any]:
    """The ask's body, as gptalk.net's web client sends it (``created_at`` is stamped when it is sent)."""
    return {
        "content": prompt,
        "accept": "stream",
        "from": 1,
        "model": model,
        "is_mobile": 0,
        "user_agent": USER_AGENT,
        "is_open_ctx": 0,
        "prompt": "",
        "roid": 111,
        "temperature": temperature,
        "ctx_msg_count": 3,
        "created_at": int(time.time()),
    }


def relayed(provider: Any, model: str, messages: Messages, options: dict[str, Any]) -> AsyncIterator[str]:
    """The chat's pieces for an async caller in any loop (see ``converse``)."""
    return engine().relay(converse(provider, model, messages, **options))


def iterated(provider: Any, model: str, messages: Messages, stream: bool, options: dict[str, Any]) -> Iterator[Any]:
    """The chat's pieces for a sync caller in any thread; g4f's sync ``Client`` (which passes ``provider=``) first
    gets a ``ProviderInfo`` naming GPTalk and the model, which it takes in for its answer."""
    chat: AsyncIterator[Any] = converse(provider, model, messages, **options)
    if ProviderInfo is not None and "provider" in options:
        named = model if model in provider.models else arguments.model_of(model, "").removeprefix(f"{provider.label}:")
        chat = _after(ProviderInfo(**provider.get_dict(), model=named or provider.default_model), chat)
    return engine().iterate(chat, stream)


async def _after(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


async def converse(provider: Any, model: str, messages: Messages, /, proxy: str | None = None,
                   timeout: float | None = None, stream_timeout: float | None = None, temperature: float | None = None,
                   connect_timeout: float | None = None, **kwargs: Any) -> AsyncIterator[str]:
    """GPTalk's reply to ``messages``, one new piece of text at a time; on the engine's loop."""
    prompt = arguments.prompt_of(messages)
    heat = arguments.temperature_of(temperature)
    if kwargs and debug.logging and (ignored := arguments.unused(kwargs)):
        log(f"GPTalk: ignored {', '.join(ignored)}: the service has no such setting")
    if model not in provider.models:
        model = _model(provider, model)
    else:  # a listed model needs no check (g4f's get_model returns it as it is); what get_model records is recorded
        provider.last_model = model  # g4f 0.4's AsyncClient names the answer's model from it
    total = provider.timeout if timeout is None else arguments.seconds("timeout", timeout, provider.timeout)
    connections = pool_of_engine()
    if connections.draining:
        # One turn of the loop takes in what has arrived meanwhile: an earlier stream whose body has ended gives
        # its connection back before this chat picks one.
        await asyncio.sleep(0)
    call = Call(service_url(provider), connections, proxy, total,
                total if stream_timeout is None else arguments.seconds("stream_timeout", stream_timeout, total),
                arguments.seconds("connect_timeout", connect_timeout, provider.connect_timeout))
    tokens = auth.cache_for(call.base_url)
    stream_token = await call.ask(tokens, ask_payload(prompt, model, heat))
    if provider.login_ahead:
        tokens.after_ask(lambda: Call(call.base_url, connections, proxy, provider.timeout, provider.timeout,
                                      provider.connect_timeout).login(), provider.timeout)
    # The stream is read here, not in a generator of its own, so that each event costs one coroutine hop.
    reply = sse.ReplyText()
    response = await call.stream(stream_token)
    chunk = b""
    try:
        async for chunk in response.content.iter_chunked(pool.STREAM_READ):
            for delta in reply.deltas(chunk):
                yield delta
            if reply.done:
                break  # the reply is complete: what may follow [DONE] is drained in the background
    except errors.GPTalkTimeoutError:
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise call.stream_failure(exc, reply) from exc
    finally:
        if reply.done:
            connections.finish(response, sse.read_after_done(chunk))
        else:  # pooled if the body has ended, else closed with its connection (aiohttp's rule on release)
            response.release()
    for delta in reply.end():  # nothing once [DONE] came; else the last text, then the error
        yield delta


def pool_of_engine() -> pool.Pool:
    return engine().pool


def service_url(provider: Any) -> str:
    """The service a call of ``provider`` talks to (``GPTalk.configured_url``), checked and without a trailing
    slash."""
    return arguments.checked_url(*provider.configured_url())


def _model(provider: Any, model: Any) -> str:
    """``model`` as the service knows it: without a ``GPTalk:`` prefix, through g4f's ``get_model`` (whose rule for
    a model the provider does not list is that release's own: g4f 8 sends it as given)."""
    name = arguments.model_of(model, provider.default_model).removeprefix(f"{provider.label}:")
    chosen: str = provider.get_model(name or provider.default_model)
    if chosen not in provider.models and debug.logging:
        log(f"GPTalk: model {chosen!r} is not one the service lists ({', '.join(provider.models)}); sent as given")
    return chosen


async def health(provider: Any) -> dict[str, Any]:
    """Whether the service answers, as g4f's ``probe_health`` reports it (see ``GPTalk.get_health``)."""
    url = provider.url
    try:
        url = service_url(provider)
        call = Call(url, pool_of_engine(), None, HEALTH_TIMEOUT, HEALTH_TIMEOUT, provider.connect_timeout)
        token = await call.login()
    except errors.G4FError as exc:  # the same words a chat's error would have, scrubbed as at the engine's exit
        return {"url": url, "ok": False, "status": getattr(exc, "status", 0), "error": scrub(str(exc))}
    auth.cache_for(call.base_url).offer(token)
    return {"url": url, "ok": True, "status": 200}


class Call:
    """The requests of one chat, all sharing the engine's pooled session, its proxy and its time bounds."""

    def __init__(self, base_url: str, connections: pool.Pool, proxy: str | None, total: float, stall: float,
                 connect: float = 10.0) -> None:
        http_proxy, socks_proxy = arguments.split_proxy(proxy) if proxy else (None, None)
        self.socks = arguments.proxy_address(socks_proxy) if socks_proxy else None
        """The SOCKS proxy's host and port, for its failures, which are not aiohttp's errors."""
        self.base_url = base_url
        self.origin = arguments.origin_of(base_url)
        self.session = connections.session(socks_proxy, BROWSER_HEADERS)
        self.proxy = http_proxy
        self.deadline = time.monotonic() + total
        self.total, self.stall, self.connect = total, stall, connect
        if proxy:
            remember_credentials(*arguments.proxy_credentials(proxy))

    def _headers(self, token: auth.Token | None = None) -> dict[str, str]:
        headers = {
            "origin": self.origin,
            "referer": self.base_url + "/",
            "x-auth-timestamp": str(int(time.time())),
        }
        if token is not None:
            headers["authorization"] = f"Bearer {token.value}"
        return headers

    def _send(self, step: str, method: str, path: str, **options: Any) -> Awaitable[aiohttp.ClientResponse]:
        """One request's response, its headers read; the caller releases it (``async with response``). The request
        gets what is left of the call's time, and the stall bound if it is the shorter."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise errors.GPTalkTimeoutError(f"GPTalk {step}: the call's timeout ran out before this step")
        # A stall bound no shorter than what is left adds nothing but a timer rescheduled at every read.
        timeout = aiohttp.ClientTimeout(total=remaining, sock_read=self.stall if self.stall < remaining else None,
                                        sock_connect=self.connect if self.connect < remaining else None)
        return pool.request(self.session, method, self.base_url + path, proxy=self.proxy, timeout=timeout, **options)

    async def _sent(self, step: str, request: Awaitable[R]) -> R:
        """What ``request`` (a request, or the reading of its answer) gives, or the g4f error its failure is for
        the caller."""
        try:
            return await request
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(exc, errors.GPTalkTimeoutError):  # ours, from _send: already says what ran out
                raise
            raise self._failure(step, exc) from exc
        except Exception as exc:
            if self.socks is None or isinstance(exc, errors.G4FError):
                raise
            raise ResponseError(f"GPTalk {step}: the proxy {self.socks} failed: {exc}") from exc

    def _failure(self, step: str, exc: Exception) -> errors.G4FError:
        """What a failed request, or the reading of its answer, is for the caller."""
        if isinstance(exc, TimeoutError):
            return errors.GPTalkTimeoutError(f"GPTalk {step}: {self._ran_out(exc)}")
        if isinstance(exc, aiohttp.TooManyRedirects):
            return ResponseError(f"GPTalk {step}: the service redirected {len(exc.history)} times in a row; "
                                 f"a redirect loop at {exc.request_info.real_url}?")
        if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(exc, aiohttp.ClientSSLError) \
                and (errno := exc.os_error.errno) is not None:
            # a failed name lookup has words of its own; asyncio's words for a failed connect repeat the address
            reason = exc.os_error.strerror if isinstance(exc.os_error, socket.gaierror) else os.strerror(errno)
            return ResponseError(f"GPTalk {step}: cannot connect to {self._peer(exc)}: {reason}")
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return ResponseError(f"GPTalk {step}: {self.base_url} closed the connection without an answer")
        if type(exc) is aiohttp.ClientResponseError:  # aiohttp's parser refused the answer: not a status error
            said = exc.message.splitlines()[0] if exc.message else "unreadable"
            return ResponseError(f"GPTalk {step}: the answer from {self.base_url} is not valid HTTP ({said})")
        return ResponseError(f"GPTalk {step}: request to {self.base_url} failed: {exc}")

    def _peer(self, exc: aiohttp.ClientConnectorError) -> str:
        """What a failed connection was to: the service, or the proxy in front of it (host and port only)."""
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return f"the proxy {exc.host}:{exc.port}"
        return self.base_url

    def _ran_out(self, exc: TimeoutError) -> str:
        """Which bound a timeout was, by aiohttp's type for it: connecting, the wait for data, or the whole call."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return f"{self.base_url} could not be reached within {self.connect:g} s (connect_timeout)"
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return f"no data for {self.stall:g} s (stream_timeout)"
        return f"the call's timeout ran out ({self.total:g} s)"

    async def _post(self, step: str, path: str, payload: dict[str, Any], token: auth.Token | None = None,
                    resend: bool = True) -> tuple[dict[str, Any], str | None]:
        """POST ``payload``; the ``data`` of the JSON answer and the answer's ``Date`` header, or the matching g4f
        error (or, with ``resend=False``, ``pool.StaleConnectionError``)."""
        response = await self._sent(step, self._send(step, "POST", path, body=json.dumps(payload).encode(),
                                                      headers=self._headers(token), resend=resend))
        async with response:
            status, headers = response.status, response.headers
            body = await self._sent(step, response.read())
        return errors.answer_data(step, status, headers, body, self.base_url), headers.get("Date")

    async def login(self) -> auth.Token:
        fingerprint = secrets.token_hex(16)
        remember(fingerprint)
        data, date = await self._post("login", "/api/chatgpt/user/login",
                                      {"fingerprint": fingerprint, "platform": "fingerprint"})
        token = auth.Token(errors.token_of("login", data), auth.expiry_of(data, date))
        if debug.logging:
            log(f"GPTalk login: new token, valid until {time.strftime('%H:%M:%S', time.localtime(token.expires_at))}")
        return token

    async def ask(self, tokens: auth.TokenCache, payload: dict[str, Any]) -> str:
        """The stream token for the ask ``payload``, asked with a token from ``tokens``; a rejected token is replaced
        once.

        An ask that a reused connection lost may have been read and counted by the server: it stays counted against
        its token, and the ask goes again, with the token's next ask or a new token, so that no token is sent a
        sixth ask."""
        rejections = lost = 0
        while True:
            token = tokens.take()
            if token is None:
                try:
                    token = await tokens.reserve(self.login, self.deadline - time.monotonic())
                except errors.GPTalkTimeoutError:  # this chat's own login
                    raise
                except TimeoutError:
                    raise errors.GPTalkTimeoutError(
                        "GPTalk login: the call's timeout ran out while another chat was logging in") from None
            try:
                payload["created_at"] = int(time.time())
                data, _ = await self._post("ask", "/api/chatgpt/chatapi/text", payload, token, resend=False)
                stream_token = errors.token_of("ask", data)
            except pool.StaleConnectionError as exc:
                lost += 1
                if lost > 1:  # one re-send, as for every request (see pool.request)
                    raise ResponseError(f"GPTalk ask: request to {self.base_url} failed: {exc}") from exc
                log(f"GPTalk ask: a pooled connection failed before the answer ({exc}); the ask counts as used; "
                    f"asking again")
                continue
            except errors.TokenRejectedError:
                tokens.drop(token)
                rejections += 1
                if rejections == 2:
                    raise
                log("GPTalk ask: the service rejected the token; logging in again")
                continue
            return stream_token

    async def stream(self, stream_token: str) -> aiohttp.ClientResponse:
        """The reply stream's response, its status checked; the caller reads and releases it, and turns what fails
        meanwhile into a g4f error with ``stream_failure``."""
        response = await self._sent("stream", self._send("stream", "GET", "/api/chatgpt/chatapi/stream",
                                                         params={"token": stream_token}, headers=self._headers(),
                                                         read_bufsize=pool.STREAM_BUFFER))
        if response.status != 200:
            async with response:
                body = await self._sent("stream", response.read())
                errors.answer_data("stream", response.status, response.headers, body, self.base_url)
        return response

    def stream_failure(self, exc: TimeoutError | aiohttp.ClientError, reply: sse.ReplyText) -> errors.G4FError:
        """What a stall or a broken connection while reading the stream is for the caller: a g4f error saying how
        much of ``reply`` had arrived."""
        if isinstance(exc, TimeoutError):
            return errors.GPTalkTimeoutError(
                f"GPTalk stream: {self._ran_out(exc)}; the reply is incomplete after {len(reply.text)} characters")
        if reply.text or isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
            return reply.incomplete(f"the connection failed ({exc})")
        return self._failure("stream", exc)

