"""Shared fixtures: a real GPTalk server on 127.0.0.1 per test, and g4f isolated from the network and from ~."""

from __future__ import annotations

import asyncio
import datetime
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import g4f
import pytest

from g4f_gptalk import GPTalk, redaction
from g4f_gptalk.testing.server import GPTalkServer, ServerThread

HELLO = [{"role": "user", "content": "Hello"}]
COOKIES = all(importlib.util.find_spec(name) is not None for name in ("g4f.cookies", "g4f.config")) \
    and hasattr(importlib.import_module("g4f.config"), "COOKIES_DIR")
"""Whether this g4f keeps a cookies folder of its own (0.5 and newer), and so GPTalk a shared token file."""
REAL_HOME = str(Path.home())


def fresh_cookies_dir(tmp_path: Path) -> Path:
    """Where an interpreter of this g4f started by a test (its HOME and G4F_CONFIG_DIR under ``tmp_path``) keeps its
    cookies: g4f 8 under G4F_CONFIG_DIR, older releases under the home folder, as ``g4f.config`` made
    ``COOKIES_DIR`` here from the real one."""
    config = importlib.import_module("g4f.config")
    if "G4F_CONFIG_DIR" in Path(config.__file__).read_text():
        return tmp_path / "config" / "cookies"
    return Path(str(config.COOKIES_DIR).replace(REAL_HOME, str(tmp_path / "home"), 1))


def pytest_report_header() -> str:
    import importlib.metadata

    return f"g4f {importlib.metadata.version('g4f')}, aiohttp {importlib.metadata.version('aiohttp')}"


@pytest.fixture(scope="session")
def g4f_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Cache and config directories that let g4f start offline: g4f reads its provider list from today's folder
    instead of downloading it (docs/troubleshooting.md's offline recipe for ``g4f api``)."""
    root = tmp_path_factory.mktemp("g4f")
    models = root / "cache" / ".models" / datetime.date.today().isoformat()
    models.mkdir(parents=True)
    (models / "providers.json").write_text(
        json.dumps({"providers": {"default": {"baseUrl": "http://127.0.0.1:9/v1"}}, "defaultModels": {}})
    )
    (root / "config").mkdir()
    return {"G4F_CACHE_DIR": str(root / "cache"), "G4F_CONFIG_DIR": str(root / "config")}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, g4f_dirs: dict[str, str], tmp_path: Path) -> None:
    for name, value in g4f_dirs.items():
        monkeypatch.setenv(name, value)
    # g4f before 8 ignores G4F_CONFIG_DIR and keeps state under ~ (the `g4f client` history in
    # ~/.config/g4f/conversation.json grows with every run, and with it the prompt): each test gets its own home.
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # g4f keeps its cookies folder, and so GPTalk's shared token file, under G4F_CONFIG_DIR (g4f 8) or the home
    # folder: each test its own, in this process as in the interpreters it starts
    (tmp_path / "config").mkdir()
    monkeypatch.setenv("G4F_CONFIG_DIR", str(tmp_path / "config"))
    if COOKIES:
        monkeypatch.setattr(importlib.import_module("g4f.cookies").CookiesConfig, "cookies_dir",
                            str(fresh_cookies_dir(tmp_path)))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("G4F_GPTALK_URL", raising=False)
    monkeypatch.delenv("G4F_PROXY", raising=False)
    monkeypatch.setattr(g4f.debug, "version_check", False)  # it would ask PyPI
    # ... and so would g4f in the interpreters the tests start: their HTTP goes to a dead proxy on loopback, and
    # loopback itself (the local servers) is exempt; aiohttp, and so GPTalk, ignores these settings anyway
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    # a login ahead of need adds a background login, and often a connection, to what a test counts: the tests of
    # other things count without it (test_token_economy.py tests it)
    monkeypatch.setattr(GPTalk, "login_ahead", False)
    GPTalk.forget_tokens()
    redaction.forget_all()  # a secret of another test's server would hide its words in this one's errors


@pytest.fixture
def start_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Starts GPTalk servers with the given options; the last one started is what G4F_GPTALK_URL names."""
    threads: list[ServerThread] = []

    def start(**options: Any) -> GPTalkServer:
        thread = ServerThread(**options)
        server = thread.__enter__()
        threads.append(thread)
        monkeypatch.setenv("G4F_GPTALK_URL", server.url)
        return server

    yield start
    for thread in reversed(threads):
        thread.__exit__(None, None, None)


@pytest.fixture
def server(gptalk_server: GPTalkServer) -> GPTalkServer:
    """The local server of the testing kit this package ships (the ``gptalk_server`` fixture)."""
    return gptalk_server


async def chat_async(messages: Any = HELLO, **kwargs: Any) -> list[str]:
    """The deltas of one chat through GPTalk.create_async_generator."""
    return [delta async for delta in GPTalk.create_async_generator(GPTalk.default_model, messages, **kwargs)]


def chat(messages: Any = HELLO, **kwargs: Any) -> list[str]:
    return asyncio.run(chat_async(messages, **kwargs))


async def partial_chat(messages: Any = HELLO, **kwargs: Any) -> tuple[str, BaseException | None]:
    """The text a chat delivered and the error that ended it, if any."""
    received: list[str] = []
    try:
        async for delta in GPTalk.create_async_generator(GPTalk.default_model, messages, **kwargs):
            received.append(delta)
    except Exception as exc:  # noqa: BLE001
        return "".join(received), exc
    return "".join(received), None


def run_python(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter of this environment; its stdout, after checking it exited 0."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).parent,  # not the checkout: the installed package must be what runs
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return without_g4f_notices(result.stdout)


G4F_NOTICE = re.compile(
    r"New g4f version[^\n]*\n?|g4f is up-to-date \(version [^)]*\)\.\n?"
    r"|Failed to check g4f version[^\n]*\n?")


def without_g4f_notices(stdout: str) -> str:
    """stdout less g4f's update notice: printed from a thread of g4f's after its first request (which asks PyPI,
    or fails to), it may land in the middle of a line, and its wording differs between g4f releases."""
    return "\n".join(line for line in G4F_NOTICE.sub("", stdout).split("\n") if line) + "\n"
