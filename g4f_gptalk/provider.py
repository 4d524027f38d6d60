"""The GPTalk provider: gptalk.net's anonymous chat, through g4f.

One chat is three requests: a login (skipped while the cached token has asks left; see ``auth``), an ask that
returns a stream token, and an SSE stream of the reply (see ``sse``). Connections are pooled per event loop (see
``pool``), and sync callers keep their loop between calls (see ``loops``); errors are g4f's own types (see
``errors``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
from g4f import debug
from g4f.errors import ResponseError
from g4f.Provider.helper import format_prompt
from g4f.providers.base_provider import AsyncGeneratorProvider, ProviderModelMixin
from g4f.typing import AsyncResult, CreateResult, Messages
from yarl import URL

from . import loops, pool
from .auth import Token, TokenCache
from .errors import (
    GPTalkTimeoutError,
    InvalidRequestError,
    TokenRejectedError,
    envelope_data,
    excerpt,
    for_status,
    token_of,
)
from .sse import ReplyText

URL_ENV = "G4F_GPTALK_URL"
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
SOCKS_SCHEMES = frozenset(("socks4", "socks5", "socks5h"))


class GPTalk(AsyncGeneratorProvider, ProviderModelMixin):
    """gptalk.net: anonymous GPT-3.5 chat. ``G4F_GPTALK_URL``, when set, replaces ``url`` at each call."""

    label = "GPTalk"
    url = "https://gptalk.net"
    working = True
    supports_stream = True
    supports_message_history = True
    supports_system_message = True
    default_model = "gpt-3.5-turbo"
    models: ClassVar[list[str]] = [default_model]
    timeout: ClassVar[float] = 120.0
    """Seconds for a whole call unless ``timeout=`` is given."""

    _tokens: ClassVar[dict[str, TokenCache]] = {}

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        timeout: float | None = None,
        stream_timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncResult:
        """Stream GPTalk's reply to ``messages``, one new piece of text at a time.

        ``timeout`` (seconds) bounds the whole call; ``stream_timeout`` bounds the wait for each next piece of the
        stream (default: ``timeout``). ``proxy`` is an http(s) or socks URL.
        """
        prompt = prompt_of(messages)
        base_url = service_url(cls.url)
        model = model if model and model != "auto" else cls.default_model
        total = float(timeout or cls.timeout)
        deadline = time.monotonic() + total
        resources = await pool.for_running_loop()
        call = _Call(base_url, resources, proxy, deadline, float(stream_timeout or total))
        stream_token = await call.ask(cls._tokens.setdefault(base_url, TokenCache()), prompt, model)
        # The stream is read here, not in a generator of its own, so that each event costs one coroutine hop.
        reply = ReplyText()
        async with call.stream(stream_token, reply) as chunks:
            async for chunk in chunks:
                for delta in reply.deltas(chunk):
                    yield delta
                if reply.done:
                    break  # the reply is complete: what may follow [DONE] is not waited for
            for delta in reply.end():  # nothing once [DONE] came; else the last text, then the error
                yield delta

    @classmethod
    def create_completion(cls, model: str, messages: Messages, stream: bool = True, **kwargs: Any) -> CreateResult:
        """The sync form of ``create_async_generator``, which g4f's sync API calls: each piece as it arrives, on an
        event loop this thread keeps, so that sync chats share pooled connections and tokens like async ones."""
        return loops.iterate(cls.create_async_generator(model, messages, **kwargs), stream)


class _Call:
    """The requests of one chat, all sharing its loop's pooled session, its proxy and its time bounds."""

    def __init__(
        self, base_url: str, resources: pool.LoopResources, proxy: str | None, deadline: float, stall: float
    ) -> None:
        http_proxy, socks_proxy = split_proxy(proxy)
        self.base_url = base_url
        self.session = resources.session(socks_proxy, BROWSER_HEADERS)
        self.proxy = http_proxy
        self.deadline = deadline
        self.stall = stall

    def _headers(self, token: Token | None = None) -> dict[str, str]:
        headers = {
            "origin": self.base_url,
            "referer": self.base_url + "/",
            "x-auth-timestamp": str(int(time.time())),
        }
        if token is not None:
            headers["authorization"] = f"Bearer {token.value}"
        return headers

    def _timeout(self, step: str) -> aiohttp.ClientTimeout:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise GPTalkTimeoutError(f"GPTalk {step}: the call's timeout ran out before this step")
        # A stall bound no shorter than what is left adds nothing but a timer rescheduled at every read.
        return aiohttp.ClientTimeout(total=remaining, sock_read=self.stall if self.stall < remaining else None)

    async def _post(self, step: str, path: str, payload: dict[str, Any], token: Token | None = None) -> dict[str, Any]:
        """POST ``payload`` and return the ``data`` of the JSON answer, or raise the matching g4f error."""
        try:
            response = await pool.request(
                self.session,
                "POST",
                self.base_url + path,
                data=json.dumps(payload),
                headers=self._headers(token),
                proxy=self.proxy,
                timeout=self._timeout(step),
            )
            async with response:
                status, body = response.status, await response.read()
        except TimeoutError as exc:
            raise GPTalkTimeoutError(f"GPTalk {step}: no answer in time") from exc
        except aiohttp.ClientError as exc:
            raise ResponseError(f"GPTalk {step}: request to {self.base_url} failed: {exc}") from exc
        if not 200 <= status < 300:
            raise for_status(step, status, body)
        try:
            answer = json.loads(body)
        except ValueError:
            raise ResponseError(f"GPTalk {step}: expected JSON, got: {excerpt(body)}") from None
        return envelope_data(step, answer, body)

    async def login(self) -> Token:
        payload = {"fingerprint": secrets.token_hex(16), "platform": "fingerprint"}
        data = await self._post("login", "/api/chatgpt/user/login", payload)
        token = Token(token_of("login", data), expires_at(data))
        if debug.logging:
            debug.log(f"GPTalk login: new token, valid until {time.strftime('%H:%M:%S', time.localtime(token.expires_at))}")
        return token

    async def ask(self, tokens: TokenCache, prompt: str, model: str) -> str:
        """The stream token for ``prompt``, asked with a token from ``tokens``; a rejected token is replaced once."""
        rejections = 0
        while True:
            try:
                token = await tokens.reserve(self.login, self.deadline - time.monotonic())
            except TimeoutError:
                raise GPTalkTimeoutError(
                    "GPTalk login: the call's timeout ran out while another chat was logging in") from None
            try:
                return await self._ask_with(token, prompt, model)
            except TokenRejectedError:
                tokens.drop(token)
                rejections += 1
                if rejections == 2:
                    raise
            debug.log("GPTalk ask: the service rejected the token; logging in again")

    async def _ask_with(self, token: Token, prompt: str, model: str) -> str:
        payload = {
            "content": prompt,
            "accept": "stream",
            "from": 1,
            "model": model,
            "is_mobile": 0,
            "user_agent": USER_AGENT,
            "is_open_ctx": 0,
            "prompt": "",
            "roid": 111,
            "temperature": 0,
            "ctx_msg_count": 3,
            "created_at": int(time.time()),
        }
        data = await self._post("ask", "/api/chatgpt/chatapi/text", payload, token)
        return token_of("ask", data)

    @contextlib.asynccontextmanager
    async def stream(self, stream_token: str, reply: ReplyText) -> AsyncIterator[AsyncIterator[bytes]]:
        """The reply stream's network chunks. Stalls and broken connections become g4f errors saying how much of
        ``reply`` had arrived. The connection goes back to the pool only if its body has ended when the caller
        stops reading; otherwise it is closed."""
        try:
            response = await pool.request(
                self.session,
                "GET",
                self.base_url + "/api/chatgpt/chatapi/stream",
                params={"token": stream_token},
                headers=self._headers(),
                proxy=self.proxy,
                timeout=self._timeout("stream"),
            )
            # Released at the end: back to the pool if the body had ended, else closed (aiohttp's own rule).
            async with response:
                if response.status != 200:
                    raise for_status("stream", response.status, await response.read())
                yield response.content.iter_any()
        except TimeoutError as exc:
            # aiohttp's timers may fire a hair early; a stall bound shorter than what was left cannot look like this
            ran_out = time.monotonic() >= self.deadline - 0.05
            cause = "the call's timeout ran out" if ran_out else f"no data for {self.stall:g}s"
            raise GPTalkTimeoutError(
                f"GPTalk stream: {cause}; the reply is incomplete after {len(reply.text)} characters"
            ) from exc
        except aiohttp.ClientError as exc:
            raise reply.incomplete(f"the connection failed ({exc})") from exc


def expires_at(data: dict[str, Any]) -> float:
    """``data.expires_at`` as Unix seconds (milliseconds and numeric strings are accepted too)."""
    value = data.get("expires_at")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ResponseError(f"GPTalk login: 'data.expires_at' is not a Unix time: {value!r}") from None
    return seconds / 1000 if seconds > 1e11 else seconds


def prompt_of(messages: Messages) -> str:
    """``format_prompt(messages)``, after checking that ``messages`` is a non-empty list of chat messages."""
    if not isinstance(messages, (list, tuple)):
        raise InvalidRequestError(f"GPTalk: messages must be a list of chat messages, not {type(messages).__name__}")
    if not messages:
        raise InvalidRequestError("GPTalk: messages is empty; send at least one message")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise InvalidRequestError(f"GPTalk: messages[{index}] must be a dict with a 'role' string and 'content'")
        content = message["content"]
        if isinstance(content, list) and not all(isinstance(part, dict) for part in content):
            raise InvalidRequestError(f"GPTalk: messages[{index}]['content'] must be text or a list of content parts")
    return format_prompt(list(messages))


def service_url(default: str) -> str:
    """The service address: ``G4F_GPTALK_URL`` if set, else ``default``; must be an http(s) URL."""
    configured = os.environ.get(URL_ENV)
    return _checked_url(configured, URL_ENV) if configured else _checked_url(default, "GPTalk.url")


@functools.lru_cache(maxsize=16)
def _checked_url(raw: str, setting: str) -> str:
    try:
        url = URL(raw)
    except (TypeError, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError(f"GPTalk: {setting}={raw!r} is not an http(s) URL such as https://gptalk.net")
    return str(url).rstrip("/")


def split_proxy(proxy: str | None) -> tuple[str | None, str | None]:
    """``proxy`` as (http proxy for each request, socks proxy for the connector); checks it is a proxy URL."""
    if not proxy:
        return None, None
    try:
        url = URL(proxy)
    except (TypeError, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https", *SOCKS_SCHEMES) or not url.host:
        shown = f" (scheme {url.scheme!r}, host {url.host!r})" if url is not None and url.absolute else ""
        raise InvalidRequestError(f"GPTalk: the proxy setting{shown} is not an http(s):// or socks5:// URL with a host")
    return (None, proxy) if url.scheme in SOCKS_SCHEMES else (proxy, None)
