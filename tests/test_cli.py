"""The g4f-gptalk command, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from g4f_gptalk.server import echo_reply


def g4f_gptalk(*args: str) -> subprocess.CompletedProcess[str]:
    """``g4f-gptalk *args`` with no service address configured."""
    environment = {key: value for key, value in os.environ.items() if key != "G4F_GPTALK_URL"}
    return subprocess.run([sys.executable, "-m", "g4f_gptalk", *args], capture_output=True, text=True, timeout=120,
                          env=environment, stdin=subprocess.DEVNULL)


def test_demo_streams_a_reply_from_a_local_server_on_a_machine_with_no_service_configured():
    result = g4f_gptalk("demo", "Привет")
    assert result.returncode == 0, result.stderr
    assert result.stdout == echo_reply("Привет") + "\n"
    assert "local GPTalk server at http://127.0.0.1:" in result.stderr


def test_chat_with_url_talks_to_that_server(server):
    result = g4f_gptalk("chat", "Hello", "--url", server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == echo_reply("Hello") + "\n" and server.stats["asks"] == 1


def test_the_console_script_is_installed(server):
    script = shutil.which("g4f-gptalk", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "chat", "Hi", "--url", server.url], capture_output=True, text=True, timeout=120)
    assert result.stdout == echo_reply("Hi") + "\n"


def test_an_unreachable_service_is_one_line_and_exit_1():
    result = g4f_gptalk("chat", "Hello", "--url", "http://127.0.0.1:9", "--timeout", "10")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "", "g4f-gptalk: error: GPTalk login: cannot connect to http://127.0.0.1:9: Connection refused"]
    assert "Traceback" not in result.stderr


def test_a_bad_url_is_one_line_naming_the_setting_and_exit_1():
    result = g4f_gptalk("chat", "Hello", "--url", "ftp://example.com")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "g4f-gptalk: error: GPTalk: G4F_GPTALK_URL='ftp://example.com' is not an http(s) URL such as https://gptalk.net")


def test_serve_prints_its_url_and_answers():
    process = subprocess.Popen([sys.executable, "-m", "g4f_gptalk", "serve", "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("GPTalk server listening on http://127.0.0.1:")
        url = line.split()[-1]
        request = urllib.request.Request(url + "/api/chatgpt/user/login", method="POST",
                                         data=json.dumps({"fingerprint": "0" * 32, "platform": "fingerprint"}).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            assert set(json.load(response)["data"]) == {"token", "expires_at"}
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()
