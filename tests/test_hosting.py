"""Sync chats as programs host g4f: streams read from any thread, a thread per request, servers that time idle
connections out with 408, and Ctrl-C."""

from __future__ import annotations

import asyncio
import concurrent.futures
import textwrap
import threading
import time

import g4f
import pytest

from g4f_gptalk import GPTalk
from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import chat_async, partial_chat, run_python
from .relay import IdleTimeoutRelay
from .test_sync import wait_until

REPLY = echo_reply("Hello")


def said(n: object) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"chat {n}"}]


def create(n: object, **options: object) -> object:
    return g4f.ChatCompletion.create(GPTalk.default_model, said(n), provider=GPTalk, **options)


def test_streams_made_in_one_thread_are_read_in_others_while_it_chats(server):
    streams = [create(n, stream=True) for n in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as readers:
        texts = readers.map(lambda stream: "".join(stream), streams)
        own = [create(f"own {n}") for n in range(5)]
        assert list(texts) == [echo_reply(f"chat {n}") for n in range(4)]
    assert own == [echo_reply(f"chat own {n}") for n in range(5)]
    assert server.stats["rejected"] == 0 and server.stats["logins"] == 2


def test_sync_endpoints_streaming_from_a_shared_thread_pool_as_starlette_does(server):
    # A plain `def` endpoint returning StreamingResponse(g4f...create(stream=True)): Starlette makes the stream on a
    # pool thread and reads it with iterate_in_threadpool, each next() on whichever thread of the pool is free.
    finished = object()

    async def endpoint(n: int, threads: concurrent.futures.Executor) -> str:
        loop = asyncio.get_running_loop()
        stream = await loop.run_in_executor(threads, lambda: create(n, stream=True))
        text = ""
        while (piece := await loop.run_in_executor(threads, next, stream, finished)) is not finished:
            text += piece
        return text

    async def sixteen_requests_eight_at_a_time() -> list[str]:
        with concurrent.futures.ThreadPoolExecutor(8) as threads:
            return list(await asyncio.gather(*(endpoint(n, threads) for n in range(16))))

    assert asyncio.run(sixteen_requests_eight_at_a_time()) == [echo_reply(f"chat {n}") for n in range(16)]
    assert server.stats["rejected"] == 0 and server.stats["logins"] == 4


def test_a_thread_per_request_shares_one_connection_and_five_asks_per_token(server):
    replies = []
    for n in range(20):  # as Flask's dev server, Django's runserver or ThreadingHTTPServer do
        thread = threading.Thread(target=lambda n=n: replies.append(create(n)))
        thread.start()
        thread.join(timeout=30)
    assert replies == [echo_reply(f"chat {n}") for n in range(20)]
    assert server.stats["connections"] == 1 and server.stats["logins"] == 4


IDLE = 0.5
"""Seconds after which the relay times an idle connection out: longer than a chat's own pauses between its requests
on a busy machine (0.2 s was not, once, under heavy load), shorter than the pauses the tests make."""


@pytest.mark.parametrize("mode", ["408-close", "408-open", "stray-200"])
def test_sync_chats_after_a_pause_survive_a_server_that_timed_the_connection_out(server, monkeypatch, mode):
    with IdleTimeoutRelay(("127.0.0.1", server.port), idle=IDLE, mode=mode) as relay:
        monkeypatch.setenv("G4F_GPTALK_URL", relay.url)
        for n in range(3):
            assert create(n) == echo_reply(f"chat {n}")
            assert wait_until(lambda n=n: relay.stats["timeouts"] == n + 1)  # the caller pauses meanwhile
    assert server.stats["asks"] == 3 and server.stats["logins"] == 1 and server.stats["connections"] == 3


def test_a_request_answered_408_on_a_reused_connection_is_sent_again_and_not_counted(server, monkeypatch):
    with IdleTimeoutRelay(("127.0.0.1", server.port), idle=IDLE, mode="408-next") as relay:
        monkeypatch.setenv("G4F_GPTALK_URL", relay.url)
        for n in range(5):
            assert create(n) == echo_reply(f"chat {n}")
            time.sleep(IDLE + 0.2)  # the next request crosses the relay's timeout
    # one 408 per chat after the first, each request re-sent once on a new connection; the server read each ask once,
    # so the token served all five
    assert relay.stats["timeouts"] == 4 and server.stats["connections"] == 5
    assert server.stats["asks"] == 5 and server.stats["logins"] == 1 and server.stats["rejected"] == 0


def test_a_request_failed_on_a_stale_pooled_connection_goes_once_more_on_a_new_one(server):
    pooled: list[int] = []

    async def pooled_then_stale() -> tuple[str, BaseException | None]:
        await asyncio.gather(*(chat_async(said(n)) for n in range(4)))  # several pooled connections
        pooled.append(server.stats["connections"])
        GPTalk.forget_tokens()
        server.faults = Faults(reset_reused=["login"] * 4)
        return await partial_chat()

    text, error = asyncio.run(pooled_then_stale())
    # sent, and sent once more on a new connection, not on another stale pooled one (before: a second reset, and
    # the chat failed)
    assert (text, error) == (REPLY, None)
    assert server.stats["resets"] == 1 and server.stats["logins"] == 2
    assert pooled[0] > 1 and server.stats["connections"] == pooled[0] + 1


CTRL_C_MID_STREAM = textwrap.dedent("""
    import json, os, signal, sys, threading, time, urllib.request, g4f
    from g4f_gptalk.testing.server import echo_reply
    g4f.debug.version_check = False
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal
    messages = [{"role": "user", "content": "Hello"}]
    fired = []

    def interrupt():
        fired.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    try:
        for piece in g4f.ChatCompletion.create("", messages, provider="GPTalk", stream=True):
            if len(piece) and not fired:
                threading.Timer(0.2, interrupt).start()
                fired.append(None)
    except KeyboardInterrupt:
        print("interrupted within 2 s:", time.monotonic() - fired[1] < 2)
    def still_open():
        with urllib.request.urlopen(sys.argv[1] + "/_local/stats", timeout=10) as response:
            return json.load(response)["open_connections"] - 1  # less this request's own

    deadline = time.monotonic() + 5  # the server reads the close a moment after the client made it
    while still_open() and time.monotonic() < deadline:
        time.sleep(0.02)
    print("open after:", still_open())
    print(g4f.ChatCompletion.create("", messages, provider="GPTalk") == echo_reply("Hello"))
""")


@pytest.mark.parametrize("how", ["signal", "signal that wakes nothing"])
def test_ctrl_c_in_a_sync_stream_interrupts_at_once_and_cancels_the_request(server, how):
    server.faults = Faults(stream=["stall"], times=1)  # the first stream stops sending midway, for 60 s
    # a signal that comes just before the wait for the next piece begins is taken, but does not end that wait:
    # _thread.interrupt_main() makes one such
    code = CTRL_C_MID_STREAM if how == "signal" else CTRL_C_MID_STREAM.replace(
        "os.kill(os.getpid(), signal.SIGINT)", "import _thread; _thread.interrupt_main()")
    out = run_python(code, server.url)
    assert out.splitlines() == ["interrupted within 2 s: True", "open after: 0", "True"]


UNDER_UVLOOP = textwrap.dedent("""
    import asyncio, concurrent.futures, json, sys, threading, time, urllib.request, uvloop, g4f
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # the engine's loop is a uvloop one
    from g4f_gptalk.testing.server import echo_reply
    g4f.debug.version_check = False

    def create(n, **options):
        return g4f.ChatCompletion.create("", [{"role": "user", "content": f"chat {n}"}], provider="GPTalk", **options)

    def stats():
        with urllib.request.urlopen(sys.argv[1] + "/_local/stats", timeout=10) as response:
            return json.load(response)

    def connections():
        return stats()["connections"] - 1  # less this request's own

    streams = [create(n, stream=True) for n in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as readers:
        texts = list(readers.map(lambda stream: "".join(stream), streams))
    deadline = time.monotonic() + 10
    while stats()["logins"] < 2 and time.monotonic() < deadline:  # the login ahead of need, begun by the fourth
        time.sleep(0.01)                                           # ask, on a connection of its own if need be
    after_streams = connections()
    replies = []
    for n in range(4, 8):
        thread = threading.Thread(target=lambda n=n: replies.append(create(n)))
        thread.start()
        thread.join()
    print(texts + replies == [echo_reply(f"chat {n}") for n in range(8)], type(asyncio.new_event_loop()).__module__,
          connections() == after_streams)
""")


def test_streams_across_threads_and_a_thread_per_request_under_uvloop(server):
    pytest.importorskip("uvloop")
    # streams read at once may each need a connection; the chats of a thread each after them open none
    assert run_python(UNDER_UVLOOP, server.url).split() == ["True", "uvloop", "True"]
    assert server.stats["asks"] == 8 and server.stats["rejected"] == 0
