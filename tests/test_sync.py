"""g4f's sync API: chats share the engine's connections and tokens, stream each piece as it arrives, stop cleanly,
and leave nothing open at exit."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time

import g4f
import pytest

from g4f_gptalk import GPTalk
from g4f_gptalk.protocol.errors import GPTalkTimeoutError
from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import HELLO, chat_async, run_python, without_g4f_notices

REPLY = echo_reply("Hello")


def create(messages=HELLO, **kwargs):
    return g4f.ChatCompletion.create(GPTalk.default_model, messages, provider=GPTalk, **kwargs)


def open_descriptors() -> set[tuple[str, str]]:
    """This process's open file descriptors, as (number, what it is): a number alone may have been reused."""
    found = set()
    for number in os.listdir("/proc/self/fd"):
        try:
            found.add((number, os.readlink(f"/proc/self/fd/{number}")))
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return found


def wait_until(condition, seconds: float = 5.0) -> bool:
    """Whether ``condition()`` came true within ``seconds`` (what a server sees of a close arrives a moment later)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_sync_chats_share_one_keep_alive_connection_and_five_asks_per_token(server):
    replies = [create([{"role": "user", "content": f"n{n}"}]) for n in range(20)]
    assert replies == [echo_reply(f"n{n}") for n in range(20)]
    assert server.stats["connections"] == 1 and server.stats["logins"] == 4 and server.stats["asks"] == 20


def test_sync_streaming_and_whole_replies_share_the_connection(server):
    pieces = list(create(stream=True))
    assert "".join(pieces) == REPLY and len(pieces) == math.ceil(len(REPLY) / server.chunk_chars)
    assert create() == REPLY
    assert server.stats["connections"] == 1


def test_sync_streaming_delivers_each_delta_before_the_server_sends_the_next_event(server):
    received: list[str] = []
    arrived = threading.Condition()

    def wait_for_deltas(count: int) -> None:
        with arrived:
            arrived.wait_for(lambda: len(received) >= count, timeout=10)

    async def after_previous_delta(index: int) -> None:  # the server sends event N once N deltas arrived
        await asyncio.get_running_loop().run_in_executor(None, wait_for_deltas, index)

    server.before_event = after_previous_delta
    # a provider that held a delta back would stall the server, and stream_timeout would end the chat
    for piece in create(stream=True, stream_timeout=5):
        with arrived:
            received.append(piece)
            arrived.notify_all()
    assert "".join(received) == REPLY and len(received) > 10


@pytest.mark.parametrize("stop", ["break", "close"])
def test_a_caller_that_stops_a_sync_stream_early_cancels_the_request_silently(server, caplog, capsys, stop):
    caplog.set_level(logging.WARNING)
    server.faults = Faults(stream=["stall"])  # the body never ends: only a cancelled request frees the connection
    stream = create(stream=True)
    if stop == "break":
        for _piece in stream:
            break
        del stream
    else:
        assert REPLY.startswith(next(stream))
        stream.close()
    assert wait_until(lambda: server.open_connections == 0)
    server.faults = Faults()
    assert create() == REPLY and server.stats["connections"] == 2
    client_side = [record for record in caplog.records if not record.name.startswith("aiohttp.")]  # not the server's
    assert client_side == [] and capsys.readouterr().err == ""


def test_a_sync_timeout_is_gptalks_own_error_after_the_text_received(server):
    server.faults = Faults(stream=["stall"])
    received: list[str] = []
    with pytest.raises(GPTalkTimeoutError) as caught:
        for piece in create(stream=True, timeout=1):
            received.append(piece)
    text = "".join(received)
    assert text and REPLY.startswith(text) and text != REPLY
    assert str(caught.value) == (
        f"GPTalk stream: the call's timeout ran out (1 s); the reply is incomplete after {len(text)} characters")


def test_sync_calls_from_a_thread_whose_loop_is_running(server):
    async def inside_a_running_loop() -> tuple[list[str], list[str], str]:
        # sync code called from async code, as in Jupyter: this thread cannot drive a loop of its own
        replies = [create([{"role": "user", "content": f"n{n}"}]) for n in range(3)]
        pieces = list(create(stream=True))
        stream = create(stream=True)
        first = next(stream)
        stream.close()
        return replies, pieces, first

    replies, pieces, first = asyncio.run(inside_a_running_loop())
    assert replies == [echo_reply(f"n{n}") for n in range(3)]
    assert "".join(pieces) == REPLY and len(pieces) > 10 and REPLY.startswith(first)
    assert server.stats["connections"] == 1 and server.stats["logins"] == 1


def test_a_timeout_reaches_a_caller_whose_loop_is_running_as_gptalks_own_error(server):
    server.faults = Faults(stream=["stall"])

    async def inside_a_running_loop() -> str:
        with pytest.raises(GPTalkTimeoutError) as caught:
            create(timeout=1)
        return str(caught.value)

    assert asyncio.run(inside_a_running_loop()).startswith("GPTalk stream: the call's timeout ran out")


def test_16_threads_of_sync_chats_get_exact_replies_and_ceil_n_over_5_logins(server):
    per_thread, threads = 5, 16
    replies: dict[str, str] = {}

    def chats(thread: int) -> None:
        for n in range(per_thread):
            prompt = f"thread {thread} chat {n}"
            replies[prompt] = create([{"role": "user", "content": prompt}])

    workers = [threading.Thread(target=chats, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(replies) == per_thread * threads
    assert all(reply == echo_reply(prompt) for prompt, reply in replies.items())
    # the server refuses a sixth ask on a token: none was refused, so no token served more than five
    assert server.stats["rejected"] == 0 and server.stats["asks"] == per_thread * threads
    assert server.stats["logins"] == math.ceil(per_thread * threads / 5)


@pytest.mark.parametrize("call", [
    'g4f.ChatCompletion.create("", [{"role": "user", "content": "Hello"}], provider="GPTalk")',
    'asyncio.run(g4f.ChatCompletion.create_async("", [{"role": "user", "content": "Hello"}], provider="GPTalk"))',
])
def test_interpreter_exit_closes_the_engines_connections_without_a_warning(server, call):
    # atexit handlers run last-registered first: this one, registered before g4f_gptalk is imported, runs after
    # the plugin's and asks the server what is still open (its own request's connection is one)
    out = run_python(textwrap.dedent(f"""
        import atexit, json, urllib.request

        def open_at_exit():
            with urllib.request.urlopen("{server.url}/_local/stats", timeout=10) as response:
                print("open at exit:", json.load(response)["open_connections"])

        atexit.register(open_at_exit)
        import asyncio, g4f
        g4f.debug.version_check = False
        print({call})
    """), "-X", "dev")
    assert out.splitlines() == [REPLY, "open at exit: 1"]


FORK_THEN_CHAT_AT_ONCE = textwrap.dedent("""
    import asyncio, os, sys
    if sys.argv[1] == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as uvicorn does for g4f api
    import g4f
    from g4f_gptalk.testing.server import echo_reply
    g4f.debug.version_check = False

    def chats(who):
        replies = [g4f.ChatCompletion.create("", [{"role": "user", "content": f"{who} {n}"}], provider="GPTalk",
                                             timeout=20) for n in range(10)]
        return replies == [echo_reply(f"{who} {n}") for n in range(10)]

    assert chats("before")  # the parent's engine now holds a pooled connection
    import warnings  # Python 3.12+ warns about fork() beside threads (libuv's resolver threads under uvloop): ours
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child chats while the parent does
        ok = False
        try:
            ok = chats("child")
        finally:
            os.write(write_end, f"child {ok}".encode())
            os._exit(0)
    os.close(write_end)
    parent_ok = chats("parent")
    with os.fdopen(read_end) as child:
        child_said = child.read()
    os.waitpid(pid, 0)
    print(child_said, "parent", parent_ok, "after", chats("after"))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_after_a_fork_child_and_parent_chat_at_once_with_exact_replies_and_no_noise(server, loop):
    # in a fresh interpreter: its stderr, shared by parent and child, must stay empty, and it must not hang
    result = subprocess.run([sys.executable, "-c", FORK_THEN_CHAT_AT_ONCE, loop], capture_output=True, text=True,
                            timeout=60, cwd=os.path.dirname(__file__))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert without_g4f_notices(result.stdout).split() == ["child", "True", "parent", "True", "after", "True"]
    assert server.stats["asks"] == 40 and server.stats["rejected"] == 0
    # the parent's one, still reused, and the child's own, each with a second for a login ahead of need
    assert server.stats["connections"] <= 4


@pytest.mark.parametrize("cells_chat", ["logging in", "queued for that login", "streaming"])
def test_a_sync_call_on_a_running_loop_does_not_wait_for_that_loops_login(server, cells_chat):
    # A notebook: sync g4f inside a running loop blocks it while that loop's own chats log in or stream. Before the
    # engine, their login could not finish meanwhile, and a sync call queued for it waited out its whole timeout.
    server.faults = Faults(login_delay=1.0)
    if cells_chat == "streaming":
        async def slowly(index: int) -> None:
            await asyncio.sleep(0.02)

        server.before_event = slowly

    async def notebook_cell() -> tuple[object, list[str]]:
        own_chats = [asyncio.ensure_future(chat_async(timeout=30))]
        if cells_chat == "queued for that login":
            own_chats.append(asyncio.ensure_future(chat_async(timeout=30)))
        deadline = time.monotonic() + 10
        under_way = "streams" if cells_chat == "streaming" else "logins"
        while server.stats[under_way] == 0 and time.monotonic() < deadline:  # the cell's own chat is at it
            await asyncio.sleep(0.01)
        try:
            reply: object = create(timeout=8)  # blocks this loop until it returns
        except GPTalkTimeoutError as exc:
            reply = exc
        return reply, ["".join(await own_chat) for own_chat in own_chats]

    reply, own_replies = asyncio.run(notebook_cell())
    assert reply == REPLY and all(own == REPLY for own in own_replies)
    # the engine logs in while the cell's loop is blocked: one login serves all (before the engine: two)
    assert server.stats["logins"] == 1 and server.stats["rejected"] == 0
