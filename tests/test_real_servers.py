"""Servers less neat than the bundled one's defaults, as real ones are: a body that ends after ``[DONE]``, logins
whose ``expires_at`` takes other forms or follows another clock, an ask lost after the server counted it, and a
service URL with a path."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import gzip
import logging
import socket
import ssl
import time

import g4f
import pytest
import trustme
from g4f.client import AsyncClient, Client

from g4f_gptalk import GPTalk
from g4f_gptalk.protocol import auth
from g4f_gptalk.runtime import pool
from g4f_gptalk.runtime.engine import close_connections
from g4f_gptalk.testing.server import Faults, echo_reply

from .conftest import chat, chat_async, partial_chat, run_python
from .raw_server import Answer, RawServer, login_ask_then
from .test_faults import closed_at_the_server
from .test_sync import wait_until

REPLY = echo_reply("Hello")


def said(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"chat {n}"}]


async def sequential_chats(count: int) -> list[str]:
    return ["".join(await chat_async(said(n))) for n in range(count)]


def replies(count: int) -> list[str]:
    return [echo_reply(f"chat {n}") for n in range(count)]


# -- a body that ends a moment after [DONE] -------------------------------------------------------------------------

async def through_g4f(count: int) -> list[str]:
    return [await g4f.ChatCompletion.create_async(GPTalk.default_model, said(n), provider=GPTalk) for n in range(count)]


async def through_async_client(count: int) -> list[str]:
    client = AsyncClient()
    return [(await client.chat.completions.create(model=GPTalk.default_model, messages=said(n), provider=GPTalk))
            .choices[0].message.content for n in range(count)]


@pytest.mark.parametrize("chats", [sequential_chats, through_g4f, through_async_client])
def test_sequential_chats_keep_their_connection_when_the_body_ends_after_done(server, chats):
    server.faults = Faults(tail_until_next_request=True)
    assert asyncio.run(chats(20)) == replies(20)
    # each chat leaves its connection draining while the next one starts: two take turns (before: 20)
    assert server.stats["connections"] == 2 and server.stats["logins"] == 4


def test_the_chat_ends_at_done_and_does_not_wait_for_the_bodys_end(server):
    server.faults = Faults(tail_after_done=30)  # the test would time out if anything waited for it

    async def one_chat() -> tuple[str, int]:
        text = "".join(await chat_async())
        return text, server.stats["bodies_ended"]

    started = time.monotonic()
    text, ended = asyncio.run(one_chat())
    assert text == REPLY and ended == 0  # the whole reply, while the body is still open
    assert time.monotonic() - started < 10  # a bound, not a speed claim: the tail is 30 s


def test_a_chat_after_the_body_ended_finds_its_connection_back_in_the_pool(server):
    server.faults = Faults(tail_after_done=0.2)

    async def chats() -> list[str]:
        texts = []
        for n in range(3):
            texts.append("".join(await chat_async(said(n))))
            deadline = time.monotonic() + 5
            while server.stats["bodies_ended"] < n + 1 and time.monotonic() < deadline:  # the end is on its way
                await asyncio.sleep(0.01)
        return texts

    assert asyncio.run(chats()) == replies(3)
    assert server.stats["connections"] == 1


def create(n: int, **options: object) -> object:
    return g4f.ChatCompletion.create(GPTalk.default_model, said(n), provider=GPTalk, **options)


SYNC_PATTERNS = {
    "create": lambda n: create(n),
    "stream": lambda n: "".join(create(n, stream=True)),  # type: ignore[call-overload]
    "Client": lambda n: Client().chat.completions.create(model=GPTalk.default_model, messages=said(n),
                                                         provider=GPTalk).choices[0].message.content,
}


@pytest.mark.parametrize("pattern", SYNC_PATTERNS)
def test_sync_chats_keep_their_connection_when_the_body_ends_after_done(server, pattern):
    server.faults = Faults(tail_until_next_request=True)
    assert [SYNC_PATTERNS[pattern](n) for n in range(20)] == replies(20)
    assert server.stats["connections"] == 2 and server.stats["logins"] == 4


def test_a_sync_chat_takes_the_drained_connection_rather_than_racing_past_it(server):
    # The loop of a sync caller stands still between calls: the body's end waits in the socket. The next chat must
    # take it in before it picks a connection, or it opens a new one while the old one is as good as free.
    server.faults = Faults(tail_after_done=0.05)
    for n in range(5):
        assert create(n) == echo_reply(f"chat {n}")
        assert wait_until(lambda n=n: server.stats["bodies_ended"] == n + 1)
    assert server.stats["connections"] == 1


def test_concurrent_chats_keep_their_connections_when_bodies_end_after_done(server):
    server.faults = Faults(tail_after_done=0.02)

    async def concurrent_chats() -> tuple[list[str], int]:
        texts = await asyncio.gather(*(chat_async(said(n)) for n in range(50)))
        deadline = time.monotonic() + 5
        while server.stats["bodies_ended"] < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the engine takes in the ends the server has sent
        still_open = server.open_connections
        await asyncio.to_thread(close_connections)
        return ["".join(text) for text in texts], still_open

    texts, still_open = asyncio.run(concurrent_chats())
    assert texts == replies(50) and server.stats["bodies_ended"] == 50
    assert still_open == server.stats["connections"]  # every connection kept, in the pool, none closed
    assert server.stats["logins"] == 10 and server.stats["rejected"] == 0


def test_a_body_that_does_not_end_within_the_time_bound_is_closed(server, monkeypatch):
    monkeypatch.setattr(pool, "DRAIN_SECONDS", 0.3)
    server.faults = Faults(stream=["linger"])  # comments after [DONE], until the client hangs up

    async def chat_then_watch() -> tuple[str, bool]:
        text = "".join(await chat_async())
        return text, await closed_at_the_server(server)  # while this loop lives on, draining

    assert asyncio.run(chat_then_watch()) == (REPLY, True)


def test_a_callers_loop_that_ends_while_a_body_drains_leaves_the_drain_to_the_engine(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.faults = Faults(tail_after_done=0.3)
    assert "".join(chat()) == REPLY  # asyncio.run ends the caller's loop with the drain under way
    assert wait_until(lambda: server.stats["bodies_ended"] == 1)
    assert "".join(chat()) == REPLY
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert server.stats["connections"] == 1  # the drained connection went back to the pool


# -- expires_at in its many forms, by the server's clock ------------------------------------------------------------

@pytest.mark.parametrize("form", ["seconds", "milliseconds", "iso", "zero", "empty", "far-future"])
def test_a_token_serves_its_five_asks_whatever_form_its_expiry_takes(server, form):
    server.faults = Faults(expires_at=form)
    assert asyncio.run(sequential_chats(20)) == replies(20)
    assert server.stats["logins"] == 4 and server.stats["rejected"] == 0


def test_a_server_clock_ten_minutes_behind_still_gives_five_asks_per_token(start_server):
    server = start_server(token_ttl=300)
    server.faults = Faults(clock_offset=-600)  # its expires_at is past by our clock, five minutes ahead by its own
    assert asyncio.run(sequential_chats(20)) == replies(20)
    assert server.stats["logins"] == 4 and server.stats["rejected"] == 0


NOW = 1_800_000_000.0  # 2027-01-15


@pytest.mark.parametrize(
    ("expires_at", "expected"),
    [
        (NOW + 300, NOW + 300),  # seconds
        ((NOW + 300) * 1000, NOW + 300),  # milliseconds
        (str(int(NOW + 300)), NOW + 300),
        (datetime.datetime.fromtimestamp(NOW + 300, datetime.UTC).isoformat(), NOW + 300),
        (datetime.datetime.fromtimestamp(NOW + 300, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), NOW + 300),
        (253402300799, 253402300799),  # 9999-12-31 in seconds: far ahead, not 1978 read as milliseconds
        (0, NOW + auth.UNKNOWN_EXPIRY_LIFETIME),
        ("", NOW + auth.UNKNOWN_EXPIRY_LIFETIME),
        (None, NOW + auth.UNKNOWN_EXPIRY_LIFETIME),
        (NOW - 10, NOW + auth.UNKNOWN_EXPIRY_LIFETIME),  # already past: not a usable expiry
        (10**400, NOW + auth.UNKNOWN_EXPIRY_LIFETIME),
    ],
)
def test_expires_at_is_read_in_seconds_milliseconds_or_iso_and_zero_or_empty_means_not_given(
    monkeypatch, expires_at, expected
):
    monkeypatch.setattr(auth, "time", type("Clock", (), {"time": staticmethod(lambda: NOW)}))
    assert auth.expiry_of({"expires_at": expires_at}) == expected


@pytest.mark.parametrize("offset", [-600, 600])
def test_expires_at_follows_the_servers_clock_as_its_date_header_shows(monkeypatch, offset):
    monkeypatch.setattr(auth, "time", type("Clock", (), {"time": staticmethod(lambda: NOW)}))
    server_date = email.utils.formatdate(NOW + offset, usegmt=True)
    assert auth.expiry_of({"expires_at": NOW + offset + 300}, server_date) == NOW + 300


# -- an ask the server read and counted, then dropped ---------------------------------------------------------------

def test_an_ask_lost_after_the_server_counted_it_counts_against_its_token(server):
    async def chats() -> list[str]:
        texts = await sequential_chats(2)  # a token with two asks used, and a pooled connection
        server.faults = Faults(ask=["count-drop"], times=1)  # the third ask is counted, then its connection dropped
        return texts + ["".join(await chat_async(said(n))) for n in range(2, 10)]

    assert asyncio.run(chats()) == replies(10)
    # 11 asks reached the server; the lost one used up a token's ask there, and here too: no token got a sixth
    assert server.stats["asks"] == 11 and server.stats["rejected"] == 0 and server.stats["logins"] == 3


def test_an_ask_lost_on_a_new_connection_is_an_error_and_is_not_sent_again(server):
    assert "".join(chat()) == REPLY  # a token is cached; the next chat asks with it on a new connection
    close_connections()
    server.faults = Faults(ask=["count-drop"], times=1)
    text, error = asyncio.run(partial_chat())
    assert isinstance(error, g4f.errors.ResponseError)
    assert str(error).startswith("GPTalk ask: ") and str(error).endswith("closed the connection without an answer")
    assert text == "" and server.stats["asks"] == 2 and server.stats["connections"] == 2


# -- a service URL with a path ---------------------------------------------------------------------------------------

def test_origin_is_scheme_host_and_port_and_referer_keeps_the_path(start_server):
    server = start_server(prefix="/gptalk")
    assert "".join(chat()) == REPLY
    origin = f"http://127.0.0.1:{server.port}"
    assert server.url == origin + "/gptalk"
    assert {(headers["origin"], headers["referer"]) for _, headers, _ in server.requests} == {
        (origin, server.url + "/")}


# -- bytes after a body ---------------------------------------------------------------------------------------------

SSE = b'data: {"content": "Hi"}\n\ndata: {"content": "Hi there"}\n\ndata: [DONE]\n\n'


CHUNKED = b"".join(b"%x\r\n%s\n\n\r\n" % (len(event) + 2, event) for event in SSE.split(b"\n\n")[:-1]) + b"0\r\n\r\n"


def with_junk(how: str) -> Answer:
    """A login, an ask, and a stream whose reply a broken proxy follows with junk: the head apart from the rest, or
    all in one write (one read for the client's parser), with a Content-Length, gzip-compressed, or an event a chunk."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    junk = b"junk from a broken proxy\r\n\r\n"

    def stream(connection: socket.socket) -> None:
        if how == "head-first":
            connection.sendall(head + b"Content-Length: %d\r\n\r\n" % len(SSE))
            time.sleep(0.05)
            connection.sendall(SSE + junk)
        elif how == "one-write":
            connection.sendall(head + b"Content-Length: %d\r\n\r\n" % len(SSE) + SSE + junk)
        elif how == "one-write-gzip":  # compressed, as a proxy may
            body = gzip.compress(SSE)
            connection.sendall(head + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body + junk)
        else:
            connection.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKED + junk)

    return login_ask_then(stream)


@pytest.mark.parametrize("how", ["head-first", "one-write", "one-write-gzip", "one-write-chunked"])
def test_a_reply_whose_body_a_broken_proxy_follows_with_junk_is_delivered_and_its_connection_not_reused(
        monkeypatch, how):
    if how != "head-first" and not pool.PAUSING_PARSER:
        pytest.skip("junk in the head's read needs aiohttp's C parser, 3.14 or later")
    with RawServer(with_junk(how)) as raw:
        monkeypatch.setenv("G4F_GPTALK_URL", raw.url)
        assert [asyncio.run(partial_chat()) for _ in range(2)] == [("Hi there", None)] * 2
        assert len(raw.connections) == 2  # the one the junk came on was not handed out again


def test_a_large_compressed_error_page_on_the_stream_is_decompressed_and_quoted(monkeypatch):
    page = b"<html>" + b"oops " * 20000 + b"</html>"  # 100 KB, read through the stream's one-byte first buffer

    def stream(connection: socket.socket) -> None:
        body = gzip.compress(page)
        connection.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n"
                           b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    with RawServer(login_ask_then(stream)) as raw:
        monkeypatch.setenv("G4F_GPTALK_URL", raw.url)
        text, error = asyncio.run(partial_chat())
    assert text == "" and type(error).__name__ == "ResponseError"
    assert str(error).startswith("GPTalk stream: HTTP 500: <html>oops oops")


TWO_CHATS = """
import asyncio
from g4f_gptalk import GPTalk

async def chat():
    return "".join([piece async for piece in GPTalk.create_async_generator("", [{"role": "user", "content": "Hi"}])])

print(asyncio.run(chat()))
print(asyncio.run(chat()))
"""


@pytest.mark.skipif(not pool.PAUSING_PARSER, reason="junk in the head's read needs aiohttp's C parser, 3.14 or later")
def test_a_reply_followed_by_junk_in_one_tls_record_is_delivered_over_https(tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with RawServer(with_junk("one-write-chunked"), ssl_context=context) as raw:
        # a fresh interpreter: aiohttp reads SSL_CERT_FILE when it makes its default context, at import
        out = run_python(TWO_CHATS, env={"SSL_CERT_FILE": str(tmp_path / "ca.pem"), "G4F_GPTALK_URL": raw.url})
        assert out == "Hi there\nHi there\n"
        assert raw.requests == 5 and len(raw.connections) == 4  # two TCP connections, each with its TLS wrapper
