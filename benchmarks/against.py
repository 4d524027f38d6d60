"""GPTalk as it is against GPTalk at an earlier commit, and both against raw, taking turns in one event loop.

    python benchmarks/against.py REF [--rounds 6] [--blocks 30] [--size 10]

Whether a change moved GPTalk's cost, measured side by side: the provider at git revision ``REF`` is copied out of
the repository (``git archive``) as the package ``g4f_gptalk_ref`` and runs next to the working tree's provider and
the raw client. Each round is one event loop in which the three take turns, in a rotating order, in ``--blocks``
blocks of ``--size`` sequential chats (after one block each to warm up); the totals of client CPU time give the
round's ratios. Prints each round and the medians. Differences under about 1% are within what rounds of the same
code show against each other.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from clients import RawClient
from run import Chat, consume, local_server, prompt_for

from g4f_gptalk import GPTalk
from g4f_gptalk.runtime.engine import close_connections
from g4f_gptalk.testing.server import echo_reply

REPOSITORY = Path(__file__).resolve().parent.parent
REF_PACKAGE = "g4f_gptalk_ref"


def import_at(ref: str, into: Path) -> tuple[type, Callable[[], Awaitable[object]]]:
    """The GPTalk class of the provider at ``ref``, imported from a copy in ``into``, and what closes its pooled
    connections (its engine's, or before the engine its running loop's)."""
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", ref, "g4f_gptalk"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / REF_PACKAGE
    (into / "g4f_gptalk").rename(package)
    # Only the provider is wanted: not the package's own start (which registers it with g4f a second time).
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(into))
    provider = importlib.import_module(f"{REF_PACKAGE}.provider")
    try:
        engine = importlib.import_module(f"{REF_PACKAGE}.runtime.engine")
        return provider.GPTalk, lambda: asyncio.to_thread(engine.close_connections)
    except ImportError:  # before the engine: connections pooled per event loop
        pass
    try:
        pool = importlib.import_module(f"{REF_PACKAGE}.runtime.pool")
    except ImportError:  # before the package had subpackages
        pool = importlib.import_module(f"{REF_PACKAGE}.pool")
    return provider.GPTalk, pool.close_running_loop


def round_of(url: str, ref_class: type, ref_close: Callable[[], Awaitable[object]], blocks: int, size: int,
             events: int = 0) -> dict[str, float]:
    """Client CPU seconds of each client over ``blocks`` blocks of ``size`` sequential chats, in one loop; with
    ``events``, each reply takes that many events (a long reply) rather than a few dozen."""

    async def main() -> dict[str, float]:
        raw = RawClient(url)
        chats: dict[str, Chat] = {
            "raw": raw.chat,
            "now": lambda messages: GPTalk.create_async_generator("gpt-3.5-turbo", messages),
            "ref": lambda messages: ref_class.create_async_generator("gpt-3.5-turbo", messages),
        }
        names = list(chats)
        spent = dict.fromkeys(names, 0.0)
        for block in range(blocks + 1):
            order = names[block % 3:] + names[:block % 3]
            for name in order[::-1] if block % 2 else order:
                cpu = time.process_time()
                for i in range(size):
                    prompt = prompt_for(events) if events else f"chat {i}"
                    text, _ = await consume(chats[name], prompt)
                    assert text == echo_reply(prompt)
                if block:
                    spent[name] += time.process_time() - cpu
        await raw.close()
        await asyncio.to_thread(close_connections)
        await ref_close()
        return spent

    GPTalk.forget_tokens()
    ref_class.forget_tokens()  # type: ignore[attr-defined]
    gc.collect()
    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ref", help="a git revision of this repository, e.g. HEAD~3")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--events", type=int, default=0, help="events per reply (default: a short reply)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, local_server() as url:
        os.environ["G4F_GPTALK_URL"] = url
        ref_class, ref_close = import_at(args.ref, Path(scratch))
        ratios: dict[str, list[float]] = {"now / raw": [], "ref / raw": [], "now / ref": []}
        for _ in range(args.rounds):
            spent = round_of(url, ref_class, ref_close, args.blocks, args.size, args.events)
            ratios["now / raw"].append(spent["now"] / spent["raw"])
            ratios["ref / raw"].append(spent["ref"] / spent["raw"])
            ratios["now / ref"].append(spent["now"] / spent["ref"])
            print("  ".join(f"{name} {values[-1]:.3f}" for name, values in ratios.items()), flush=True)
        print(f"| client CPU, interleaved, median of {args.rounds} rounds | now / raw | {args.ref} / raw | now / {args.ref} |")
        print("|---|---|---|---|")
        replies = f", {args.events}-event replies" if args.events else ""
        print("| blocks of {} sequential chats{} | {} |".format(
            args.size, replies, " | ".join(f"{statistics.median(values):.3f}" for values in ratios.values())))


if __name__ == "__main__":
    main()
