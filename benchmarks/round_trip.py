"""GPTalk's calling patterns against a raw client over https with a 20 ms round trip, as on the internet, with and
without a body that ends 5 ms after ``data: [DONE]`` (as behind many proxies).

    python benchmarks/round_trip.py [--rounds 7] [--chats 20] [--results DIR]

The local GPTalk server serves https with a certificate from a throwaway CA (trustme) that the client trusts, behind
a TCP relay on loopback that holds every chunk for half the round trip in each direction (there is no netem here).
Each round runs every calling pattern with fresh connections and tokens, in a changing order, under each scenario;
it prints per-chat medians, per-round paired ratios with their spread, and the connections and logins the server
counted. The table goes to ``DIR/round_trip.md`` only if ``--results`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import trustme

CA = trustme.CA()
_scratch = tempfile.TemporaryDirectory()  # removed when the run ends
CA.cert_pem.write_to_path(f"{_scratch.name}/ca.pem")
os.environ["SSL_CERT_FILE"] = f"{_scratch.name}/ca.pem"  # before aiohttp makes its default SSL context

import g4f  # noqa: E402
from clients import RawClient  # noqa: E402
from g4f.client import AsyncClient, Client  # noqa: E402

from g4f_gptalk import GPTalk  # noqa: E402
from g4f_gptalk.runtime.engine import close_connections  # noqa: E402
from g4f_gptalk.testing.server import Faults, ServerThread, echo_reply  # noqa: E402

ONE_WAY = 0.010  # seconds each chunk is held in each direction: a 20 ms round trip
SCENARIOS = {"no tail": 0.0, "body ends 5 ms after [DONE]": 0.005}
RAW, ASYNC = "raw aiohttp, each body read to its end", "GPTalk async (`create_async`), one long-lived loop"


class DelayingRelay:
    """``127.0.0.1:<port>`` forwarding to ``upstream``, every chunk held ``delay`` seconds, order kept."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port, self.delay = upstream_port, delay
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> DelayingRelay:
        self.thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0), self.loop).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            up_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await held.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)

        delivery = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(65536):
                held.put_nowait((time.monotonic() + self.delay, chunk))
            held.put_nowait((time.monotonic() + self.delay, b""))
            await delivery
        finally:
            delivery.cancel()


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"chat {i}"}]


def raw_chats(n: int) -> None:
    async def run() -> None:
        client = RawClient(os.environ["G4F_GPTALK_URL"])
        try:
            for i in range(n):
                assert "".join([delta async for delta in client.chat(messages(i))]) == echo_reply(f"chat {i}")
        finally:
            await client.close()

    asyncio.run(run())


def async_chats(n: int) -> None:
    async def run() -> None:
        for i in range(n):
            text = await g4f.ChatCompletion.create_async("gpt-3.5-turbo", messages(i), provider=GPTalk)
            assert text == echo_reply(f"chat {i}")

    asyncio.run(run())


def async_chats_without_login_ahead(n: int) -> None:
    """As ``async_chats``, each login made when a chat needs it (``GPTalk.login_ahead = False``)."""
    GPTalk.login_ahead = False
    try:
        async_chats(n)
    finally:
        GPTalk.login_ahead = True


def new_loop_per_chat(n: int) -> None:
    """``asyncio.run`` around each chat, as scripts, bots and Celery tasks call g4f."""
    for i in range(n):
        text = asyncio.run(g4f.ChatCompletion.create_async("gpt-3.5-turbo", messages(i), provider=GPTalk))
        assert text == echo_reply(f"chat {i}")


def async_client_per_chat(n: int) -> None:
    """g4f's README shape: ``asyncio.run(main())`` around ``AsyncClient``, once per prompt."""
    async def one(i: int) -> str:
        response = await AsyncClient().chat.completions.create(model="gpt-3.5-turbo", messages=messages(i),
                                                                provider="GPTalk")
        return str(response.choices[0].message.content)

    for i in range(n):
        assert asyncio.run(one(i)) == echo_reply(f"chat {i}")


def async_to_sync_per_request(n: int) -> None:
    """Django's ``async_to_sync`` around an async view's chat: a fresh loop per call."""
    from asgiref.sync import async_to_sync

    async def view(i: int) -> str:  # g4f's create_async returns a coroutine but is not one: asgiref would warn
        return await g4f.ChatCompletion.create_async("gpt-3.5-turbo", messages(i), provider=GPTalk)

    for i in range(n):
        assert async_to_sync(view)(i) == echo_reply(f"chat {i}")


def sync_create(n: int) -> None:
    for i in range(n):
        assert g4f.ChatCompletion.create("gpt-3.5-turbo", messages(i), provider=GPTalk) == echo_reply(f"chat {i}")


def sync_stream(n: int) -> None:
    for i in range(n):
        pieces = g4f.ChatCompletion.create("gpt-3.5-turbo", messages(i), provider=GPTalk, stream=True)
        assert "".join(pieces) == echo_reply(f"chat {i}")


def thread_per_request(n: int) -> None:
    """Each sync chat on a thread of its own that ends with it, as Flask's dev server or Django's runserver do."""
    for i in range(n):
        thread = threading.Thread(target=sync_create_one, args=(i,))
        thread.start()
        thread.join()


def sync_create_one(i: int) -> None:
    assert g4f.ChatCompletion.create("gpt-3.5-turbo", messages(i), provider=GPTalk) == echo_reply(f"chat {i}")


def sync_client(n: int) -> None:
    client = Client()
    for i in range(n):
        response = client.chat.completions.create(model="gpt-3.5-turbo", messages=messages(i), provider="GPTalk")
        assert response.choices[0].message.content == echo_reply(f"chat {i}")


PATTERNS: dict[str, Callable[[int], None]] = {
    RAW: raw_chats,
    ASYNC: async_chats,
    "GPTalk async, no login ahead of need": async_chats_without_login_ahead,
    "a new loop per chat (`asyncio.run(create_async)`)": new_loop_per_chat,
    "`AsyncClient` under `asyncio.run` per chat": async_client_per_chat,
    "`async_to_sync` per request": async_to_sync_per_request,
    "sync `ChatCompletion.create`": sync_create,
    "sync streaming": sync_stream,
    "sync `Client`": sync_client,
    "sync, a new thread per chat": thread_per_request,
}


def afresh() -> None:
    """No token, and no pooled connection: each pattern starts as a new process would."""
    GPTalk.forget_tokens()
    close_connections()


def in_a_new_thread(run: Callable[[int], None], n: int) -> None:
    """Each pattern in a thread of its own, as its own program would run it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(n)
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def orders(rounds: int) -> Iterator[list[str]]:
    names = list(PATTERNS)
    for index in range(-1, rounds):  # round -1 warms up and is not counted
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        yield order[::-1] if index % 2 else order


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chats", type=int, default=20)
    parser.add_argument("--results", type=Path, help="a folder for round_trip.md (default: print only)")
    args = parser.parse_args()
    g4f.debug.version_check = False
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CA.issue_cert("127.0.0.1").configure_cert(context)
    samples: dict[tuple[str, str], list[dict[str, float]]] = {
        (scenario, name): [] for scenario in SCENARIOS for name in PATTERNS}
    with ServerThread(ssl_context=context) as server, DelayingRelay(server.port, ONE_WAY) as relay:
        os.environ["G4F_GPTALK_URL"] = f"https://127.0.0.1:{relay.port}"
        for index, order in enumerate(orders(args.rounds)):
            for scenario, tail in SCENARIOS.items():
                server.faults = Faults(tail_after_done=tail)
                for name in order:
                    afresh()
                    before = dict(server.stats)
                    started = time.perf_counter()
                    in_a_new_thread(PATTERNS[name], args.chats)
                    wall = time.perf_counter() - started
                    if index > 0:
                        samples[(scenario, name)].append({"per_chat": wall / args.chats, **{
                            key: server.stats[key] - before.get(key, 0) for key in ("connections", "logins", "asks")}})
    table = report(samples, args.chats, args.rounds)
    print(table)
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "round_trip.md").write_text(table + "\n")


def spread(values: list[float]) -> str:
    """The median of per-round ratios, with their range (or a flag when there is one round only)."""
    if len(values) == 1:
        return f"{values[0]:.3f} (1 round)"
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def report(samples: dict[tuple[str, str], list[dict[str, float]]], chats: int, rounds: int) -> str:
    rows = [f"| {chats} chats, https, 20 ms round trip, {rounds} rounds | client | ms per chat | ratio to raw, median "
            "(range) | ratio to GPTalk async, median (range) | TCP connections | logins |", "|---" * 7 + "|"]
    for scenario in SCENARIOS:
        for name in PATTERNS:
            runs = samples[(scenario, name)]

            def ratios(baseline: str, runs: list[dict[str, float]] = runs, scenario: str = scenario) -> list[float]:
                return [mine["per_chat"] / theirs["per_chat"]
                        for mine, theirs in zip(runs, samples[(scenario, baseline)], strict=True)]

            logins = max(run["logins"] for run in runs)
            # one login per five asks, and at most one more: fetched ahead of need as the last ask went
            assert math.ceil(chats / 5) <= logins <= math.ceil(chats / 5) + 1, (scenario, name, logins)
            rows.append(f"| {scenario} | {name} | {statistics.median(run['per_chat'] for run in runs) * 1000:.1f} "
                        f"| {spread(ratios(RAW))} | {spread(ratios(ASYNC))} "
                        f"| {max(run['connections'] for run in runs):.0f} | {logins:.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
