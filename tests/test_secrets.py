"""Nothing secret leaves the package by any path: every string a user or an attacker can read (str, repr, the full
traceback with its chained causes, the debug log, the health answer, doctor, the CLI) is searched for every secret,
as the server side knows them, on every failure path the fault server can produce."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import g4f
import pytest

from g4f_gptalk import GPTalk
from g4f_gptalk.testing.server import Faults

from .conftest import HELLO, partial_chat
from .raw_server import RawServer, login_ask_then

PASSWORD = "hunter2-proxy"
ENCODED = base64.b64encode(f"agent:{PASSWORD}".encode()).decode()


def shown(error: BaseException | None) -> str:
    """All a program can show of ``error``: its words, its repr, and the traceback ``logger.exception`` writes."""
    assert error is not None, "the chat was meant to fail"
    return "\n".join([str(error), repr(error), "".join(traceback.format_exception(error))])


def secrets_of(server: Any) -> set[str]:
    """What the server knows to be secret: every fingerprint it was sent, every token it issued."""
    fingerprints = {body["fingerprint"] for step, _, body in server.requests if step == "login" and body}
    return {*fingerprints, *server.issued} - {"None"}


@pytest.fixture
def debug_log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(g4f.debug, "logging", True)
    if hasattr(g4f.debug, "log_handler"):
        monkeypatch.setattr(g4f.debug, "log_handler", lambda *text, **_: lines.append(" ".join(map(str, text))))
    return lines


def health() -> dict[str, Any]:
    return asyncio.run(GPTalk.get_health())


@pytest.mark.parametrize("mode", ["quote-fingerprint", "echo-secrets"])
def test_a_health_check_shows_no_secret_the_service_quotes(server, debug_log, mode):
    server.faults = Faults(login=[mode])
    answer = health()
    assert answer["ok"] is False and answer["error"].startswith("GPTalk login: ")  # before: the fingerprint, raw
    assert "[redacted]" in answer["error"]
    seen = json.dumps(answer) + "\n".join(debug_log)
    assert [secret for secret in secrets_of(server) if secret in seen] == []


@pytest.mark.parametrize("mode", ["quote-fingerprint", "echo-secrets"])
def test_doctor_shows_no_secret_the_service_quotes(server, mode):
    server.faults = Faults(login=[mode])
    result = subprocess.run([sys.executable, "-m", "g4f_gptalk", "doctor"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "G4F_GPTALK_URL": server.url}, stdin=subprocess.DEVNULL,
                            cwd=Path(__file__).parent)  # not the checkout: the installed package must be what runs
    assert "FAIL  login: GPTalk login: " in result.stdout  # the login check ran and failed
    seen = result.stdout + result.stderr
    assert [secret for secret in secrets_of(server) if secret in seen] == []


@pytest.mark.parametrize("step", ["ask", "stream"])
def test_a_sync_chat_on_a_token_another_chat_got_hides_what_the_service_echoes(server, debug_log, step):
    assert asyncio.run(partial_chat())[1] is None  # an async chat logs in; the sync chat below reuses its token
    server.faults = Faults(**{step: ["echo-secrets"]})
    with pytest.raises(g4f.errors.ResponseError) as caught:
        g4f.ChatCompletion.create(GPTalk.default_model, HELLO, provider=GPTalk)
    seen = shown(caught.value) + "\n".join(debug_log)
    assert f"GPTalk {step}: HTTP 500" in seen  # before: the fingerprint and the echoed token, raw
    assert [secret for secret in secrets_of(server) if secret in seen] == []


def test_a_proxy_that_echoes_proxy_authorization_shows_no_password(server, debug_log, monkeypatch):
    monkeypatch.setenv("G4F_GPTALK_URL", "http://127.0.0.1:9")  # only the proxy (the local server) answers
    server.faults = Faults(login=["echo-proxy-auth"])
    proxy = server.url.replace("http://", f"http://agent:{PASSWORD}@")
    _text, error = asyncio.run(partial_chat(HELLO, proxy=proxy))
    assert {headers.get("proxy-authorization") for _, headers, _ in server.requests} == {f"Basic {ENCODED}"}
    seen = shown(error) + "\n".join(debug_log)
    assert "proxy refused: Basic [redacted]" in seen  # before: the password, base64-encoded
    assert PASSWORD not in seen and ENCODED not in seen


def test_a_dead_proxy_is_named_as_the_proxy_without_its_credentials(server):
    _text, error = asyncio.run(partial_chat(HELLO, proxy=f"http://agent:{PASSWORD}@127.0.0.1:9", timeout=5))
    assert str(error) == "GPTalk login: cannot connect to the proxy 127.0.0.1:9: Connection refused"
    assert PASSWORD not in shown(error) and ENCODED not in shown(error)


def test_a_stream_redirected_in_a_loop_hides_its_token_in_the_error_and_its_cause(server, debug_log):
    server.faults = Faults(stream=["redirect-loop"])
    _text, error = asyncio.run(partial_chat())
    seen = shown(error) + "\n".join(debug_log)
    assert str(error).startswith("GPTalk stream: the service redirected")
    assert [secret for secret in secrets_of(server) if secret in seen] == []


def test_a_stream_answer_that_is_not_http_hides_its_token_in_the_chained_cause(debug_log, monkeypatch):
    with RawServer(login_ask_then(lambda connection: connection.sendall(b"HTTQ/9 what\r\n\r\n"))) as server:
        monkeypatch.setenv("G4F_GPTALK_URL", server.url)
        _text, error = asyncio.run(partial_chat())
    seen = shown(error) + "\n".join(debug_log)
    assert "is not valid HTTP" in str(error) and error.__cause__ is not None  # the cause is kept, scrubbed
    assert "t0k3n" not in seen and "str3am" not in seen  # before: ?token=str3am in the cause's URL
