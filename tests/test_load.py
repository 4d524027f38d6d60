"""Bounded load on the loopback server: 500 concurrent chats, with and without injected faults."""

from __future__ import annotations

import asyncio
import collections
import math
import time

from g4f_gptalk.protocol.errors import G4FError
from g4f_gptalk.runtime.engine import close_connections
from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import partial_chat

CHATS = 500
BOUND = 120.0  # seconds for the whole run; it stops by itself


async def run_chats(count: int) -> list[tuple[str, str, BaseException | None]]:
    async def one(n: int) -> tuple[str, str, BaseException | None]:
        prompt = f"chat {n}"
        text, error = await partial_chat([{"role": "user", "content": prompt}], timeout=60)
        return prompt, text, error

    try:
        return await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(count))), BOUND)
    finally:
        await asyncio.to_thread(close_connections)


def wait_until_closed(server, seconds: float = 5.0) -> int:
    deadline = time.monotonic() + seconds
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.open_connections


def test_500_concurrent_chats_get_exact_replies_with_ceil_n_over_5_logins(server, capsys):
    results = asyncio.run(run_chats(CHATS))
    assert [error for _, _, error in results if error] == []
    assert all(text == echo_reply(prompt) for prompt, text, _ in results)
    assert server.stats["logins"] == math.ceil(CHATS / 5) and server.stats["rejected"] == 0
    assert wait_until_closed(server) == 0
    with capsys.disabled():
        print(f"\n  load: {CHATS} chats, {server.stats['logins']} logins, {server.stats['connections']} connections, "
              f"0 errors, 0 rejected")


def test_500_concurrent_chats_with_10_percent_faults_end_exact_or_with_a_clear_error(server, capsys):
    server.faults = Faults(ask=["429", "500"], stream=["cut"], rate=0.05, seed=7)
    results = asyncio.run(run_chats(CHATS))
    outcomes: collections.Counter[str] = collections.Counter()
    for prompt, text, error in results:
        if error is None:
            assert text == echo_reply(prompt)
            outcomes["exact"] += 1
        else:
            assert isinstance(error, G4FError) and str(error).startswith("GPTalk ")
            assert echo_reply(prompt).startswith(text)  # what arrived before the fault is true text
            outcomes[type(error).__name__] += 1
    # each injected fault ended exactly one chat, and only those chats: no fault was hidden, no chat failed without
    assert CHATS - outcomes["exact"] == server.stats["faults"] > 0
    assert outcomes["RateLimitError"] and outcomes["IncompleteReplyError"]
    assert server.stats["logins"] == math.ceil(CHATS / 5) and server.stats["rejected"] == 0
    assert wait_until_closed(server) == 0
    with capsys.disabled():
        print(f"\n  load with faults: {dict(outcomes)}; {server.stats['faults']} faults injected, "
              f"{server.stats['logins']} logins, none hung")
