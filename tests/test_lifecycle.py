"""Event loops that die anywhere: closed without shutdown while bodies drain, lookups run or logins are under way;
forks beside waiting threads; worker processes by every start method."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import pytest

from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import chat_async, run_python
from .test_pool import open_descriptor_count

REPLY = echo_reply("Hello")
SOCKETS_FREED = ("unclosed transport", "unclosed <socket.socket", "unclosed resource <TCPTransport")
LOOPS = ["asyncio", "uvloop"]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


@contextlib.contextmanager
def no_noise(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails if anything inside logs a warning or an error, warns, or raises where nobody can catch it (in a
    ``__del__``, a callback, a garbage-collected task). The ResourceWarnings that Python and uvloop give for the
    sockets of a loop closed without shutdown, as they free them, are the loop closer's: they are let through."""
    caplog.set_level(logging.WARNING)
    unraisable: list[object] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
            gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    said = [f"{w.category.__name__}: {w.message}" for w in caught
            if not (w.category is ResourceWarning and str(w.message).startswith(SOCKETS_FREED))]
    said += [f"unraisable: {hook.exc_value!r} in {hook.object!r}" for hook in unraisable]  # type: ignore[attr-defined]
    said += [f"log {record.levelname}: {record.getMessage()}" for record in caplog.records
             if not record.name.startswith("aiohttp.")]  # not the server's
    assert said == [], "\n".join(said)


def closed_without_shutdown(kind: str, step: Callable[[], object]) -> None:
    """Run ``step()`` on a new loop of ``kind``, then close the loop as aiohttp's pytest fixture does: stopped and
    closed, with no ``shutdown_asyncgens()`` and nothing cancelled."""
    loop = new_loop(kind)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(step())  # type: ignore[arg-type]
    finally:
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.close()
        asyncio.set_event_loop(None)


@pytest.mark.parametrize("kind", LOOPS)
def test_a_loop_closed_without_shutdown_while_a_body_drains_leaves_the_next_chat_alone(server, caplog, kind):
    server.faults = Faults(tail_after_done=1.0)
    with no_noise(caplog):
        closed_without_shutdown(kind, chat_async)
        closed_without_shutdown(kind, chat_async)  # before: RuntimeError: Event loop is closed
        assert "".join(asyncio.run(chat_async())) == REPLY
    assert server.stats["asks"] == 3


@pytest.mark.parametrize("kind", LOOPS)
def test_a_chat_its_caller_gave_up_on_mid_login_leaves_the_login_to_serve_the_next_chats(server, caplog, kind):
    server.faults = Faults(login_delay=0.5)

    async def chat_ended_by_the_callers_own_wait_for() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(chat_async(), 0.2)

    with no_noise(caplog):
        closed_without_shutdown(kind, chat_ended_by_the_callers_own_wait_for)
        assert ["".join(asyncio.run(chat_async())) for _ in range(5)] == [REPLY] * 5
    # the login went on without its caller, bounded by its own time, and its token served the five chats after
    assert server.stats["logins"] == 1 and server.stats["asks"] == 5


@pytest.mark.parametrize("kind", LOOPS)
def test_300_loops_closed_without_shutdown_while_bodies_drain_share_two_connections(server, caplog, kind):
    server.faults = Faults(tail_until_next_request=True)
    counts = []
    with no_noise(caplog):
        for n in range(300):
            closed_without_shutdown(kind, chat_async)
            if n % 50 == 49:
                gc.collect()
                counts.append(open_descriptor_count())
    assert max(counts) - min(counts) < 10, counts
    assert server.stats["asks"] == 300 and server.stats["connections"] <= 2  # before the engine: 300


left_pending: list[object] = []
"""Tasks a test left pending on a loop it closed, kept: Python would report them as destroyed, rightly, to the
test that left them."""


def run_in_thread(kind: str, step: Callable[[], object], close: threading.Event) -> threading.Thread:
    """A thread that runs ``step()`` as a task of its own loop until ``close`` is set, then closes the loop with
    the task still pending."""
    def run() -> None:
        loop = new_loop(kind)
        left_pending.append(loop.create_task(step()))  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.wrap_future(loop.run_in_executor(None, close.wait, 10)))
        loop.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", LOOPS)
def test_a_waiter_whose_loop_died_mid_login_is_skipped_and_the_queue_goes_on(server, caplog, kind):
    server.faults = Faults(login_delay=1.0)
    close = threading.Event()

    async def logging_in_then_waiting() -> list[str]:
        first = asyncio.ensure_future(chat_async(timeout=30))
        while server.stats["logins"] == 0:
            await asyncio.sleep(0.01)
        waiter = run_in_thread(kind, chat_async, close)  # queued for that login, on a loop then closed
        await asyncio.sleep(0.2)
        close.set()
        await asyncio.get_running_loop().run_in_executor(None, waiter.join, 10)
        return ["".join(await first)] + ["".join(await chat_async(timeout=5)) for _ in range(10)]

    with no_noise(caplog):
        assert asyncio.run(logging_in_then_waiting()) == [REPLY] * 11  # before: RuntimeError, then timeouts
    assert server.stats["rejected"] == 0 and server.stats["logins"] == 3


@pytest.mark.parametrize("kind", LOOPS)
def test_a_login_whose_callers_loop_died_serves_the_chats_waiting_for_it(server, caplog, kind):
    server.faults = Faults(login_delay=1.0)
    close = threading.Event()

    async def waiting_for_a_login_that_dies() -> tuple[list[str], float]:
        owner = run_in_thread(kind, chat_async, close)
        while server.stats["logins"] == 0:
            await asyncio.sleep(0.01)
        waiters = [asyncio.ensure_future(chat_async(timeout=8)) for _ in range(3)]
        await asyncio.sleep(0.1)
        close.set()  # the loop logging in closes mid-login
        started = time.monotonic()
        texts = ["".join(await waiter) for waiter in waiters]
        await asyncio.get_running_loop().run_in_executor(None, owner.join, 10)
        return texts, time.monotonic() - started

    with no_noise(caplog):
        texts, waited = asyncio.run(waiting_for_a_login_that_dies())
    assert texts == [REPLY] * 3 and waited < 2  # a bound, not a speed claim: the login takes 1 s
    assert server.stats["logins"] == 1  # before the engine: 2, the waiters taking over a login that could not go on


FORK_BESIDE_A_WAITING_THREAD = textwrap.dedent("""
    import gc, os, sys, threading, time, g4f
    from g4f_gptalk import GPTalk
    from g4f_gptalk.testing.server import echo_reply
    g4f.debug.version_check = False
    if sys.argv[1] == "uvloop":
        import asyncio, uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    import warnings  # Python 3.12+ warns about fork() beside threads: this test's own
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)

    def chat(who):
        return g4f.ChatCompletion.create("", [{"role": "user", "content": who}], provider="GPTalk", timeout=8)

    ready, go, results = threading.Event(), threading.Event(), {}
    def thread_that_chatted_before():
        results["t1"] = chat("t1") == echo_reply("t1")
        ready.set()
        go.wait()
        started = time.monotonic()  # queued for the main thread's login, which takes 1 s
        results["t2"] = (chat("t2") == echo_reply("t2"), time.monotonic() - started < 6)  # its bound is 8 s
    thread = threading.Thread(target=thread_that_chatted_before)
    thread.start()
    ready.wait()
    pid = os.fork()
    if pid == 0:
        gc.collect()
        os._exit(0 if chat("child") == echo_reply("child") else 1)
    _, status = os.waitpid(pid, 0)
    GPTalk.forget_tokens()
    threading.Timer(0.2, go.set).start()
    main = chat("main") == echo_reply("main")
    thread.join()
    print("child", status == 0, "thread", results["t1"], *results["t2"], "main", main)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("kind", LOOPS)
def test_a_fork_beside_a_thread_waiting_for_a_login_leaves_the_parent_working(server, kind):
    server.faults = Faults(login_delay=1.0)
    out = run_python(FORK_BESIDE_A_WAITING_THREAD, kind)
    assert out.split() == ["child", "True", "thread", "True", "True", "True", "main", "True"]


WORKER = textwrap.dedent("""
    import g4f
    g4f.debug.version_check = False

    def chat(n):
        return g4f.ChatCompletion.create("", [{"role": "user", "content": f"chat {n}"}], provider="GPTalk", timeout=20)
""")

POOL_OF_WORKERS = textwrap.dedent("""
    import multiprocessing, sys, g4f, worker
    from g4f_gptalk.testing.server import echo_reply
    g4f.debug.version_check = False
    if __name__ == "__main__":
        assert worker.chat("parent") == echo_reply("chat parent")  # the parent's engine and pool exist
        with multiprocessing.get_context(sys.argv[1]).Pool(3) as workers:
            replies = workers.map(worker.chat, range(12))
        print(replies == [echo_reply(f"chat {n}") for n in range(12)], worker.chat("after") == echo_reply("chat after"))
""")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_worker_processes_chat_by_every_start_method(server, tmp_path, method):
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "main.py").write_text(POOL_OF_WORKERS)
    result = subprocess.run([sys.executable, str(tmp_path / "main.py"), method], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env={**os.environ, "G4F_GPTALK_URL": server.url})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.split()[-2:] == ["True", "True"]
    assert server.stats["asks"] == 14 and server.stats["rejected"] == 0


AIOHTTP_FIXTURE_SUITE = textwrap.dedent("""
    from g4f_gptalk import GPTalk
    from g4f_gptalk.testing.server import echo_reply

    async def chat():
        return "".join([d async for d in GPTalk.create_async_generator("", [{"role": "user", "content": "Hi"}])])

    async def test_one(loop):
        assert await chat() == echo_reply("Hi")

    async def test_two(loop):
        assert await chat() == echo_reply("Hi")
""")


def test_two_tests_on_aiohttps_own_loop_fixture_while_bodies_end_late(server, tmp_path):
    # aiohttp's pytest plugin closes each test's loop without shutdown_asyncgens(), here with a body still draining
    server.faults = Faults(tail_after_done=1.0)
    (tmp_path / "test_app.py").write_text(AIOHTTP_FIXTURE_SUITE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "aiohttp.pytest_plugin", "-p", "no:asyncio", "-p", "no:cacheprovider",
         "-W", "error::pytest.PytestUnraisableExceptionWarning", "-q", "test_app.py"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, "G4F_GPTALK_URL": server.url})
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout + result.stderr
