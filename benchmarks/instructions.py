"""Client CPU cost per chat as instructions counted by valgrind, which machine load and clock drift do not change.

    python benchmarks/instructions.py [--chats 200]      (needs valgrind: apt-get install valgrind)

Wall and CPU seconds on a shared machine wander by tens of percent between runs; an instruction count does not.
Each client runs ``--chats`` more sequential (then concurrent) chats than a baseline run under callgrind, and the
difference divided by ``--chats`` is its cost per chat, start-up excluded. The server runs in its own process,
outside valgrind. Takes about 5 minutes; prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import g4f
from run import concurrent, local_server, make_client, sequential

from g4f_gptalk import GPTalk
from g4f_gptalk.testing.server import echo_reply

HERE = Path(__file__).parent
CLIENTS = ["raw", "GPTalk", "seed"]
SYNC_CLIENTS = ["g4f sync", "g4f sync stream"]  # g4f.ChatCompletion.create, run on the engine's loop; sequential
BASELINE = 10


def chats(client: str, kind: str, n: int, url: str) -> None:
    """Run ``n`` chats of ``kind`` with ``client`` (what callgrind measures; see ``main``)."""
    os.environ["G4F_GPTALK_URL"] = url
    if client in SYNC_CLIENTS:
        g4f.debug.version_check = False
        for i in range(n):
            messages = [{"role": "user", "content": f"chat {i}"}]
            reply = g4f.ChatCompletion.create("gpt-3.5-turbo", messages, provider=GPTalk, stream=client.endswith("stream"))
            assert (reply if isinstance(reply, str) else "".join(reply)) == echo_reply(f"chat {i}")
        return

    async def main() -> None:
        chat, close = make_client(client, url)
        await (sequential(n) if kind == "sequential" else concurrent(n))(chat)
        await close()  # type: ignore[misc]

    asyncio.run(main())


def instructions(client: str, kind: str, n: int, url: str) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={scratch}/out", sys.executable, __file__,
             "--run", client, kind, str(n), url],
            capture_output=True, text=True, check=True, cwd=HERE,
        )
    return int(re.search(r"Collected : (\d+)", result.stderr).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--run", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        client, kind, n, url = args.run
        chats(client, kind, int(n), url)
        return
    with local_server() as url:
        rows = [f"| client | instructions per chat, {args.chats} sequential | per chat, {args.chats} concurrent |",
                "|---|---|---|"]
        per_chat: dict[tuple[str, str], float] = {}
        for client in CLIENTS:
            for kind in ("sequential", "concurrent"):
                extra = instructions(client, kind, BASELINE + args.chats, url) - instructions(client, kind, BASELINE, url)
                per_chat[(client, kind)] = extra / args.chats
            rows.append(f"| {client} | " + " | ".join(
                f"{per_chat[(client, kind)] / 1e6:.3f} M ({per_chat[(client, kind)] / per_chat[('raw', kind)]:.3f}× raw)"
                for kind in ("sequential", "concurrent")) + " |")
        for client in SYNC_CLIENTS:
            extra = instructions(client, "sequential", BASELINE + args.chats, url) - instructions(
                client, "sequential", BASELINE, url)
            over = extra / args.chats - per_chat[("GPTalk", "sequential")]
            rows.append(f"| {client} | {extra / args.chats / 1e6:.3f} M ({over / 1e3:+.0f} k over GPTalk async) | — |")
        table = "\n".join(rows)
        print(table)


if __name__ == "__main__":
    main()
