"""One engine per process: every chat's requests run on one long-lived loop, whatever loop or thread calls, and a
caller's loop holds nothing of ours once its chat has ended."""

from __future__ import annotations

import asyncio
import math
import textwrap
import threading
import time
from collections.abc import Callable

import g4f
import pytest
from g4f.client import AsyncClient

from g4f_gptalk import GPTalk
from g4f_gptalk.runtime.engine import EngineThreadError
from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import chat_async, run_python
from .test_sync import wait_until


def said(n: object) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"chat {n}"}]


def create_async_under_asyncio_run(n: int) -> str:
    return asyncio.run(g4f.ChatCompletion.create_async(GPTalk.default_model, said(n), provider=GPTalk))


def async_client_under_asyncio_run(n: int) -> str:
    async def main() -> str:
        response = await AsyncClient().chat.completions.create(model="gpt-3.5-turbo", messages=said(n),
                                                                provider="GPTalk")
        return str(response.choices[0].message.content)

    return asyncio.run(main())


def async_to_sync_per_request(n: int) -> str:
    asgiref_sync = pytest.importorskip("asgiref.sync")

    async def view() -> str:  # Django's shape: an async view's chat, called from sync code
        return "".join(await chat_async(said(n)))

    return asgiref_sync.async_to_sync(view)()


def a_uvloop_per_chat(n: int) -> str:
    uvloop = pytest.importorskip("uvloop")
    return "".join(uvloop.run(chat_async(said(n))))


PATTERNS: dict[str, Callable[[int], str]] = {
    "create_async under asyncio.run": create_async_under_asyncio_run,
    "AsyncClient under asyncio.run": async_client_under_asyncio_run,
    "async_to_sync": async_to_sync_per_request,
    "a uvloop per chat": a_uvloop_per_chat,
}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_new_event_loop_per_chat_shares_one_connection_and_five_asks_per_token(server, pattern):
    assert [PATTERNS[pattern](n) for n in range(20)] == [echo_reply(f"chat {n}") for n in range(20)]
    # before the engine: 20 connections, a TCP (and TLS) handshake every chat
    assert server.stats["connections"] == 1 and server.stats["logins"] == 4 and server.stats["asks"] == 20


UVLOOP_CLOSED_WITHOUT_SHUTDOWN = textwrap.dedent("""
    import asyncio, uvloop
    from g4f_gptalk import GPTalk
    from g4f_gptalk.testing.server import echo_reply

    async def chat():
        return "".join([d async for d in GPTalk.create_async_generator("", [{"role": "user", "content": "Hi"}])])

    for _ in range(3):  # as aiohttp's pytest fixture closes its loops: no shutdown_asyncgens()
        loop = uvloop.new_event_loop()
        assert loop.run_until_complete(chat()) == echo_reply("Hi")
        loop.close()
    print("closed")
""")


def test_uvloop_loops_closed_without_shutdown_under_strict_resource_warnings_close_at_once(server):
    pytest.importorskip("uvloop")
    # before the engine, uvloop's close() hung for good: our pooled connection, in that loop, warned inside it
    out = run_python("import warnings; warnings.simplefilter('error', ResourceWarning)\n" + UVLOOP_CLOSED_WITHOUT_SHUTDOWN,
                     timeout=60)
    assert out.split() == ["closed"]
    assert server.stats["connections"] == 1


def test_a_body_that_goes_on_past_16_kib_after_done_is_closed_at_once_not_kept_draining(server):
    server.faults = Faults(stream=["flood"], times=1)  # [DONE], then 32 KiB at once, then it lingers
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    # the drain's byte bound, not its 5 s time bound, closes it
    assert wait_until(lambda: server.stats["lingers_ended_by_client"] == 1, 1.0)
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    assert server.stats["connections"] == 2


async def first_delta_then(stop: str) -> list[str]:
    """A chat that the caller stops, as ``stop`` says, once its first piece has come."""
    chat = GPTalk.create_async_generator(GPTalk.default_model, said(0), timeout=30)
    if stop == "break":
        async for piece in chat:
            return [piece]
    if stop == "aclose":
        piece = await chat.__anext__()
        await chat.aclose()
        return [piece]
    first = asyncio.get_running_loop().create_future()

    async def consume() -> None:
        async for piece in chat:
            if not first.done():
                first.set_result(piece)

    task = asyncio.ensure_future(consume())
    piece = await first
    if stop == "wait_for":
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(task, 0.1)
    else:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return [piece]


@pytest.mark.parametrize("stop", ["break", "aclose", "task.cancel", "wait_for"])
def test_a_caller_that_stops_a_chat_closes_its_stream_request_within_a_second_and_keeps_its_token(server, stop):
    server.faults = Faults(stream=["stall"], times=1)  # the first stream stops sending midway, for 60 s
    assert len(asyncio.run(first_delta_then(stop))) == 1
    stopped = time.monotonic()
    assert wait_until(lambda: server.open_connections == 0, 5.0)
    assert time.monotonic() - stopped < 1  # a bound, not a speed claim: the stall would hold it 60 s
    assert [create_async_under_asyncio_run(n) for n in range(4)] == [echo_reply(f"chat {n}") for n in range(4)]
    assert server.stats["logins"] == 1  # the stopped chat's token serves its four asks left


def test_a_sync_call_from_the_engines_own_thread_fails_at_once_with_a_g4f_error(server, monkeypatch):
    if not hasattr(g4f.debug, "log_handler"):
        pytest.skip("this g4f has no log handler")
    nested: list[tuple[BaseException, float]] = []

    def handler(*text: object, **options: object) -> None:  # g4f calls it for our debug lines, on the engine
        if "GPTalk login: new token" in " ".join(map(str, text)) and not nested:
            started = time.monotonic()
            try:
                g4f.ChatCompletion.create(GPTalk.default_model, said("nested"), provider=GPTalk)
            except Exception as exc:  # noqa: BLE001 - what it is, is the test
                nested.append((exc, time.monotonic() - started))

    monkeypatch.setattr(g4f.debug, "logging", True)
    monkeypatch.setattr(g4f.debug, "log_handler", handler)
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")  # before: the process hung here
    (error, took), = nested
    assert isinstance(error, EngineThreadError) and isinstance(error, g4f.errors.G4FError if hasattr(
        g4f.errors, "G4FError") else Exception)
    assert str(error).startswith("GPTalk: a sync call on g4f-gptalk's own thread") and took < 1


def test_four_loops_of_50_concurrent_chats_and_20_sync_chats_share_tokens(server):
    results: dict[str, list[str]] = {}

    def loop_of_chats(k: int) -> None:
        async def chats() -> list[str]:
            return ["".join(text) for text in await asyncio.gather(*(chat_async(said(f"{k}.{n}")) for n in range(50)))]

        results[f"loop {k}"] = asyncio.run(chats())

    def sync_chats(k: int) -> None:
        results[f"sync {k}"] = [g4f.ChatCompletion.create(GPTalk.default_model, said(f"s{k}.{n}"), provider=GPTalk)
                                for n in range(10)]

    threads = [threading.Thread(target=loop_of_chats, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=sync_chats, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(results[f"loop {k}"] == [echo_reply(f"chat {k}.{n}") for n in range(50)] for k in range(4))
    assert all(results[f"sync {k}"] == [echo_reply(f"chat s{k}.{n}") for n in range(10)] for k in range(2))
    assert server.stats["asks"] == 220 and server.stats["rejected"] == 0
    assert server.stats["logins"] == math.ceil(220 / 5)  # one login at a time for all: none wasted
