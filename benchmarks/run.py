"""Benchmarks: GPTalk against the wire minimum (raw) and the seed design, side by side in one run.

    python benchmarks/run.py [--rounds 7] [--sequential 400] [--results DIR] [--plot]

Starts ``g4f-gptalk serve`` in its own process (so client CPU is the client's alone), runs every scenario for every
client in a changing order over several rounds, and prints medians as Markdown tables; every ratio comes with its
range over the rounds, or says it had one round. ``--results DIR`` also writes ``results.md`` there, and ``--plot``
``reply_length.png`` (that needs matplotlib). ``tox`` runs it once, small, so that it keeps working; ``tox -e bench``
runs it in full.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import operator
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import g4f
from clients import RawClient, SeedClient

from g4f_gptalk import GPTalk
from g4f_gptalk.protocol.sse import ReplyText
from g4f_gptalk.runtime.engine import close_connections, engine
from g4f_gptalk.testing.server import GPTalkServer, echo_reply

Chat = Callable[[list[dict[str, str]]], AsyncIterator[str]]
CLIENTS = ["raw", "seed", "GPTalk", "g4f async"]
SYNC = "g4f sync"  # g4f.ChatCompletion.create, run on the engine's loop; sequential chats only
SYNC_STREAM = "g4f sync stream"  # the same with stream=True, each piece handed to the calling thread
LOOP_PER_CHAT = "GPTalk, asyncio.run per chat"  # what g4f's sync API would do: a new event loop per chat
SCALING = [100, 500, 1000, 3000]  # concurrent chats: GPTalk's CPU per chat must stay flat
SCALING_ONLY = {f"{n} concurrent" for n in SCALING if n > 500}  # run for GPTalk and raw only
LENGTHS = [375, 750, 1500, 3000]  # events per reply
FIRST_EVENT_DELAY = 0.05


@contextlib.contextmanager
def local_server() -> Iterator[str]:
    """``g4f-gptalk serve`` in a process of its own, so that client CPU is the client's alone; yields its URL."""
    server = subprocess.Popen([sys.executable, "-m", "g4f_gptalk", "serve", "--port", "0"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None
        yield server.stdout.readline().split()[-1]
    finally:
        server.terminate()
        server.wait(timeout=10)


def server_stats(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/_local/stats", timeout=10) as response:
        return json.load(response)


def set_faults(url: str, **faults: object) -> None:
    request = urllib.request.Request(url + "/_local/faults", data=json.dumps(faults).encode(), method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def prompt_for(events: int) -> str:
    """A prompt whose echo reply takes ``events`` events of 3 characters."""
    return "x" * (3 * events - len(echo_reply("")))


def wire_bytes(events: int) -> int:
    reply = echo_reply(prompt_for(events))
    return sum(len(GPTalkServer._event(reply[: 3 * (i + 1)])) for i in range(events))


def make_client(name: str, url: str) -> tuple[Chat, Callable[[], object]]:
    """A fresh client (no token, no session) and what closes it."""
    GPTalk.forget_tokens()
    if name == "raw":
        raw = RawClient(url)
        return raw.chat, raw.close
    if name == "seed":
        SeedClient.url, SeedClient._auth, SeedClient.used_times = url, None, 0
        return SeedClient.chat, closed
    if name == "GPTalk":
        return (lambda messages: GPTalk.create_async_generator("gpt-3.5-turbo", messages)), closed
    return (lambda messages: g4f.ChatCompletion.create_async("gpt-3.5-turbo", messages, provider=GPTalk, stream=True)), \
        closed


async def closed() -> None:
    """The engine's pooled connections closed, so that the next client starts without them."""
    await asyncio.to_thread(close_connections)


async def consume(chat: Chat, prompt: str) -> tuple[str, float | None]:
    first = None
    parts = []
    async for delta in chat([{"role": "user", "content": prompt}]):
        if first is None:
            first = time.time()
        parts.append(delta)
    return "".join(parts), first


def client_order(round_index: int) -> list[str]:
    """Who goes first rotates each round, and every other round runs backwards, so that no client always follows
    the same one (after the seed design's hundreds of connections, the next client pays for their teardown)."""
    shift = round_index % len(CLIENTS)
    order = CLIENTS[shift:] + CLIENTS[:shift]
    return order[::-1] if round_index % 2 else order


def counted(url: str, run: Callable[[], object]) -> dict[str, float]:
    """Wall and client CPU time of ``run()``, what the server counted meanwhile, and what ``run`` returned."""
    gc.collect()  # the garbage of the client before is not this one's to collect
    before = server_stats(url)
    wall, cpu = time.perf_counter(), time.process_time()
    extra = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = server_stats(url)
    counts = {key: after.get(key, 0) - before.get(key, 0) for key in ("logins", "connections", "asks")}
    return {"wall": wall, "cpu": cpu, **counts, **(extra if isinstance(extra, dict) else {})}


def measure(name: str, url: str, scenario: Callable[[Chat], object]) -> dict[str, float]:
    """Run ``scenario`` with a fresh client in a fresh loop."""

    async def main() -> object:
        chat, close = make_client(name, url)
        try:
            return await scenario(chat)  # type: ignore[misc]
        finally:
            await close()  # type: ignore[misc]

    return counted(url, lambda: asyncio.run(main()))


def afresh() -> None:
    """No token, and no pooled connection: as in a new process."""
    GPTalk.forget_tokens()
    close_connections()


def sync_chats(url: str, n: int, client: str) -> dict[str, float]:
    """``n`` sequential sync chats on new connections, like each async run: through ``g4f.ChatCompletion.create``,
    which runs GPTalk on the engine's loop, or through ``asyncio.run`` of GPTalk alone, a new event loop per chat, as
    g4f's own sync wrapper would."""
    afresh()

    async def alone(messages: list[dict[str, str]]) -> str:
        return "".join([delta async for delta in GPTalk.create_async_generator("gpt-3.5-turbo", messages)])

    def run() -> None:
        for i in range(n):
            messages = [{"role": "user", "content": f"chat {i}"}]
            text = g4f.ChatCompletion.create("gpt-3.5-turbo", messages, provider=GPTalk) if client == SYNC \
                else asyncio.run(alone(messages))
            assert text == echo_reply(f"chat {i}")

    def in_a_new_thread() -> None:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    return counted(url, in_a_new_thread)


def sync_interleaved(url: str, blocks: int, size: int) -> dict[str, float]:
    """What g4f's sync API costs per chat over GPTalk async, measured side by side in the calling thread:
    alternating blocks of ``size`` chats each of async GPTalk, sync ``g4f.ChatCompletion.create`` and the same
    streamed, all on the engine's loop (so on the same connection and token), the async chats relayed to a
    long-lived loop of the calling thread, after one block each to warm up.
    Microseconds of wall and CPU time per chat over async, and the CPU ratios to async."""
    afresh()
    spent = {kind: [0.0, 0.0] for kind in ("async", "sync", "stream")}

    def sync_block(stream: bool) -> None:
        for i in range(size):
            messages = [{"role": "user", "content": f"chat {i}"}]
            reply = g4f.ChatCompletion.create("gpt-3.5-turbo", messages, provider=GPTalk, stream=stream)
            assert (reply if isinstance(reply, str) else "".join(reply)) == echo_reply(f"chat {i}")

    callers_loop = asyncio.new_event_loop()
    run_block = {"async": lambda: callers_loop.run_until_complete(sequential(size)(  # type: ignore[arg-type]
                     lambda messages: GPTalk.create_async_generator("gpt-3.5-turbo", messages))),
                 "sync": lambda: sync_block(False), "stream": lambda: sync_block(True)}
    gc.collect()
    for block in range(blocks + 1):
        order = list(spent)[block % 3:] + list(spent)[:block % 3]
        for kind in order[::-1] if block % 2 else order:
            wall, cpu = time.perf_counter(), time.process_time()
            run_block[kind]()
            if block:
                spent[kind][0] += time.perf_counter() - wall
                spent[kind][1] += time.process_time() - cpu
    callers_loop.close()
    chats = blocks * size
    return {**{key: (spent["sync"][i] - spent["async"][i]) / chats * 1e6 for i, key in enumerate(("wall", "cpu"))},
            "sync_cpu_ratio": spent["sync"][1] / spent["async"][1],
            "stream_cpu_ratio": spent["stream"][1] / spent["async"][1]}


def shared_file_cost(url: str, blocks: int, size: int) -> dict[str, float]:
    """What the machine's shared token file costs a chat: alternating blocks of ``size`` sequential async chats with
    it on and off (``G4F_GPTALK_SHARED_TOKENS``), in one loop, each block with its own fresh token cache; microseconds
    of CPU per chat, on over off, after one block each to warm up."""
    spent = {"on": 0.0, "off": 0.0}
    chat: Chat = lambda messages: GPTalk.create_async_generator("gpt-3.5-turbo", messages)  # noqa: E731

    async def main() -> None:
        for block in range(blocks + 1):
            for kind in (["on", "off"] if block % 2 else ["off", "on"]):
                os.environ["G4F_GPTALK_SHARED_TOKENS"] = "1" if kind == "on" else "0"
                GPTalk.forget_tokens()
                cpu = time.process_time()
                await sequential(size)(chat)  # type: ignore[misc]
                if block:
                    spent[kind] += time.process_time() - cpu
        os.environ.pop("G4F_GPTALK_SHARED_TOKENS")
        await closed()

    asyncio.run(main())
    return {"cpu": (spent["on"] - spent["off"]) / (blocks * size) * 1e6}


def sequential(n: int) -> Callable[[Chat], object]:
    async def run(chat: Chat) -> None:
        for i in range(n):
            text, _ = await consume(chat, f"chat {i}")
            assert text == echo_reply(f"chat {i}")
    return run


def concurrent(n: int) -> Callable[[Chat], object]:
    async def run(chat: Chat) -> None:
        texts = await asyncio.gather(*(consume(chat, f"chat {i}") for i in range(n)))
        assert [text for text, _ in texts] == [echo_reply(f"chat {i}") for i in range(n)]
    return run


ON_ENGINE = "GPTalk on the engine's loop"


def interleaved(url: str, blocks: int, size: int, together: bool) -> dict[str, float]:
    """GPTalk against raw in one event loop, in alternating blocks of ``size`` chats (one after another, or all
    ``together``), so that both meet the same machine from moment to moment: the ratios of their total wall and CPU
    time over ``blocks`` blocks each, after one block each to warm up. Its cost per chat includes what a chat's
    code costs when the machine's caches went cold while it waited for the server. A third client takes its turns
    too: GPTalk with each block run on the engine's own loop, where a chat does not hop between threads (``_on_engine``
    ratios): the cost of GPTalk's code without the hops."""

    async def main() -> dict[str, float]:
        clients = {name: make_client(name, url) for name in ("GPTalk", "raw")}
        names = ["GPTalk", "raw", ON_ENGINE]
        spent = {name: [0.0, 0.0] for name in names}
        for block in range(blocks + 1):
            turn = names[block % 3:] + names[:block % 3]
            for name in (turn if block % 2 else turn[::-1]):
                chats = (concurrent if together else sequential)(size)(clients["raw" if name == "raw" else "GPTalk"][0])
                wall, cpu = time.perf_counter(), time.process_time()
                if name == ON_ENGINE:
                    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(chats, engine().loop))  # type: ignore
                else:
                    await chats  # type: ignore[misc]
                if block:
                    spent[name][0] += time.perf_counter() - wall
                    spent[name][1] += time.process_time() - cpu
        for _, close in clients.values():
            await close()  # type: ignore[misc]
        return {f"{key}{suffix}": spent[name][index] / spent["raw"][index]
                for name, suffix in (("GPTalk", ""), (ON_ENGINE, "_on_engine"))
                for index, key in enumerate(("wall", "cpu"))}

    gc.collect()
    return asyncio.run(main())


def first_delta(url: str, chats: int = 20) -> Callable[[Chat], object]:
    async def run(chat: Chat) -> dict[str, float]:
        gaps = []
        for i in range(chats):
            _, first = await consume(chat, f"chat {i}")
            gaps.append((first or 0) - server_stats(url)["first_event_at"])
        return {"ttfd_ms": statistics.median(gaps) * 1000}
    return run


def long_reply(events: int) -> Callable[[Chat], object]:
    async def run(chat: Chat) -> dict[str, float]:
        await consume(chat, "warm up")  # login and connection, so the timed part is the reply alone
        wall, cpu = time.perf_counter(), time.process_time()
        text, _ = await consume(chat, prompt_for(events))
        assert text == echo_reply(prompt_for(events))
        return {"reply_wall": time.perf_counter() - wall, "reply_cpu": time.process_time() - cpu}
    return run


def engine_hand_off(blocks: int = 20, size: int = 50) -> dict[str, float]:
    """What the engine's hand-off alone costs a chat: 15 items made after one wait of a network's kind (both threads
    asleep meanwhile), taken through ``engine().relay`` against iterated in the caller's own loop, in alternating
    blocks of ``size``; microseconds per relay, relayed over direct."""
    async def fifteen() -> AsyncIterator[int]:
        await asyncio.sleep(0.0003)
        for item in range(15):
            yield item

    async def main() -> dict[str, float]:
        spent = {"relayed": [0.0, 0.0], "direct": [0.0, 0.0]}
        for block in range(blocks + 1):
            for kind in (["direct", "relayed"] if block % 2 else ["relayed", "direct"]):
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(size):
                    items = engine().relay(fifteen()) if kind == "relayed" else fifteen()
                    assert [item async for item in items] == list(range(15))
                if block:
                    spent[kind][0] += time.perf_counter() - wall
                    spent[kind][1] += time.process_time() - cpu
        return {key: (spent["relayed"][index] - spent["direct"][index]) / (blocks * size) * 1e6
                for index, key in enumerate(("wall", "cpu"))}

    return asyncio.run(main())


def thread_round_trip(trips: int = 2000) -> dict[str, float]:
    """What this machine charges for two hops between event loops in two threads, with no GPTalk code: a future in
    this loop, resolved from another loop's thread at once (two ``call_soon_threadsafe``), against resolved in this
    loop; microseconds per round trip, the difference."""
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()

    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        spent = {}
        for kind in ("direct", "across", "direct", "across"):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(trips):
                future = loop.create_future()
                if kind == "across":
                    other.call_soon_threadsafe(loop.call_soon_threadsafe, future.set_result, None)
                else:
                    loop.call_soon(future.set_result, None)
                await future
            spent[kind] = (time.perf_counter() - wall, time.process_time() - cpu)  # the second of each is kept
        return {key: (spent["across"][index] - spent["direct"][index]) / trips * 1e6
                for index, key in enumerate(("wall", "cpu"))}

    try:
        return asyncio.run(main())
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()


def many_data_lines(megabytes: float, write: int = 64) -> float:
    """CPU seconds to read one event of ``megabytes`` of ``data:`` lines (JSON with whitespace between its
    tokens) arriving in ``write``-byte pieces: a decoder that rescans what it holds would grow quadratically."""
    lines = int(megabytes * 1e6) // 100
    wire = b'data: {"content":\n' + b"data: " + b" " * 93 + b"\n" * 1 + (b"data: " + b" " * 93 + b"\n") * lines
    wire += b'data: "done"}\n\ndata: [DONE]\n\n'
    pieces = [wire[i : i + write] for i in range(0, len(wire), write)]
    reply = ReplyText()
    cpu = time.process_time()
    text = "".join(delta for piece in pieces for delta in reply.deltas(piece))
    cpu = time.process_time() - cpu
    assert text == "done" and reply.done
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sequential", type=int, default=400)
    parser.add_argument("--results", type=Path, help="a folder for results.md (default: print only)")
    parser.add_argument("--plot", action="store_true", help="also reply_length.png in --results (needs matplotlib)")
    args = parser.parse_args()
    g4f.debug.version_check = False  # it would ask PyPI, from inside the timed part
    scratch = tempfile.TemporaryDirectory()  # the shared token file, not the user's own cookies folder's
    if hasattr(g4f, "cookies"):
        g4f.cookies.set_cookies_dir(scratch.name)
    with local_server() as url:
        os.environ["G4F_GPTALK_URL"] = url
        scenarios: dict[str, Callable[[Chat], object]] = {
            f"{args.sequential} sequential": sequential(args.sequential),
            "100 concurrent": concurrent(100),
            "500 concurrent": concurrent(500),
            **{f"{n} concurrent": concurrent(n) for n in SCALING if n > 500},
            **{f"reply {n}": long_reply(n) for n in LENGTHS},
        }
        samples: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
        for round_index in range(-1, args.rounds):  # round -1 warms up caches and CPU clocks, and is not counted
            kept = samples if round_index >= 0 else defaultdict(list)
            order = client_order(round_index)
            for scenario_name, scenario in scenarios.items():
                for client in order:
                    if scenario_name in SCALING_ONLY and client not in ("raw", "GPTalk"):
                        continue  # thousands of connections at once: the seed design runs out of descriptors
                    kept[(scenario_name, client)].append(measure(client, url, scenario))
            for client in (SYNC, LOOP_PER_CHAT):
                kept[(f"{args.sequential} sequential", client)].append(sync_chats(url, args.sequential, client))
            set_faults(url, first_event_delay=FIRST_EVENT_DELAY)
            for client in order:
                kept[("first delta", client)].append(measure(client, url, first_delta(url)))
            set_faults(url)
            if round_index >= 0:
                kept[("interleaved", "sequential")].append(interleaved(url, max(2, args.sequential // 40), 10, False))
                kept[("interleaved", "concurrent")].append(interleaved(url, max(2, args.sequential // 40), 100, True))
                kept[("interleaved", SYNC)].append(sync_interleaved(url, max(2, args.sequential // 40), 10))
                kept[("shared file", "GPTalk")].append(shared_file_cost(url, max(2, args.sequential // 40), 20))
                kept[("hand-off", "GPTalk")].append(engine_hand_off(max(2, args.sequential // 20)))
                kept[("hand-off", "bare")].append(thread_round_trip())
        scaling = {size: statistics.median(many_data_lines(size) for _ in range(3)) for size in (0.25, 0.5, 1.0)}
        table = report(samples, args.sequential, scaling)
    print(table)
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "results.md").write_text(table + "\n")
        if args.plot:
            plot(samples, args.results)


def median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(sample[key] for sample in samples)


def spread(values: list[float], digits: int = 2, sign: str = "") -> str:
    """The median of per-round values with their range, or the value flagged as a single round's."""
    form = f"{sign}.{digits}f"
    if len(values) == 1:
        return f"{values[0]:{form}} (1 round)"
    return f"{statistics.median(values):{form}} ({min(values):{form}} to {max(values):{form}})"


def report(samples: dict[tuple[str, str], list[dict[str, float]]], n: int, scaling: dict[float, float]) -> str:
    seq = f"{n} sequential"

    def cell(scenario: str, client: str, key: str, scale: float = 1.0, digits: int = 3) -> str:
        runs = samples.get((scenario, client))
        return f"{median(runs, key) * scale:.{digits}f}" if runs else "—"

    columns = [
        ("seq wall s", seq, "wall", 1, 3), ("seq CPU s", seq, "cpu", 1, 3), ("seq logins", seq, "logins", 1, 0),
        ("seq TCP conns", seq, "connections", 1, 0), ("100 conc wall s", "100 concurrent", "wall", 1, 3),
        ("500 conc wall s", "500 concurrent", "wall", 1, 3), ("500 conc logins", "500 concurrent", "logins", 1, 0),
        ("first delta after server's first event, ms", "first delta", "ttfd_ms", 1, 2),
        ("CPU for 3000-event reply, ms", "reply 3000", "reply_cpu", 1000, 1),
    ]
    rows = ["| client | " + " | ".join(title for title, *_ in columns) + " |", "|---" * (1 + len(columns)) + "|"]
    for client in [*CLIENTS, LOOP_PER_CHAT, SYNC]:
        rows.append(f"| {client} | " + " | ".join(cell(scenario, client, key, scale, digits)
                                                  for _, scenario, key, scale, digits in columns) + " |")

    def paired(scenario: str, client: str, other: str, key: str, compare: Callable[[float, float], float]
               ) -> list[float]:
        """``compare(client's, other's)`` in each round, so that drift between rounds cancels out (this machine's
        speed wanders by 30% over minutes)."""
        pairs = zip(samples[(scenario, client)], samples[(scenario, other)], strict=True)
        return [compare(mine[key], theirs[key]) for mine, theirs in pairs]

    def ratio(scenario: str, client: str, key: str) -> str:
        return spread(paired(scenario, client, "raw", key, operator.truediv))

    ratios = ["", "| ratio to raw, median of per-round ratios (range) | seq wall | seq CPU | 100 conc wall | 500 conc wall "
              "| 3000-event reply CPU |", "|---|---|---|---|---|---|"]
    for client in CLIENTS[1:]:
        ratios.append(f"| {client} | {ratio(seq, client, 'wall')} | {ratio(seq, client, 'cpu')} "
                      f"| {ratio('100 concurrent', client, 'wall')} | {ratio('500 concurrent', client, 'wall')} "
                      f"| {ratio('reply 3000', client, 'reply_cpu')} |")

    side_by_side = ["", "| GPTalk / raw, interleaved in one loop (total of alternating blocks; median of rounds "
                    "(range)) | wall | CPU |", "|---|---|---|"]
    for kind, what in (("sequential", "blocks of 10 sequential chats"), ("concurrent", "blocks of 100 concurrent chats")):
        for suffix, where in (("", ""), ("_on_engine", ", each block run on the engine's loop (no hop between threads)")):
            side_by_side.append(f"| {what}{where} | " + " | ".join(
                spread([run[key + suffix] for run in samples[("interleaved", kind)]], 3) for key in ("wall", "cpu"))
                + " |")
    ratios += side_by_side

    def per_chat_us(client: str, over: str, key: str) -> str:
        return spread([difference / n * 1e6 for difference in paired(seq, client, over, key, operator.sub)], 0, "+")

    overhead = ["", f"| cost per chat ({n} sequential), paired by round: median (range) | over | wall µs | CPU µs |",
                "|---|---|---|---|"]
    for client, over, what in (
        ("g4f async", "GPTalk", "g4f: `ChatCompletion.create_async(stream=True)`"),
        (SYNC, "GPTalk", "g4f: sync `ChatCompletion.create()`, on the engine's loop"),
        (LOOP_PER_CHAT, "GPTalk", "a new event loop per chat (g4f's own sync wrapper): session, connection, teardown"),
    ):
        overhead.append(f"| {what} | {over} | {per_chat_us(client, over, 'wall')} | {per_chat_us(client, over, 'cpu')} |")
    overhead.append("| g4f: sync `ChatCompletion.create()`, interleaved with async chats on the engine's loop | GPTalk | "
                    + " | ".join(spread([run[key] for run in samples[("interleaved", SYNC)]], 0, "+")
                                 for key in ("wall", "cpu")) + " |")

    overhead += ["", "| client CPU over GPTalk async, interleaved on the engine's loop: median of rounds (range) | ratio |",
                 "|---|---|"]
    for key, what in (("sync_cpu_ratio", "sync `ChatCompletion.create()`"), ("stream_cpu_ratio", "sync streaming")):
        overhead.append(f"| {what} | {spread([run[key] for run in samples[('interleaved', SYNC)]], 3)} |")
    overhead += ["", "| the shared token file: CPU per warm chat, on over off, interleaved: median of rounds (range) | µs |",
                 "|---|---|", f"| lock, read and write of `auth_GPTalk.json` per ask | "
                 f"{spread([run['cpu'] for run in samples[('shared file', 'GPTalk')]], 0, '+')} |"]
    overhead += ["", "| the engine's hand-off alone: 15 items after one wait, relayed over iterated in the caller's loop: "
                 "median of rounds (range) | wall µs | CPU µs |", "|---|---|---|",
                 "| `engine().relay` per chat | " + " | ".join(
                     spread([run[key] for run in samples[("hand-off", "GPTalk")]], 0, "+") for key in ("wall", "cpu"))
                 + " |", "| a bare round trip between two threads' event loops, no GPTalk code (the machine's own "
                 "cost) | " + " | ".join(
                     spread([run[key] for run in samples[("hand-off", "bare")]], 0, "+") for key in ("wall", "cpu"))
                 + " |"]

    flat = ["", "| concurrent chats | " + " | ".join(f"{c} CPU µs per chat" for c in ("raw", "GPTalk"))
            + " | GPTalk / raw CPU, median (range) |", "|---|---|---|---|"]
    for n in SCALING:
        flat.append(f"| {n} | " + " | ".join(cell(f"{n} concurrent", c, "cpu", 1e6 / n, 0) for c in ("raw", "GPTalk"))
                    + f" | {ratio(f'{n} concurrent', 'GPTalk', 'cpu')} |")

    growth = ["", "| events per reply | wire bytes | " + " | ".join(f"{c} CPU ms" for c in CLIENTS) + " |",
              "|---" * (2 + len(CLIENTS)) + "|"]
    for events in LENGTHS:
        growth.append(f"| {events} | {wire_bytes(events):,} | " + " | ".join(
            cell(f"reply {events}", c, "reply_cpu", 1000, 1) for c in CLIENTS) + " |")
    linear = ["", "| one event of many `data:` lines in 64-byte writes | MB | CPU ms | × the size before |",
              "|---|---|---|---|"]
    previous = None
    for size, cpu in scaling.items():
        linear.append(f"| GPTalk's SSE reader | {size} | {cpu * 1000:.0f} | {cpu / previous:.2f} |" if previous
                      else f"| GPTalk's SSE reader | {size} | {cpu * 1000:.0f} | — |")
        previous = cpu
    return "\n".join(rows + ratios + overhead + flat + growth + linear)


def plot(samples: dict[tuple[str, str], list[dict[str, float]]], results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, cpu) = plt.subplots(1, 2, figsize=(11, 4))
    for client in CLIENTS:
        latency.plot(LENGTHS, [median(samples[(f"reply {n}", client)], "reply_wall") * 1000 for n in LENGTHS], "o-",
                     label=client)
        cpu.plot(LENGTHS, [median(samples[(f"reply {n}", client)], "reply_cpu") * 1000 for n in LENGTHS], "o-",
                 label=client)
    for axis, title in ((latency, "reply latency, ms"), (cpu, "client CPU, ms")):
        axis.set_xlabel("events per reply (cumulative content)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(results / "reply_length.png", dpi=100)


if __name__ == "__main__":
    main()
