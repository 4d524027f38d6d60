"""One token economy: tokens shared by the processes of a machine through g4f's cookies folder, and logins fetched
ahead of need. Processes really started, a real file, counts at the server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import g4f
import pytest

from g4f_gptalk import GPTalk
from g4f_gptalk.protocol import auth, token_store
from g4f_gptalk.protocol.errors import GPTalkTimeoutError
from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import COOKIES, chat_async, fresh_cookies_dir, partial_chat, run_python
from .test_integration import running_g4f_api
from .test_sync import wait_until

pytestmark = pytest.mark.skipif(not COOKIES, reason="this g4f has no cookies folder: tokens stay in memory")

ONE_SHOT = textwrap.dedent("""
    import sys, g4f
    from g4f_gptalk.testing.server import echo_reply
    g4f.debug.version_check = False
    for n in range(int(sys.argv[1])):
        said = f"{sys.argv[2]} {n}"
        reply = g4f.ChatCompletion.create("", [{"role": "user", "content": said}], provider="GPTalk", timeout=30)
        assert reply == echo_reply(said), reply
    print("ok")
""")


def token_file(tmp_path: Path) -> Path:
    return fresh_cookies_dir(tmp_path) / "auth_GPTalk.json"


def one_shot(chats: int, who: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", ONE_SHOT, str(chats), who], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent, env={**os.environ, **env})


def finished(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out


def test_five_one_shot_processes_in_a_row_log_in_once(server, tmp_path):
    for n in range(5):
        assert finished(one_shot(1, f"process {n}")).split() == ["ok"]
    assert server.stats["logins"] == 1 and server.stats["asks"] == 5  # before: 5 logins for 5 asks
    assert json.loads(token_file(tmp_path).read_text())["services"] == {}  # used up: not kept


def test_ten_processes_at_once_share_tokens_and_no_token_is_asked_a_sixth_time(server):
    processes = [one_shot(3, f"process {n}") for n in range(10)]
    assert [finished(process).split() for process in processes] == [["ok"]] * 10
    # the server refuses a sixth ask on a token: none was refused; 30 asks need 6 tokens, one more may have been
    # fetched ahead of need
    assert server.stats["asks"] == 30 and server.stats["rejected"] == 0
    assert server.stats["logins"] <= 7  # before: at least 10, one per process


def chats_through_g4f_api(base: str, said: list[str]) -> list[str]:
    """A chat for each of ``said`` through g4f's OpenAI-compatible API, all at once, each on a connection of its own,
    so that the kernel hands each to whichever of the API's workers takes it first."""
    def one(text: str) -> str:
        request = urllib.request.Request(f"{base}/v1/chat/completions", method="POST", headers={
            "content-type": "application/json", "connection": "close"}, data=json.dumps({
                "model": "gpt-3.5-turbo", "provider": "GPTalk", "messages": [{"role": "user", "content": text}]
            }).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["choices"][0]["message"]["content"]

    with concurrent.futures.ThreadPoolExecutor(len(said)) as threads:
        return list(threads.map(one, said))


def workers_with_the_token_file_open(port: int, path: Path) -> int:
    """How many worker processes of the ``g4f api`` on ``port`` hold ``path``'s lock open (a process opens it at its
    first claim and keeps it): Linux's /proc tells."""
    def cmdline(pid: str) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    def parent(pid: str) -> str:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except OSError:
            return ""

    def holds(pid: str) -> bool:
        try:
            return any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"{path}.lock" for fd in os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return False

    pids = [pid for pid in os.listdir("/proc") if pid.isdigit()]
    master = {pid for pid in pids if f"127.0.0.1:{port}".encode() in cmdline(pid) and b"g4f.cli" in cmdline(pid)}
    return sum(holds(pid) for pid in pids if parent(pid) in master)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="tells the workers apart through Linux's /proc")
def test_g4f_api_with_two_workers_shares_tokens(server, tmp_path):
    with running_g4f_api(workers=2) as base:
        chats = 0
        # until both workers have chatted (the kernel hands each connection to either), 20 chats at least
        while chats < 20 or workers_with_the_token_file_open(int(base.rsplit(":", 1)[1]), token_file(tmp_path)) < 2:
            assert chats < 100, "one worker took every chat"
            # a long reply keeps the worker that reads it busy, so that the other one takes the next connections
            said = ["x" * 20000, *(f"n{chats + n}" for n in range(3))]
            assert chats_through_g4f_api(base, said) == [echo_reply(text) for text in said]
            chats += 4
    assert server.stats["asks"] == chats and server.stats["rejected"] == 0
    assert server.stats["logins"] <= -(-chats // 5) + 1  # one per five asks begun, one more fetched ahead of need


def test_the_token_file_is_private_and_holds_tokens_by_service(server, start_server, tmp_path, monkeypatch):
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    other = start_server()
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    path = token_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    services = json.loads(path.read_text())["services"]
    assert set(services) == {server.url, other.url}  # two services never mix
    assert [name for name in os.listdir(path.parent) if name.endswith(".tmp")] == []


@pytest.mark.parametrize("content", ["", "{", "[1, 2]", '{"services": []}', '{"services": {"x": [{"token": 1}]}}',
                                     "\x00\xff"])
def test_a_token_file_that_cannot_be_read_is_ignored_and_rewritten(server, tmp_path, content, monkeypatch, capsys):
    monkeypatch.setattr(g4f.debug, "logging", True)
    path = token_file(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("latin-1"))
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    assert json.loads(path.read_text())["services"][server.url][0]["asks"] == 1
    assert f"GPTalk: ignored {path}" in capsys.readouterr().out or content == ""


def test_an_expired_or_rejected_token_in_the_file_is_never_used_again(server, tmp_path):
    path = token_file(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"services": {server.url: [
        {"token": "expired-token-1", "expires_at": time.time() - 10, "asks": 0},
        {"token": "unknown-to-the-server", "expires_at": time.time() + 3600, "asks": 0}]}}))
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")  # the unknown one is rejected: a new login
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    assert server.stats["rejected"] == 1 and server.stats["logins"] == 1
    tokens = [entry["token"] for entry in json.loads(path.read_text())["services"][server.url]]
    assert "expired-token-1" not in tokens and "unknown-to-the-server" not in tokens


def test_g4fs_reader_of_the_cookies_folder_passes_over_the_token_file(server, tmp_path, monkeypatch, capsys):
    from g4f.cookies import CookiesConfig, read_cookie_files

    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    monkeypatch.setattr(g4f.debug, "logging", True)
    monkeypatch.setattr(CookiesConfig, "cookies", {})
    read_cookie_files(str(token_file(tmp_path).parent))  # as `g4f api` and g4f's GUI read it at start
    assert CookiesConfig.cookies == {} and "auth_GPTalk" not in capsys.readouterr().out


HOLDS_THE_LOGIN_LOCK = textwrap.dedent("""
    import fcntl, os, sys, time
    descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    print("holding", flush=True)
    time.sleep(60)
""")


def test_a_chat_waits_for_another_process_login_within_its_own_time_and_after_it_dies_logs_in(server, tmp_path):
    path = token_file(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDS_THE_LOGIN_LOCK, f"{path}.login"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        started = time.monotonic()
        text, error = asyncio.run(partial_chat(timeout=1))
        assert text == "" and isinstance(error, GPTalkTimeoutError) and time.monotonic() - started < 5
        assert str(error) == "GPTalk login: the call's timeout ran out while another chat was logging in"
        assert server.stats["logins"] == 0
    finally:
        holder.kill()  # dies holding the lock: the kernel lets it go
        holder.wait()
        holder.stdout.close()
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    assert server.stats["logins"] == 1


def test_a_cookies_folder_set_while_the_process_runs_is_where_tokens_go_from_the_next_chat(server, tmp_path):
    from g4f.cookies import get_cookies_dir, set_cookies_dir

    first = token_file(tmp_path)
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    set_cookies_dir(str(tmp_path / "elsewhere"))  # as g4f's own providers follow it, at any time
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    assert server.stats["logins"] == 2  # a folder of its own: its own tokens
    assert json.loads((tmp_path / "elsewhere" / "auth_GPTalk.json").read_text())["services"][server.url][0]["asks"] == 1
    set_cookies_dir(str(first.parent))
    assert get_cookies_dir() == str(first.parent)
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    assert server.stats["logins"] == 2 and json.loads(first.read_text())["services"][server.url][0]["asks"] == 2


def test_asks_another_process_claimed_are_seen_though_the_file_keeps_its_size(server, tmp_path):
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    path = token_file(tmp_path)
    before = path.read_bytes()
    used_up = before.replace(b'"asks": 1', b'"asks": 5')  # as another process's four asks leave it, in place
    assert len(used_up) == len(before) and used_up != before
    path.write_bytes(used_up)
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    assert server.stats["logins"] == 2 and server.stats["rejected"] == 0  # no sixth ask on the used-up token


@pytest.mark.parametrize("change", ["removed", "replaced"])
def test_a_token_file_removed_or_replaced_while_a_process_chats_is_shared_again(server, tmp_path, change):
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    path = token_file(tmp_path)
    kept = path.read_bytes()
    path.unlink()  # by a user, or by another program that writes the file aside and moves it into place
    if change == "replaced":
        path.with_name("aside").write_bytes(kept)
        path.with_name("aside").replace(path)
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    assert finished(one_shot(1, "after")).split() == ["ok"]  # finds the file's token, not one in memory only
    assert server.stats["logins"] == (2 if change == "removed" else 1)
    assert json.loads(path.read_text())["services"][server.url][0]["asks"] == (2 if change == "removed" else 3)


def test_a_folder_that_cannot_be_written_leaves_tokens_in_memory_with_a_debug_line(server, tmp_path, monkeypatch,
                                                                                      capsys):
    folder = fresh_cookies_dir(tmp_path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.is_dir():
        shutil.rmtree(folder)
    if os.geteuid() == 0:  # root writes anywhere: a file where the folder should be stops it too
        folder.write_text("not a folder")
    else:
        folder.mkdir(mode=0o500)
    monkeypatch.setattr(g4f.debug, "logging", True)
    assert ["".join(asyncio.run(chat_async())) for _ in range(3)] == [echo_reply("Hello")] * 3
    assert server.stats["logins"] == 1
    assert "GPTalk: the shared token file cannot be used" in capsys.readouterr().out


def test_the_setting_turns_sharing_off(server, tmp_path):
    for n in range(2):
        assert finished(one_shot(1, f"process {n}", G4F_GPTALK_SHARED_TOKENS="0")).split() == ["ok"]
    assert server.stats["logins"] == 2 and not token_file(tmp_path).exists()


def test_forget_tokens_forgets_the_files_tokens_too(server, tmp_path):
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    GPTalk.forget_tokens(server.url)
    assert finished(one_shot(1, "after")).split() == ["ok"]
    assert server.stats["logins"] == 2
    GPTalk.forget_tokens()
    assert json.loads(token_file(tmp_path).read_text())["services"] == {}


def test_doctor_says_where_the_token_file_is_and_never_what_is_in_it(server, tmp_path):
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    result = subprocess.run([sys.executable, "-m", "g4f_gptalk", "doctor"], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).parent, stdin=subprocess.DEVNULL)
    assert f"tokens: shared in {token_file(tmp_path)}" in result.stdout
    tokens = [entry["token"] for entry in json.loads(token_file(tmp_path).read_text())["services"][server.url]]
    assert tokens and not any(token in result.stdout + result.stderr for token in tokens)


KILLED_WHILE_CHATTING = textwrap.dedent("""
    import sys, g4f
    g4f.debug.version_check = False
    print("ready", flush=True)
    while True:
        g4f.ChatCompletion.create("", [{"role": "user", "content": "again"}], provider="GPTalk", timeout=30)
""")


def test_processes_killed_at_random_moments_leave_a_file_that_parses(server, tmp_path):
    random.seed(7)
    for _ in range(8):
        victims = [subprocess.Popen([sys.executable, "-c", KILLED_WHILE_CHATTING], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).parent)
                   for _ in range(3)]
        for victim in victims:
            assert victim.stdout is not None and victim.stdout.readline() == "ready\n"
        time.sleep(random.uniform(0.05, 0.4))
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            victim.stdout.close()
        if token_file(tmp_path).exists():  # whole at every moment, or empty: made by a process killed before its
            json.loads(token_file(tmp_path).read_text() or "{}")  # first write, and read as holding no tokens
    before = server.stats["logins"]
    assert finished(one_shot(2, "after")).split() == ["ok"]
    json.loads(token_file(tmp_path).read_text())
    assert server.stats["logins"] - before <= 1 and server.stats["rejected"] == 0


# -- logins ahead of need -------------------------------------------------------------------------------------------

@pytest.fixture
def ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GPTalk, "login_ahead", True)


def test_a_chat_that_leaves_one_ask_starts_the_next_login_so_no_chat_waits_for_it(server, ahead):
    server.faults = Faults(login_delay=0.3, first_event_delay=0.4)  # a login shorter than a reply, as on the internet

    async def ten_chats() -> list[float]:
        took = []
        for n in range(10):
            started = time.monotonic()
            assert "".join(await chat_async([{"role": "user", "content": f"n{n}"}])) == echo_reply(f"n{n}")
            took.append(time.monotonic() - started)
        return took

    took = asyncio.run(ten_chats())
    assert took[0] >= 0.7  # the first chat waited for its login
    assert wait_until(lambda: server.stats["logins"] == 3)  # the third, fetched by the ninth, is the one left unused
    # the second login came in with the fourth chat's reply, before the fifth chat asked: the sixth chat, the new
    # token's first, found it there (before: it logged in itself, after the fifth chat's reply, and waited 0.3 s)
    steps = [step for step, _headers, _body in server.requests]
    asks = [n for n, step in enumerate(steps) if step == "ask"]
    assert asks[3] < steps.index("login", 1) < asks[4]
    assert server.stats["rejected"] == 0


def test_an_idle_process_never_logs_in_ahead(server, ahead, monkeypatch):
    monkeypatch.setattr(auth, "PREFETCH_WHILE", 0.05)

    async def chats_with_pauses() -> None:
        for _ in range(5):
            await asyncio.sleep(0.1)  # longer than the chats are expected to keep coming
            await chat_async()
        await asyncio.sleep(0.5)

    asyncio.run(chats_with_pauses())
    assert server.stats["logins"] == 1


def test_a_failed_login_ahead_leaves_the_next_chat_to_log_in_with_todays_words(server, ahead, monkeypatch):
    async def run() -> tuple[tuple[str, BaseException | None], tuple[str, BaseException | None]]:
        for _ in range(3):
            await chat_async()
        server.faults = Faults(login=["500"], times=1)  # the login ahead, started by the fourth chat, fails
        await chat_async()
        fifth = await partial_chat()  # the first token's last ask
        while server.stats["logins"] < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        return fifth, await partial_chat()

    fifth, sixth = asyncio.run(run())
    assert fifth == (echo_reply("Hello"), None) and sixth == (echo_reply("Hello"), None)
    assert server.stats["logins"] == 3  # the first, the failed one ahead, the sixth chat's own


def test_a_login_ahead_goes_into_the_shared_file_for_the_next_process(server, ahead, tmp_path):
    async def five() -> None:
        for _ in range(5):
            await chat_async()

    asyncio.run(five())
    assert wait_until(lambda: server.stats["logins"] == 2)
    assert finished(one_shot(1, "next")).split() == ["ok"]
    assert server.stats["logins"] == 2  # the next process took the token fetched ahead
    assert json.loads(token_file(tmp_path).read_text())["services"][server.url][0]["asks"] == 1


def test_a_forked_child_never_spends_its_parents_in_memory_count(server, monkeypatch):
    monkeypatch.setenv("G4F_GPTALK_SHARED_TOKENS", "0")
    out = run_python(textwrap.dedent("""
        import os, g4f
        g4f.debug.version_check = False
        def chat():
            return g4f.ChatCompletion.create("", [{"role": "user", "content": "x"}], provider="GPTalk")
        chat()  # a token with four asks left, in memory
        pid = os.fork()
        if pid == 0:
            for _ in range(3):
                chat()
            os._exit(0)
        os.waitpid(pid, 0)
        for _ in range(2):
            chat()
        print("done")
    """))
    assert out.split() == ["done"]
    # the child logged in for itself: had it spent the parent's token, that token would have been asked 6 times
    assert server.stats["rejected"] == 0 and server.stats["logins"] == 2 and server.stats["asks"] == 6


def test_no_token_appears_in_the_reprs(server):
    assert "".join(asyncio.run(chat_async())) == echo_reply("Hello")
    store = auth.caches[server.url].store
    shown = repr(auth.caches) + repr(store) + str(token_store.store_for(server.url).where())
    assert not any(token in shown for token in server.issued)
