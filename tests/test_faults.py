"""Server faults and bad input become clear g4f errors; text already received is delivered first."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import urllib.request

import pytest
import trustme
from g4f.errors import MissingAuthError, RateLimitError, ResponseError

from g4f_gptalk import GPTalk
from g4f_gptalk.compat import G4FTimeoutError
from g4f_gptalk.protocol.errors import CloudflareError, IncompleteReplyError, InvalidRequestError
from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import HELLO, chat, chat_async, partial_chat

REPLY = echo_reply("Hello")


def fail(**options):
    text, error = asyncio.run(partial_chat(HELLO, **options))
    assert error is not None, "the chat should have failed"
    return text, error


@pytest.mark.parametrize(
    ("step", "mode", "error_type", "words"),
    [
        ("login", "429", RateLimitError, "GPTalk login: HTTP 429: {\"code\": 429, \"msg\": \"simulated HTTP 429\""),
        ("ask", "429", RateLimitError, "GPTalk ask: HTTP 429"),
        ("login", "500", ResponseError, "GPTalk login: HTTP 500: {\"code\": 500"),
        ("ask", "500", ResponseError, "GPTalk ask: HTTP 500"),
        ("login", "html", ResponseError, "GPTalk login: expected JSON, got: <!DOCTYPE html><html><title>Down for"),
        ("ask", "html", ResponseError, "GPTalk ask: expected JSON"),
        ("login", "cloudflare", CloudflareError, "GPTalk login: HTTP 403: a Cloudflare challenge page, not the"),
        ("ask", "cloudflare", CloudflareError, "GPTalk ask: HTTP 403: a Cloudflare challenge page, not the"),
        ("login", "code", ResponseError, "GPTalk login: service error 10001: fingerprint banned"),
        ("ask", "code", ResponseError, "GPTalk ask: service error 10001: fingerprint banned"),
        ("login", "no-token", ResponseError, "GPTalk login: the answer has no 'data.token': 'data' is {}"),
        ("ask", "no-token", ResponseError, "GPTalk ask: the answer has no 'data.token'"),
        ("login", "403", MissingAuthError, "GPTalk login: HTTP 403"),
    ],
)
def test_a_failing_login_or_ask_raises_a_g4f_error_naming_the_step_and_the_servers_words(
    server, step, mode, error_type, words
):
    server.faults = Faults(**{step: [mode]})
    text, error = fail()
    assert type(error) is error_type or isinstance(error, error_type)
    assert words in str(error)
    assert text == "" and server.stats["streams"] == 0
    assert server.stats["logins"] == 1  # a challenge or an error is not a rejected token: no second login


@pytest.mark.parametrize("mode", ["401", "403", "auth-code", "auth-code-10401"])
def test_a_rejected_token_is_dropped_and_the_ask_retried_once_with_a_fresh_login(server, mode):
    server.faults = Faults(ask=[mode], times=1)
    assert "".join(chat()) == REPLY
    assert server.stats["logins"] == 2 and server.stats["asks"] == 2


@pytest.mark.parametrize("mode", ["401", "auth-code"])
def test_a_second_rejection_is_a_missing_auth_error(server, mode):
    server.faults = Faults(ask=[mode], times=2)
    _text, error = fail()
    assert isinstance(error, MissingAuthError) and "GPTalk ask" in str(error)
    assert server.stats["logins"] == 2 and server.stats["asks"] == 2
    assert "".join(chat()) == REPLY  # the token that follows works again


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("cut", "GPTalk stream: the connection failed ("),
        ("no-done", "GPTalk stream: the stream ended without 'data: [DONE]'"),
        ("bad-json", "GPTalk stream: an event has no string 'content': {not json"),
        ("non-string", "GPTalk stream: an event has no string 'content': {\"content\": 42}"),
        ("rewrite", "GPTalk stream: the server rewrote text it had already sent"),
    ],
)
def test_a_broken_stream_yields_the_text_received_then_says_the_reply_is_incomplete(server, mode, words):
    server.faults = Faults(stream=[mode])
    text, error = fail()
    assert isinstance(error, IncompleteReplyError) and isinstance(error, ResponseError)
    assert words in str(error)
    assert text and REPLY.startswith(text)
    assert (text == REPLY) is (mode == "no-done")  # only a missing [DONE] can follow the whole text
    assert str(error).endswith(f"the reply is incomplete after {len(text)} characters")


def test_sse_noise_and_crlf_line_endings_are_normal(server):
    server.faults = Faults(stream=["noise"])
    assert "".join(chat()) == REPLY


def test_a_stream_refused_with_http_500_is_a_response_error(server):
    server.faults = Faults(stream=["500"])
    text, error = fail()
    assert isinstance(error, ResponseError) and "GPTalk stream: HTTP 500" in str(error) and text == ""


def test_a_stalled_stream_raises_a_timeout_within_the_bound_and_releases_the_connection(server):
    server.faults = Faults(stream=["stall"])
    started = time.monotonic()
    text, error = fail(timeout=1.0)
    waited = time.monotonic() - started
    assert isinstance(error, G4FTimeoutError) and isinstance(error, TimeoutError)
    assert "GPTalk stream" in str(error) and text and REPLY.startswith(text)
    assert waited < 5  # a bound, not a speed claim: without the timeout the server stalls for 60 s


def test_a_stalled_streams_connection_is_closed_not_returned_to_the_pool(server):
    server.faults = Faults(stream=["stall"])

    async def stall_then_chat() -> tuple[bool, str]:
        _text, error = await partial_chat(HELLO, timeout=1.0)
        assert isinstance(error, G4FTimeoutError)
        closed = await closed_at_the_server(server)  # while this loop and its pool live on
        server.faults = Faults()
        return closed, "".join(await chat_async())

    closed, next_reply = asyncio.run(stall_then_chat())
    assert closed
    assert next_reply == REPLY and server.stats["connections"] == 2  # the next chat needed a new connection


def test_stream_timeout_bounds_the_wait_between_events(server):
    server.faults = Faults(stream=["stall"])
    _text, error = fail(timeout=30, stream_timeout=0.5)
    assert isinstance(error, G4FTimeoutError)
    assert str(error).startswith("GPTalk stream: no data for 0.5 s (stream_timeout); the reply is incomplete after ")


def test_timeout_bounds_the_whole_call_even_while_events_keep_coming(server):
    async def trickle(index: int) -> None:
        await asyncio.sleep(0.2)  # never a stall, but the reply would take several seconds

    server.before_event = trickle
    started = time.monotonic()
    text, error = fail(timeout=1.0, stream_timeout=30)
    waited = time.monotonic() - started
    assert isinstance(error, G4FTimeoutError) and "GPTalk stream: the call's timeout ran out" in str(error)
    assert text and REPLY.startswith(text) and text != REPLY
    assert waited < 0.2 * len(REPLY) / server.chunk_chars  # a bound, not a speed claim: well before the reply's end


def test_an_unreachable_service_is_a_response_error_naming_it(monkeypatch):
    monkeypatch.setenv("G4F_GPTALK_URL", "http://127.0.0.1:9")
    _text, error = fail(timeout=5)
    assert isinstance(error, ResponseError)
    assert str(error) == "GPTalk login: cannot connect to http://127.0.0.1:9: Connection refused"  # once, no "ssl:"


def test_a_host_name_that_does_not_resolve_is_said_so(monkeypatch):
    # an IPv6 address with a scope that names no interface: the lookup fails here, without a packet leaving
    host = "fe80::1%nosuchif"
    with pytest.raises(socket.gaierror) as lookup:
        socket.getaddrinfo(host, 9)
    monkeypatch.setenv("G4F_GPTALK_URL", "http://[fe80::1%25nosuchif]:9")
    _text, error = fail(timeout=5)
    assert isinstance(error, ResponseError)
    assert str(error) == f"GPTalk login: cannot connect to http://[fe80::1%25nosuchif]:9: {lookup.value.strerror}"


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([], "messages is empty"),
        ("Hello", "messages must be a list of chat messages, not str"),
        (None, "not NoneType"),
        ([{"content": "Hi"}], "messages[0] must be a dict with a 'role' string and 'content'"),
        ([{"role": "user"}], "messages[0] must be a dict with a 'role' string and 'content'"),
        ([{"role": "user", "content": "a"}, "b"], "messages[1] must be a dict"),
        ([{"role": "user", "content": ["text"]}], "messages[0]['content'] must be text or a list of content parts"),
    ],
)
def test_bad_messages_are_a_value_error_before_any_request(server, messages, words):
    _text, error = asyncio.run(partial_chat(messages))
    assert isinstance(error, InvalidRequestError) and isinstance(error, ValueError)
    assert words in str(error)
    assert server.stats["logins"] == 0 and server.stats["asks"] == 0


@pytest.mark.parametrize("url", ["ftp://example.com", "gptalk.net", "http://", "https://[::1"])
def test_an_invalid_service_url_names_the_setting(monkeypatch, url):
    monkeypatch.setenv("G4F_GPTALK_URL", url)
    _text, error = fail()
    assert isinstance(error, InvalidRequestError) and "G4F_GPTALK_URL=" in str(error)


@pytest.mark.parametrize("proxy", ["ftp://user:hunter2@proxy:21", "hunter2", "http://"])
def test_an_invalid_proxy_is_named_without_its_password(server, proxy):
    _text, error = fail(proxy=proxy)
    assert isinstance(error, InvalidRequestError) and "proxy" in str(error)
    assert "hunter2" not in str(error) and server.stats["logins"] == 0


def test_tls_certificates_are_verified(start_server):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server = start_server(ssl_context=server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    with urllib.request.urlopen(server.url + "/_local/stats", context=trusting, timeout=5) as response:
        assert response.status == 200  # the https server works for a client that trusts its CA
    _text, error = fail(timeout=5)
    assert isinstance(error, ResponseError) and "GPTalk login" in str(error) and "certificate verify failed" in str(error)
    assert server.stats["logins"] == 0


def test_a_consumer_that_stops_early_has_its_connection_closed(server):
    server.faults = Faults(stream=["stall"])  # the body never ends: only closing the request frees the connection

    async def first_delta_only() -> tuple[str, bool]:
        stream = GPTalk.create_async_generator("", HELLO)
        first = await stream.__anext__()
        await stream.aclose()
        return first, await closed_at_the_server(server)  # while this loop and its pool live on

    first, closed = asyncio.run(first_delta_only())
    assert REPLY.startswith(first) and closed


def test_a_cancelled_chat_has_its_connection_closed(server):
    server.faults = Faults(stream=["stall"])

    async def cancel_midway() -> bool:
        received: list[str] = []

        async def chat_into_received() -> None:
            async for delta in GPTalk.create_async_generator("", HELLO):
                received.append(delta)

        task = asyncio.ensure_future(chat_into_received())
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:  # the reply has begun; the server stalls midway
            await asyncio.sleep(0.01)
        assert received, "the reply did not begin"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await closed_at_the_server(server)

    assert asyncio.run(cancel_midway())


async def closed_at_the_server(server, seconds: float = 5.0) -> bool:
    """Whether the server saw every connection closed within ``seconds`` (a close reaches it a moment later)."""
    deadline = time.monotonic() + seconds
    while server.open_connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return server.open_connections == 0
