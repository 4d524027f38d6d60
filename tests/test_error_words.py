"""Every failure a g4f error in true words, at the byte level: the stream request's head, answers aiohttp cannot
parse, a host that swallows connections, dates in every HTTP form whatever the time zone, model names, big prompts
and the health check."""

from __future__ import annotations

import asyncio
import socket
import time
import warnings

import g4f
import pytest
from aiohttp.http import HttpResponseParser
from g4f.errors import ResponseError

from g4f_gptalk import GPTalk
from g4f_gptalk.plugin.bridge import iter_list_provider
from g4f_gptalk.protocol import auth
from g4f_gptalk.protocol.errors import GPTalkTimeoutError, InvalidRequestError, http_date
from g4f_gptalk.testing.server import echo_reply

from .conftest import HELLO, chat_async, partial_chat, run_python
from .raw_server import LOGIN, RawServer, json_answer, login_ask_then

REPLY = echo_reply("Hello")


def hang_up(connection: socket.socket) -> None:
    connection.shutdown(socket.SHUT_RDWR)


def chat_against(url: str, monkeypatch: pytest.MonkeyPatch, **options: object) -> tuple[str, BaseException | None]:
    monkeypatch.setenv("G4F_GPTALK_URL", url)
    return asyncio.run(partial_chat(HELLO, **options))


def test_a_stream_request_dropped_before_its_answer_is_a_response_error(monkeypatch):
    with RawServer(login_ask_then(hang_up)) as raw:
        text, error = chat_against(raw.url, monkeypatch)
    assert text == "" and type(error) is ResponseError
    assert str(error) == f"GPTalk stream: {raw.url} closed the connection without an answer"


@pytest.mark.parametrize(("bounds", "words"), [
    ({"timeout": 1}, "GPTalk stream: the call's timeout ran out (1 s)"),
    ({"timeout": 30, "stream_timeout": 0.5}, "GPTalk stream: no data for 0.5 s (stream_timeout)"),
])
def test_a_stream_whose_head_comes_late_is_a_timeout_naming_the_bound(monkeypatch, bounds, words):
    with RawServer(login_ask_then(lambda connection: time.sleep(3))) as raw:
        text, error = chat_against(raw.url, monkeypatch, **bounds)
    assert text == "" and isinstance(error, GPTalkTimeoutError) and str(error) == words


@pytest.mark.skipif(HttpResponseParser.__module__ != "aiohttp._http_parser",
                    reason="aiohttp's pure-Python parser (AIOHTTP_NO_EXTENSIONS=1, PyPy) delivers the body, and "
                           "drops the bytes after it as an unfinished head")
def test_bytes_after_a_content_length_body_are_a_response_error_naming_the_step(monkeypatch):
    def answer(connection: socket.socket, request: bytes, number: int) -> None:
        connection.sendall(json_answer(LOGIN, extra=b"XYZ junk\r\n"))

    with RawServer(answer) as raw:
        _text, error = chat_against(raw.url, monkeypatch)
    assert type(error) is ResponseError
    assert str(error).startswith(f"GPTalk login: the answer from {raw.url} is not valid HTTP (")


def test_a_chat_alone_whose_own_login_times_out_says_so(monkeypatch):
    with RawServer(lambda connection, request, number: time.sleep(5)) as raw:
        _text, error = chat_against(raw.url, monkeypatch, timeout=1)
    assert isinstance(error, GPTalkTimeoutError) and str(error) == "GPTalk login: the call's timeout ran out (1 s)"


@pytest.fixture
def black_hole():
    """A listener whose accept queue is full: the kernel drops further connection attempts, as a firewall or a
    dead host's router does, and the client waits for an answer that never comes."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    queued = []
    for _ in range(4):  # fill the queue; the ones past it stay half-open
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(listener.getsockname())
        queued.append(client)
    time.sleep(0.1)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    for client in queued:
        client.close()
    listener.close()


def test_a_host_that_never_answers_costs_the_connect_bound_not_the_whole_call(black_hole, monkeypatch):
    monkeypatch.setattr(GPTalk, "connect_timeout", 1.0)  # the default's path, 10 s there
    started = time.monotonic()
    _text, error = chat_against(black_hole, monkeypatch, timeout=120)
    waited = time.monotonic() - started
    assert isinstance(error, GPTalkTimeoutError)
    assert str(error) == f"GPTalk login: {black_hole} could not be reached within 1 s (connect_timeout)"
    assert waited < 5  # a bound, not a speed claim: the call had 120 s


def test_g4f_falls_back_to_the_next_provider_after_the_connect_bound(black_hole, monkeypatch):
    from g4f.providers.base_provider import AsyncGeneratorProvider, ProviderModelMixin

    class Spare(AsyncGeneratorProvider, ProviderModelMixin):
        working = True
        default_model = "gpt-3.5-turbo"
        models = [default_model]  # noqa: RUF012

        @classmethod
        async def create_async_generator(cls, model, messages, **kwargs):  # type: ignore[no-untyped-def]
            yield "from the spare"

    monkeypatch.setenv("G4F_GPTALK_URL", black_hole)
    reply = g4f.ChatCompletion.create("gpt-3.5-turbo", HELLO, provider=iter_list_provider([GPTalk, Spare]),
                                      connect_timeout=1)
    assert reply == "from the spare"


@pytest.mark.parametrize(("url", "words"), [
    ("http://127.0.0.1:99999", "GPTalk: G4F_GPTALK_URL='http://127.0.0.1:99999' has port 99999, out of range 1-65535"),
    ("http://127.0.0.1:0/", "GPTalk: G4F_GPTALK_URL='http://127.0.0.1:0/' has port 0, out of range 1-65535"),
])
def test_a_port_out_of_range_is_named(monkeypatch, url, words):
    _text, error = chat_against(url, monkeypatch)
    assert isinstance(error, InvalidRequestError) and str(error) == words


def test_a_service_url_with_an_api_path_gets_a_hint_at_the_root(server, monkeypatch):
    _text, error = chat_against(server.url + "/v1", monkeypatch)
    assert type(error) is ResponseError
    assert str(error) == (f"GPTalk login: HTTP 404: 404: Not Found (no GPTalk API at {server.url}/v1: is it the "
                          f"service's root, such as https://gptalk.net?)")


HTTP_DATES = """
import time
from g4f_gptalk.protocol import auth
from g4f_gptalk.protocol.errors import http_date
forms = ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"]
print(time.tzname[0], *[http_date(form) for form in forms])
now = time.time()
asctime = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(now))
print(abs(auth.expiry_of({"expires_at": int(now) + 300}, asctime) - (int(now) + 300)) < 2)
"""


def test_http_dates_in_all_three_forms_are_utc_whatever_the_time_zone():
    out = run_python(HTTP_DATES, env={"TZ": "Asia/Tokyo"})
    assert out.split() == ["JST", "784111777.0", "784111777.0", "784111777.0", "True"]


def test_an_expiry_already_past_in_milliseconds_is_not_given():
    now = time.time()
    assert abs(auth.expiry_of({"expires_at": int((now - 600) * 1000)}) - (now + 300)) < 2
    assert auth.expiry_of({"expires_at": auth.LAST_SECOND}) == auth.LAST_SECOND  # 9999-12-31 in seconds
    assert http_date("not a date") is None


def asked_models(server) -> list[str]:  # type: ignore[no-untyped-def]
    return [body["model"] for step, _headers, body in server.requests if step == "ask"]


def test_a_gptalk_prefix_is_removed_whatever_the_call_shape(server):
    g4f.ChatCompletion.create("GPTalk:gpt-3.5-turbo", HELLO, provider="GPTalk")
    g4f.ChatCompletion.create("GPTalk:gpt-3.5-turbo", HELLO)
    asyncio.run(g4f.ChatCompletion.create_async("GPTalk:gpt-3.5-turbo", HELLO, provider=GPTalk))
    assert asked_models(server) == ["gpt-3.5-turbo"] * 3


def test_a_model_the_service_does_not_list_follows_g4fs_own_rule(server, monkeypatch, capsys):
    monkeypatch.setattr(g4f.debug, "logging", True)
    try:
        GPTalk.get_model("gpt-4")  # g4f 8 passes an unlisted model through; older releases refuse it
    except Exception as refused:  # noqa: BLE001 - whichever error that release raises
        with pytest.raises(type(refused)):
            g4f.ChatCompletion.create("gpt-4", HELLO, provider="GPTalk")
        assert server.stats["asks"] == 0
        return
    assert g4f.ChatCompletion.create("gpt-4", HELLO, provider="GPTalk") == REPLY
    assert asked_models(server) == ["gpt-4"]
    assert "GPTalk: model 'gpt-4' is not one the service lists (gpt-3.5-turbo); sent as given" in capsys.readouterr().out


def test_a_prompt_over_a_mebibyte_goes_without_a_warning(start_server):
    server = start_server(reply=lambda prompt: f"{len(prompt)} characters")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reply = g4f.ChatCompletion.create("", [{"role": "user", "content": "x" * (3 * 2**20)}], provider="GPTalk")
    assert reply == f"{3 * 2**20} characters" and server.stats["asks"] == 1


def test_the_health_check_logs_in_once_and_its_token_serves_the_next_chat(server):
    async def health_then_chat() -> tuple[dict[str, object], str]:
        return await GPTalk.get_health(), "".join(await chat_async())

    health, text = asyncio.run(health_then_chat())
    assert health == {"url": server.url, "ok": True, "status": 200} and text == REPLY
    assert server.stats["logins"] == 1 and server.stats["asks"] == 1


def test_the_health_check_of_a_service_that_is_down_answers_without_raising(server, monkeypatch):
    from g4f_gptalk.testing.server import Faults

    server.faults = Faults(login=["500"])
    health = asyncio.run(GPTalk.get_health())
    assert health["ok"] is False and health["status"] == 500
    assert str(health["error"]).startswith("GPTalk login: HTTP 500: ")
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    monkeypatch.setenv("G4F_GPTALK_URL", f"http://127.0.0.1:{port}")
    health = asyncio.run(GPTalk.get_health())
    assert health == {"url": f"http://127.0.0.1:{port}", "ok": False, "status": 0,
                      "error": f"GPTalk login: cannot connect to http://127.0.0.1:{port}: Connection refused"}
