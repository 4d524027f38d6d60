"""The GPTalk protocol, checked against what the local server saw on the wire."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
import threading
import time

import g4f
import g4f.errors
import pytest
from g4f.Provider.helper import format_prompt

from g4f_gptalk import GPTalk
from g4f_gptalk.protocol import auth, token_store
from g4f_gptalk.protocol.errors import InvalidRequestError
from g4f_gptalk.runtime.engine import close_connections
from g4f_gptalk.testing.server import Faults, GPTalkServer, echo_reply

from .conftest import HELLO, chat, chat_async, partial_chat

# what g4f's get_model raises for a model a provider does not list (0.2.x: ModelNotSupportedError)
REFUSED_MODEL = tuple(getattr(g4f.errors, name) for name in ("ModelNotFoundError", "ModelNotSupportedError")
                      if hasattr(g4f.errors, name))
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Wie geht's? 你好 🌍"},
    {"role": "assistant", "content": "Gut."},
    {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "image_url"}, {"type": "text", "text": "now?"}]},
]


def test_streamed_reply_equals_what_the_server_sent_in_many_events(server):
    deltas = chat(CONVERSATION)
    reply = echo_reply(format_prompt(CONVERSATION))
    assert "".join(deltas) == reply
    assert len(deltas) == math.ceil(len(reply) / server.chunk_chars) > 20  # one delta per event
    assert any(ord(ch) > 0xFFFF for ch in "".join(deltas))  # a 4-byte UTF-8 character came through intact


def test_each_delta_reaches_the_caller_before_the_server_sends_the_next_event(monkeypatch):
    async def lockstep() -> list[str]:
        delivered = asyncio.Condition()
        deltas: list[str] = []

        async def after_previous_delta(index: int) -> None:  # the server sends event N once N deltas arrived
            async with delivered:
                await delivered.wait_for(lambda: len(deltas) >= index)

        async with GPTalkServer() as server:
            server.before_event = after_previous_delta
            monkeypatch.setenv("G4F_GPTALK_URL", server.url)
            # a provider that held back a delta would stall here, and stream_timeout would end the chat
            async for delta in GPTalk.create_async_generator("", HELLO, stream_timeout=5):
                async with delivered:
                    deltas.append(delta)
                    delivered.notify_all()
            await asyncio.to_thread(close_connections)
        return deltas

    deltas = asyncio.run(lockstep())
    assert "".join(deltas) == echo_reply("Hello") and len(deltas) > 10


def test_server_receives_g4fs_format_prompt_of_the_messages(server):
    chat(CONVERSATION)
    assert server.prompts == [format_prompt(CONVERSATION)]  # g4f 6+ reduces content parts to their text


def test_requests_carry_the_web_clients_headers_and_protocol_fields(server):
    chat(HELLO)
    (login_step, login_headers, login_body), (ask_step, ask_headers, ask_body) = server.requests[:2]
    assert (login_step, ask_step) == ("login", "ask")
    assert login_body["platform"] == "fingerprint" and re.fullmatch(r"[0-9a-f]{32}", login_body["fingerprint"])
    for headers in (login_headers, ask_headers):
        assert headers["x-auth-appid"] == "2229"
        assert abs(int(headers["x-auth-timestamp"]) - time.time()) < 60
        assert headers["origin"] == server.url and "Chrome" in headers["user-agent"]
    assert ask_headers["authorization"].startswith("Bearer ") and len(ask_headers["authorization"]) > 20
    assert ask_body == {
        "content": "Hello", "accept": "stream", "from": 1, "model": "gpt-3.5-turbo", "is_mobile": 0,
        "user_agent": login_headers["user-agent"], "is_open_ctx": 0, "prompt": "", "roid": 111, "temperature": 0,
        "ctx_msg_count": 3, "created_at": ask_body["created_at"],
    }
    assert abs(ask_body["created_at"] - time.time()) < 60


def test_each_login_uses_a_new_random_fingerprint(server):
    chat(HELLO)
    GPTalk.forget_tokens()
    chat(HELLO)
    fingerprints = {body["fingerprint"] for step, _, body in server.requests if step == "login"}
    assert len(fingerprints) == 2


def test_a_token_serves_five_asks_then_a_new_login(server):
    for n in range(11):
        assert "".join(chat([{"role": "user", "content": f"n{n}"}])) == echo_reply(f"n{n}")
    assert server.stats["logins"] == 3 and server.stats["asks"] == 11 and server.stats["rejected"] == 0


def test_an_expiring_token_is_replaced_before_the_server_would_reject_it(start_server, monkeypatch):
    server = start_server(token_ttl=60)
    chat(HELLO)
    chat(HELLO)  # the token is fresh: reused
    assert server.stats["logins"] == 1
    later = time.time() + 60 - auth.CLOCK_SKEW + 1  # the token's clock: within CLOCK_SKEW of its expiry
    clock = type("Clock", (), {"time": staticmethod(lambda: later)})
    monkeypatch.setattr(auth, "time", clock)
    monkeypatch.setattr(token_store, "time", clock)
    chat(HELLO)  # the server would still take it, but it is not sent: a new login instead
    assert server.stats["logins"] == 2 and server.stats["rejected"] == 0


def test_forget_tokens_forgets_a_service_however_its_url_is_written(server):
    chat(HELLO)
    GPTalk.forget_tokens(server.url.replace("http://127.0.0.1", "HTTP://127.0.0.1") + "/")  # as yarl writes it: 1
    chat(HELLO)
    assert server.stats["logins"] == 2  # before: forgotten only when written exactly as the calls key it


def test_millisecond_expiry_times_are_understood():
    assert auth.expiry_of({"expires_at": 1_900_000_000_000}) == 1_900_000_000
    assert auth.expiry_of({"expires_at": "1900000000"}) == 1_900_000_000


def test_the_service_url_setting_wins_at_each_call(start_server, monkeypatch):
    first, second = start_server(), start_server()
    chat(HELLO)
    monkeypatch.setenv("G4F_GPTALK_URL", first.url + "/")
    chat(HELLO)
    assert (first.stats["asks"], second.stats["asks"]) == (1, 1)


def test_an_empty_or_auto_model_means_the_default_and_an_unknown_one_is_what_g4fs_get_model_makes_it(server):
    async def ask_with(models: list[str | None]) -> None:
        for model in models:
            async for _ in GPTalk.create_async_generator(model, HELLO):  # type: ignore[arg-type]
                pass

    asyncio.run(ask_with(["", None, "auto", "gpt-3.5-turbo"]))
    assert [body["model"] for step, _, body in server.requests if step == "ask"] == ["gpt-3.5-turbo"] * 4
    try:  # g4f 0.x to 6.x refuse a model a provider does not list; 7.x and 8.x pass it on
        g4f_says = GPTalk.get_model("gpt-4")
    except REFUSED_MODEL:
        with pytest.raises(REFUSED_MODEL, match="gpt-4"):
            asyncio.run(ask_with(["gpt-4"]))
        assert server.stats["asks"] == 4
    else:
        asyncio.run(ask_with(["gpt-4"]))
        assert server.requests[-2][2]["model"] == g4f_says == "gpt-4"


def test_chat_completion_create_sync_streams_and_joins(server):
    stream = g4f.ChatCompletion.create("gpt-3.5-turbo", HELLO, provider=GPTalk, stream=True)
    assert "".join(stream) == echo_reply("Hello")
    assert g4f.ChatCompletion.create("gpt-3.5-turbo", HELLO, provider=GPTalk) == echo_reply("Hello")
    assert server.stats["logins"] == 1 and server.stats["asks"] == 2


def test_chat_completion_create_async(server):
    async def both() -> tuple[str, str]:
        whole = await g4f.ChatCompletion.create_async("gpt-3.5-turbo", HELLO, provider=GPTalk)
        pieces = [piece async for piece in g4f.ChatCompletion.create_async(
            "gpt-3.5-turbo", HELLO, provider=GPTalk, stream=True)]
        return whole, "".join(pieces)

    assert asyncio.run(both()) == (echo_reply("Hello"), echo_reply("Hello"))


def test_a_long_running_loop_and_sync_calls_in_other_threads_share_tokens_safely(server):
    long_running = asyncio.new_event_loop()
    thread = threading.Thread(target=long_running.run_forever, daemon=True)
    thread.start()
    try:
        async def chats() -> list[str]:
            return ["".join(await chat_async([{"role": "user", "content": f"async {i}"}])) for i in range(15)]

        in_server = asyncio.run_coroutine_threadsafe(chats(), long_running)
        sync_replies = [g4f.ChatCompletion.create("", [{"role": "user", "content": f"sync {i}"}], provider=GPTalk)
                        for i in range(15)]
        async_replies = in_server.result(timeout=60)
    finally:
        long_running.call_soon_threadsafe(long_running.stop)
        thread.join(timeout=10)
        long_running.close()
    assert sync_replies == [echo_reply(f"sync {i}") for i in range(15)]
    assert async_replies == [echo_reply(f"async {i}") for i in range(15)]
    assert server.stats["asks"] == 30 and server.stats["rejected"] == 0  # never a sixth ask on a token


def test_chats_in_one_loop_share_one_keep_alive_connection(server):
    async def sequential() -> None:
        for _ in range(20):
            await chat_async(HELLO)

    asyncio.run(sequential())
    assert server.stats["streams"] == 20 and server.stats["connections"] == 1


def test_tokens_fingerprints_and_proxy_passwords_stay_out_of_logs_errors_and_reprs(server, monkeypatch, capsys, caplog):
    monkeypatch.setattr(g4f.debug, "logging", True)
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("G4F_GPTALK_URL", "http://127.0.0.1:9")  # nothing listens there: only the proxy gets through
    proxy = server.url.replace("http://", "http://agent:hunter2@")
    reply = g4f.ChatCompletion.create(GPTalk.default_model, HELLO, provider=GPTalk, proxy=proxy)  # g4f's logs count too
    server.faults = Faults(stream=["cut"])
    _text, cut_error = asyncio.run(partial_chat(HELLO, proxy=proxy))
    _text, proxy_error = asyncio.run(partial_chat(HELLO, proxy="http://agent:hunter2@127.0.0.1:9", timeout=5))
    assert reply == echo_reply("Hello") and cut_error is not None and proxy_error is not None

    credentials = base64.b64encode(b"agent:hunter2").decode()
    assert {headers.get("proxy-authorization") for _, headers, _ in server.requests} == {f"Basic {credentials}"}
    fingerprints = [body["fingerprint"] for step, _, body in server.requests if step == "login"]
    tokens = [headers["authorization"].removeprefix("Bearer ") for step, headers, _ in server.requests if step == "ask"]
    stream_tokens = [query["token"] for step, _, query in server.requests if step == "stream"]
    # the two chats through the proxy shared one login and its token; each had its own stream token
    assert (len(fingerprints), len(set(tokens)), len(set(stream_tokens))) == (1, 1, 2)
    secrets = {"hunter2", credentials, *fingerprints, *tokens, *stream_tokens}
    shown = capsys.readouterr()
    seen = "\n".join([shown.out, shown.err, caplog.text, *(f"{e}\n{e!r}" for e in (cut_error, proxy_error)),
                      repr(auth.caches), repr(vars(GPTalk))])
    assert "GPTalk login: new token" in seen  # the debug log was on and captured
    assert [secret for secret in secrets if secret in seen] == []


def test_requests_go_through_the_http_proxy(server, monkeypatch):
    # Nothing listens at the service address; only a request sent through the proxy (in absolute form, which the
    # local server also answers) can reach a GPTalk server.
    monkeypatch.setenv("G4F_GPTALK_URL", "http://127.0.0.1:9")
    assert "".join(chat(HELLO, proxy=server.url)) == echo_reply("Hello")
    assert server.stats["logins"] == 1 and server.stats["streams"] == 1
    assert server.requests[0][1]["host"] == "127.0.0.1:9"


class Socks5Relay:
    """A minimal SOCKS5 proxy on 127.0.0.1 (no authentication, CONNECT only), counting what it relayed."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return f"socks5://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _version, methods = await reader.readexactly(2)
        await reader.readexactly(methods)
        writer.write(b"\x05\x00")  # no authentication
        _version, _command, _reserved, kind = await reader.readexactly(4)
        if kind == 1:
            host = ".".join(str(part) for part in await reader.readexactly(4))
        else:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        self.connects.append((host, port))
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


def test_requests_go_through_a_socks5_proxy(server):
    async def through_socks() -> tuple[str, list[tuple[str, int]]]:
        relay = Socks5Relay()
        async with relay as proxy:
            reply = "".join(await chat_async(HELLO, proxy=proxy))
            await asyncio.to_thread(close_connections)
        return reply, relay.connects

    reply, connects = asyncio.run(through_socks())
    assert reply == echo_reply("Hello") and connects == [("127.0.0.1", server.port)]  # one pooled connection, via SOCKS
    assert server.stats["logins"] == 1 and server.stats["streams"] == 1



def test_a_request_that_fails_through_a_socks5_proxy_is_not_sent_again(server):
    # Only GPTalk's own connector tells a new connection from a reused one: through a SOCKS proxy nothing is resent.
    server.faults = Faults(login=["drop"])

    async def through_socks() -> tuple[str, BaseException | None]:
        async with Socks5Relay() as proxy:
            result = await partial_chat(HELLO, proxy=proxy)
            await asyncio.to_thread(close_connections)
        return result

    text, error = asyncio.run(through_socks())
    assert isinstance(error, g4f.errors.ResponseError) and text == ""
    assert str(error).startswith("GPTalk login: ") and str(error).endswith("without an answer")
    assert server.stats["logins"] == 1


def test_temperature_reaches_the_ask_and_the_default_is_the_web_clients_0(server):
    from g4f.client import Client

    chat(HELLO, temperature=0.7)
    chat(HELLO)
    Client().chat.completions.create(model="gpt-3.5-turbo", messages=HELLO, provider=GPTalk, temperature=1.5)
    assert [body["temperature"] for step, _, body in server.requests if step == "ask"] == [0.7, 0, 1.5]


@pytest.mark.parametrize("value", [-0.1, 2.5, "1", True, float("nan"), float("inf")])
def test_a_temperature_outside_0_to_2_is_refused_before_any_request(server, value):
    _text, error = asyncio.run(partial_chat(HELLO, temperature=value))
    assert isinstance(error, InvalidRequestError)
    assert str(error) == f"GPTalk: temperature={value!r} is not a number from 0 to 2"
    assert server.stats["logins"] == 0


def test_arguments_the_service_has_no_setting_for_are_ignored_with_one_debug_line(server, monkeypatch, capsys):
    monkeypatch.setattr(g4f.debug, "logging", True)
    reply = chat(HELLO, max_tokens=5, stop=["GPTalk"], top_p=0.5, web_search=True, media=None, conversation=None,
                 tool_calls=[], ignore_stream=True)
    assert "".join(reply) == echo_reply("Hello")
    said = [line for line in capsys.readouterr().out.splitlines() if "ignored" in line]
    assert said == ["GPTalk: ignored max_tokens, stop, top_p, web_search: the service has no such setting"]


def test_gfours_clients_name_gptalk_and_the_model_and_legacy_text_stays_the_reply(server, monkeypatch):
    from g4f.client import AsyncClient, Client

    monkeypatch.setattr(GPTalk, "last_model", None, raising=False)  # as in a fresh process, whatever ran before
    messages = [{"role": "user", "content": "Hello"}]
    answers = [Client().chat.completions.create(model="GPTalk:gpt-3.5-turbo", messages=messages, provider="GPTalk"),
               next(iter(Client().chat.completions.create(model="gpt-3.5-turbo", messages=messages, provider="GPTalk",
                                                          stream=True))),
               asyncio.run(AsyncClient().chat.completions.create(model="gpt-3.5-turbo", messages=messages,
                                                                 provider="GPTalk"))]
    named = [(getattr(answer, "provider", "GPTalk"), getattr(answer, "model", "gpt-3.5-turbo")) for answer in answers]
    assert named == [("GPTalk", "gpt-3.5-turbo")] * 3  # g4f 8's sync Client said (None, None) before
    pieces = list(g4f.ChatCompletion.create("gpt-3.5-turbo", messages, provider="GPTalk", stream=True))
    assert all(isinstance(piece, str) for piece in pieces) and "".join(pieces) == echo_reply("Hello")
    assert g4f.ChatCompletion.create("gpt-3.5-turbo", messages, provider="GPTalk") == echo_reply("Hello")
