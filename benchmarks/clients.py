"""The two reference clients the provider is measured against, on the same local GPTalk server.

``RawClient`` is the wire minimum: one pooled aiohttp session, a login every 5 asks, no framework, no checks; it
reads each stream's body to its end, as a simple correct client does, so that its connection is kept.
``SeedClient`` is the straightforward design GPTalk providers started from: a new ClientSession per call, the
token on the class, no lock (so concurrent chats may log in more often than needed).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator

from aiohttp import ClientSession
from g4f.Provider.helper import format_prompt

from g4f_gptalk.protocol.arguments import origin_of
from g4f_gptalk.protocol.chat import BROWSER_HEADERS, USER_AGENT

# The same browser headers the provider sends: they are part of the protocol, so part of the wire minimum.
HEADERS = BROWSER_HEADERS


def request_headers(url: str, token: str | None = None) -> dict[str, str]:
    """What gptalk.net's web client adds to each request: also part of the protocol."""
    headers = {"origin": origin_of(url), "referer": url + "/", "x-auth-timestamp": str(int(time.time()))}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return headers


def ask_body(messages: list[dict[str, str]], model: str) -> dict[str, object]:
    return {"content": format_prompt(messages), "accept": "stream", "from": 1, "model": model, "is_mobile": 0,
            "user_agent": USER_AGENT, "is_open_ctx": 0, "prompt": "", "roid": 111, "temperature": 0,
            "ctx_msg_count": 3, "created_at": int(time.time())}


class RawClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session: ClientSession | None = None
        self.token: str | None = None
        self.asks = 0
        self.login_lock = asyncio.Lock()  # concurrent chats share one login, as in the provider

    async def chat(self, messages: list[dict[str, str]], model: str = "gpt-3.5-turbo") -> AsyncIterator[str]:
        if self.session is None:
            self.session = ClientSession(headers=HEADERS)
        if self.token is None or self.asks == 5:
            async with self.login_lock:
                if self.token is None or self.asks == 5:
                    async with self.session.post(f"{self.url}/api/chatgpt/user/login", json={
                            "fingerprint": secrets.token_hex(16), "platform": "fingerprint"},
                            headers=request_headers(self.url)) as r:
                        self.token = (await r.json())["data"]["token"]
                    self.asks = 0
        self.asks += 1
        token = self.token
        async with self.session.post(f"{self.url}/api/chatgpt/chatapi/text", json=ask_body(messages, model),
                                     headers=request_headers(self.url, token)) as r:
            stream_token = (await r.json())["data"]["token"]
        async with self.session.get(f"{self.url}/api/chatgpt/chatapi/stream", params={"token": stream_token},
                                    headers=request_headers(self.url)) as r:
            sent, partial, done = 0, b"", False
            async for chunk in r.content.iter_any():  # to the body's end, so that the connection is kept
                if done:
                    continue
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    if line.startswith(b"data: "):
                        if line == b"data: [DONE]":
                            done = True
                            break
                        content = json.loads(line[6:])["content"]
                        yield content[sent:]
                        sent = len(content)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


class SeedClient:
    url = ""
    _auth: dict[str, str] | None = None
    used_times = 0

    @classmethod
    async def chat(cls, messages: list[dict[str, str]], model: str = "gpt-3.5-turbo") -> AsyncIterator[str]:
        timestamp = int(time.time())
        async with ClientSession(headers=HEADERS) as session:
            if not cls._auth or int(cls._auth["expires_at"]) < timestamp or cls.used_times == 5:
                data = {"fingerprint": secrets.token_hex(16), "platform": "fingerprint"}
                async with session.post(f"{cls.url}/api/chatgpt/user/login", json=data,
                                        headers=request_headers(cls.url)) as response:
                    response.raise_for_status()
                    cls._auth = (await response.json())["data"]
                cls.used_times = 0
            async with session.post(f"{cls.url}/api/chatgpt/chatapi/text", json=ask_body(messages, model),
                                    headers=request_headers(cls.url, cls._auth["token"])) as response:
                response.raise_for_status()
                token = (await response.json())["data"]["token"]
                cls.used_times += 1
            last_message = ""
            async with session.get(f"{cls.url}/api/chatgpt/chatapi/stream", params={"token": token},
                                   headers=request_headers(cls.url)) as response:
                response.raise_for_status()
                async for line in response.content:
                    if line.startswith(b"data: "):
                        if line.startswith(b"data: [DONE]"):
                            break
                        message = json.loads(line[6:-1])["content"]
                        yield message[len(last_message):]
                        last_message = message
