"""The benchmarks' reference clients speak GPTalk's whole protocol, as the provider does: the benchmarks compare
like with like, byte for byte but for what is random or timed."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from g4f_gptalk import GPTalk
from g4f_gptalk.testing.server import echo_reply

from .conftest import HELLO, chat

spec = importlib.util.spec_from_file_location("benchmark_clients", Path(__file__).parent.parent / "benchmarks" / "clients.py")
clients = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
spec.loader.exec_module(clients)  # type: ignore[union-attr]
RawClient, SeedClient = clients.RawClient, clients.SeedClient

VARYING = {"x-auth-timestamp", "authorization", "fingerprint", "created_at", "token"}
"""What differs between any two requests of the same client: timestamps, and tokens and fingerprints."""


def wire(requests):
    return [(step, {name: value for name, value in headers.items() if name not in VARYING},
             {name: value for name, value in body.items() if name not in VARYING}) for step, headers, body in requests]


@pytest.mark.parametrize("client", ["raw", "seed"])
def test_a_reference_client_sends_what_gptalk_sends(server, client):
    chat(HELLO)
    gptalk = wire(server.requests)
    del server.requests[:]
    GPTalk.forget_tokens()

    async def reference() -> str:
        if client == "raw":
            raw = RawClient(server.url)
            try:
                return "".join([delta async for delta in raw.chat(HELLO)])
            finally:
                await raw.close()
        SeedClient.url, SeedClient._auth, SeedClient.used_times = server.url, None, 0
        return "".join([delta async for delta in SeedClient.chat(HELLO)])

    assert asyncio.run(reference()) == echo_reply("Hello")
    assert [step for step, _, _ in gptalk] == ["login", "ask", "stream"]
    assert wire(server.requests) == gptalk
