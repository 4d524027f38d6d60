"""Pooled connections: stale ones are retried, lingering streams are not waited for, dead loops keep nothing."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import warnings

import pytest
from g4f.errors import ResponseError

from g4f_gptalk import GPTalk
from g4f_gptalk.protocol.errors import GPTalkTimeoutError
from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import HELLO, chat, chat_async, partial_chat

REPLY = echo_reply("Hello")


@pytest.mark.parametrize("step", ["login", "ask", "stream"])
def test_a_request_on_a_pooled_connection_the_server_closed_is_sent_once_more_on_a_new_one(server, step):
    async def warm_then_chat() -> str:
        await chat_async()  # one pooled connection
        GPTalk.forget_tokens()  # the next chat logs in again, on the pooled connection
        server.faults = Faults(reset_reused=[step])
        return "".join(await chat_async())

    assert asyncio.run(warm_then_chat()) == REPLY
    assert server.stats["resets"] == 1 and server.stats["connections"] == 2
    counted = {"login": ("logins", 2), "ask": ("asks", 2), "stream": ("streams", 2)}[step]
    assert server.stats[counted[0]] == counted[1]  # the server saw the retried request once, not twice


def test_several_stale_connections_in_a_row_are_each_retried(server):
    async def chats() -> list[str]:
        replies = ["".join(await chat_async()) for _ in range(2)]
        server.faults = Faults(reset_reused=["ask", "stream"])
        return [*replies, "".join(await chat_async())]

    assert asyncio.run(chats()) == [REPLY] * 3
    assert server.stats["resets"] == 2 and server.stats["asks"] == 3


def test_a_request_that_fails_on_a_new_connection_is_not_sent_again(server):
    server.faults = Faults(login=["drop"])  # the first request of a new loop: a new connection
    text, error = asyncio.run(partial_chat())
    assert isinstance(error, ResponseError) and text == ""
    assert str(error).startswith("GPTalk login: ") and str(error).endswith("without an answer")
    assert server.stats["logins"] == 1 and server.stats["connections"] == 1


def test_the_reply_is_complete_at_done_though_the_server_keeps_the_stream_open(server):
    server.faults = Faults(stream=["linger"])
    started = time.monotonic()
    assert "".join(chat(timeout=30, stream_timeout=2)) == REPLY  # before the fix: a timeout after 2 s
    assert time.monotonic() - started < 2
    server.faults = Faults()
    assert "".join(chat()) == REPLY
    # the lingering stream's connection was closed, not pooled with its unread comments
    assert server.stats["connections"] == 2


def test_waiting_for_another_chats_login_ends_with_the_waiters_own_timeout(server):
    server.faults = Faults(login_delay=2)

    async def two_chats() -> tuple[str, BaseException | None, float, str]:
        slow = asyncio.ensure_future(chat_async(timeout=30))
        deadline = time.monotonic() + 10
        while server.stats["logins"] == 0 and time.monotonic() < deadline:  # the first chat's login is under way
            await asyncio.sleep(0.01)
        assert server.stats["logins"] == 1, "the first chat did not log in"
        started = time.monotonic()
        _text, error = await partial_chat(HELLO, timeout=0.5)
        waited = time.monotonic() - started
        first = "".join(await slow)
        third = "".join(await chat_async())  # the queue of waiters is sound after a waiter gave up
        return first, error, waited, third

    first, error, waited, third = asyncio.run(two_chats())
    assert isinstance(error, GPTalkTimeoutError)
    assert str(error) == "GPTalk login: the call's timeout ran out while another chat was logging in"
    assert waited < 1.8  # a bound, not a speed claim: the login it waited for took 2 s
    assert first == third == REPLY and server.stats["logins"] == 1


def open_descriptor_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("shutdown_asyncgens", [True, False])
def test_loops_closed_one_after_another_share_one_connection_and_keep_no_descriptors(server, shutdown_asyncgens):
    counts = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # nothing of ours lives in the callers' loops
        for n in range(300):
            loop = asyncio.new_event_loop()
            loop.run_until_complete(chat_async())
            if shutdown_asyncgens:
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            if n % 50 == 49:
                counts.append(open_descriptor_count())
        del loop
        gc.collect()
    assert max(counts) - min(counts) < 10, counts
    assert server.stats["asks"] == 300 and server.stats["connections"] == 1  # before the engine: 300
