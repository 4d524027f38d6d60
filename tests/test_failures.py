"""Hostile or drifting servers and bad arguments: each ends as a clear g4f error, or is read as the rules say."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from g4f.errors import RateLimitError, ResponseError
from g4f.Provider.helper import format_prompt

from g4f_gptalk import GPTalk
from g4f_gptalk.protocol.errors import G4FError, IncompleteReplyError, InvalidRequestError
from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import HELLO, chat, partial_chat, run_python

REPLY = echo_reply("Hello")


def fail(messages=HELLO, **options):
    text, error = asyncio.run(partial_chat(messages, **options))
    assert error is not None, "the chat should have failed"
    return text, error


def test_a_login_token_with_a_line_break_is_a_response_error_and_is_not_cached(server):
    server.faults = Faults(login=["crlf-token"], times=1)
    text, error = fail()
    assert type(error) is ResponseError and text == ""
    assert str(error) == "GPTalk login: the answer's 'data.token' has control characters or surrounding spaces"
    assert "".join(chat()) == REPLY  # the next chat logs in afresh
    assert server.stats["logins"] == 2 and server.stats["asks"] == 1


@pytest.mark.parametrize("step", ["login", "ask"])
def test_json_nested_too_deep_in_an_answer_is_a_response_error(server, step):
    server.faults = Faults(**{step: ["deep"]})
    _text, error = fail()
    assert type(error) is ResponseError and str(error).startswith(f"GPTalk {step}: ")


def test_json_nested_too_deep_in_an_event_is_an_error_after_the_text_before_it(server):
    server.faults = Faults(stream=["deep"])
    text, error = fail()
    assert isinstance(error, IncompleteReplyError) and "an event has no string 'content': [[[[" in str(error)
    assert text and REPLY.startswith(text) and text != REPLY


@pytest.mark.parametrize(
    ("option", "value"),
    [("timeout", float("inf")), ("timeout", float("nan")), ("timeout", -1), ("timeout", 0), ("timeout", "10"),
     ("timeout", True), ("stream_timeout", float("inf")), ("stream_timeout", 0)],
)
def test_a_time_bound_that_is_not_a_positive_number_is_refused_before_any_request(server, option, value):
    _text, error = fail(**{option: value})
    assert isinstance(error, InvalidRequestError) and isinstance(error, ValueError)
    assert str(error) == f"GPTalk: {option}={value!r} is not a number of seconds above 0"
    assert server.stats["logins"] == 0


def test_the_cli_refuses_an_infinite_timeout_in_one_line():
    result = subprocess.run([sys.executable, "-m", "g4f_gptalk", "chat", "Hi", "--url", "http://127.0.0.1:9",
                             "--timeout", "inf"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == "g4f-gptalk: error: GPTalk: timeout=inf is not a number of seconds above 0"


def test_a_token_a_server_echoes_back_in_an_error_is_redacted(server):
    server.faults = Faults(ask=["echo-auth"])
    _text, error = fail()
    asked_with = [headers["authorization"] for step, headers, _ in server.requests if step == "ask"]
    assert len(asked_with) == 1 and asked_with[0].startswith("Bearer ")
    assert str(error) == "GPTalk ask: HTTP 400: bad request with authorization: Bearer [redacted]"


def test_a_stream_answered_with_a_json_error_envelope_says_what_the_server_said(server):
    server.faults = Faults(stream=["envelope"])
    text, error = fail()
    assert type(error) is ResponseError and text == ""
    assert str(error) == "GPTalk stream: service error 10010: the stream token has expired"


@pytest.mark.parametrize("mode", ["cr", "bom"])
def test_valid_sse_with_bare_cr_line_ends_or_a_leading_bom_is_read(start_server, mode):
    server = start_server(chunk_chars=1000)  # the whole reply in one event: losing it cannot go unnoticed
    server.faults = Faults(stream=[mode])
    assert chat() == [REPLY]


@pytest.mark.parametrize("mode", ["no-expiry", "bad-expiry"])
def test_a_token_without_a_readable_expiry_still_serves_its_five_asks(server, mode):
    server.faults = Faults(login=[mode], times=1)
    assert ["".join(chat()) for _ in range(6)] == [REPLY] * 6
    assert server.stats["logins"] == 2 and server.stats["rejected"] == 0


def test_a_429_with_retry_after_says_how_long_to_wait(server):
    server.faults = Faults(login=["retry-after"])
    _text, error = fail()
    assert type(error) is RateLimitError
    assert str(error).endswith("(the service asks to wait 30 s)")


def test_a_redirect_loop_is_named(server):
    server.faults = Faults(login=["redirect-loop"])
    _text, error = fail()
    assert type(error) is ResponseError
    assert str(error) == (f"GPTalk login: the service redirected 10 times in a row; "
                          f"a redirect loop at {server.url}/api/chatgpt/user/login?")


@pytest.mark.parametrize("messages", [[{"role": "user", "content": ""}], [{"role": "user", "content": None}],
                                      [{"role": "user", "content": "  \n"}]])
def test_a_conversation_without_text_is_refused_before_any_request(server, messages):
    _text, error = fail(messages)
    assert isinstance(error, InvalidRequestError) and str(error) == "GPTalk: the messages have no text to send"
    assert server.stats["logins"] == 0


def test_a_none_content_counts_as_no_text(server):
    messages = [{"role": "assistant", "content": None}, {"role": "user", "content": "Hello"}]
    as_empty = [{"role": "assistant", "content": ""}, {"role": "user", "content": "Hello"}]
    assert "".join(chat(messages)) == echo_reply(format_prompt(as_empty))  # not the word "None"


def test_the_cli_refuses_an_empty_prompt_in_one_line():
    result = subprocess.run([sys.executable, "-m", "g4f_gptalk", "chat", "", "--url", "http://127.0.0.1:9"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == "g4f-gptalk: error: GPTalk: the messages have no text to send"


@pytest.mark.parametrize("model", [123, ["gpt-3.5-turbo"], b"gpt-3.5-turbo"])
def test_a_model_that_is_not_a_string_is_refused_before_any_request(server, model):
    async def ask() -> BaseException | None:
        try:
            async for _ in GPTalk.create_async_generator(model, HELLO):
                pass
        except G4FError as exc:
            return exc
        return None

    error = asyncio.run(ask())
    assert isinstance(error, InvalidRequestError)
    assert str(error) == f"GPTalk: model must be a string such as 'gpt-3.5-turbo', not {type(model).__name__}"
    assert server.stats["logins"] == 0


@pytest.mark.parametrize("mode", ["endless-line", "endless-event"])
def test_an_endless_line_or_event_is_cut_off_at_the_limit_with_bounded_memory(server, mode):
    # in a fresh interpreter, so that its peak memory is this chat's: a warm-up chat first, then the endless one
    out = run_python(textwrap.dedent("""
        import asyncio, json, os, resource, sys, urllib.request
        from g4f_gptalk import GPTalk

        async def chat(timeout):
            text = ""
            try:
                async for delta in GPTalk.create_async_generator("", [{"role": "user", "content": "Hello"}],
                                                                  timeout=timeout):
                    text += delta
            except Exception as exc:
                return text, exc
            return text, None

        assert asyncio.run(chat(60))[1] is None
        urllib.request.urlopen(urllib.request.Request(
            os.environ["G4F_GPTALK_URL"] + "/_local/faults", method="POST",
            data=json.dumps({"stream": [sys.argv[1]]}).encode()), timeout=10).close()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        text, error = asyncio.run(chat(60))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grown // 1024, len(text), type(error).__name__, error)
    """), mode, env={"G4F_GPTALK_URL": server.url}, timeout=120)
    grown_mb, received, error_type, words = out.split(maxsplit=3)
    assert error_type == "IncompleteReplyError"
    assert words.strip() == (f"GPTalk stream: an event is over the 1,048,576-byte limit; the reply is incomplete "
                             f"after {received} characters")
    assert 0 < int(received) and REPLY.startswith(REPLY[: int(received)])  # the text before it was delivered
    assert int(grown_mb) < 40  # the server had up to 300 MB to send (before the limit: +200 MB)
