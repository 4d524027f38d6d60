"""Peak memory of 3,000 concurrent chats: GPTalk as it is against GPTalk at an earlier commit, each in a fresh
interpreter, side by side in one run.

    python benchmarks/memory.py REF [--chats 3000] [--rounds 3]

Each round runs each side once, in a changing order, against one ``g4f-gptalk serve`` process, and reads the
interpreter's peak resident set (``ru_maxrss``) after its chats. Prints each round and the medians.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from run import local_server

REPOSITORY = Path(__file__).resolve().parent.parent
CHATS = """
import asyncio, resource, sys
from g4f_gptalk import GPTalk
from g4f_gptalk.testing.server import echo_reply

async def one(n):
    said = f"chat {n}"
    text = "".join([d async for d in GPTalk.create_async_generator("", [{"role": "user", "content": said}])])
    assert text == echo_reply(said), text

async def main(count):
    await asyncio.gather(*(one(n) for n in range(count)))

asyncio.run(main(int(sys.argv[1])))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def copy_at(ref: str, into: Path) -> Path:
    """The package at ``ref``, copied out of the repository into ``into``; the folder to put first on sys.path."""
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", ref, "g4f_gptalk"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def peak_kib(url: str, chats: int, first_on_path: Path | None) -> int:
    env = {**os.environ, "G4F_GPTALK_URL": url, "G4F_GPTALK_AUTOLOAD": "0"}
    if first_on_path is not None:
        env["PYTHONPATH"] = str(first_on_path)
    out = subprocess.run([sys.executable, "-c", CHATS, str(chats)], capture_output=True, text=True, env=env,
                         timeout=600, cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ref", help="a git revision of this repository, e.g. HEAD~3")
    parser.add_argument("--chats", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    peaks: dict[str, list[int]] = {"now": [], args.ref: []}
    with tempfile.TemporaryDirectory() as scratch, local_server() as url:
        ref_path = copy_at(args.ref, Path(scratch))
        for index in range(args.rounds):
            for side in (["now", args.ref] if index % 2 else [args.ref, "now"]):
                peaks[side].append(peak_kib(url, args.chats, None if side == "now" else ref_path))
            print(f"round {index + 1}: " + ", ".join(f"{side} {values[-1] / 1024:.1f} MiB" for side, values in peaks.items()))
    now, ref = statistics.median(peaks["now"]), statistics.median(peaks[args.ref])
    print(f"| {args.chats} concurrent chats, peak RSS, median of {args.rounds} | now | {args.ref} | now / ref |")
    print("|---|---|---|---|")
    print(f"| MiB | {now / 1024:.1f} | {ref / 1024:.1f} | {now / ref:.3f} |")


if __name__ == "__main__":
    main()
