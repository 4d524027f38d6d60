"""What installing the plugin costs every program that imports g4f: ``import g4f`` with the start-up hook on
against off (``G4F_GPTALK_AUTOLOAD=0``, what users of other providers would pay without the plugin).

    python benchmarks/import_cost.py [--pairs 25]

Each pair runs two fresh interpreters, hook on and hook off, in alternating order, and reads the CPU time that
``import g4f`` took in each (its own process, so nothing else counts); prints the median of the per-pair ratios with
their range, the medians in milliseconds, and the full collections the garbage collector made during the import.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

MEASURE = """
import gc, time
full = []
gc.callbacks.append(lambda phase, info: full.append(1) if phase == "start" and info["generation"] == 2 else None)
started = time.process_time()
import g4f
print(time.process_time() - started, len(full))
"""


def import_g4f(autoload: str) -> tuple[float, int]:
    """CPU seconds of ``import g4f`` in a fresh interpreter, and the full collections meanwhile."""
    out = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True,
                         env={**os.environ, "G4F_GPTALK_AUTOLOAD": autoload}).stdout.split()
    return float(out[-2]), int(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=25)
    args = parser.parse_args()
    on: list[tuple[float, int]] = []
    off: list[tuple[float, int]] = []
    for index in range(args.pairs + 1):  # the first pair warms the disk cache and is not counted
        for autoload in (("1", "0") if index % 2 else ("0", "1")):
            sample = import_g4f(autoload)
            if index:
                (on if autoload == "1" else off).append(sample)
    ratios = [mine[0] / theirs[0] for mine, theirs in zip(on, off, strict=True)]
    spread = (f"{ratios[0]:.3f} (1 pair)" if len(ratios) == 1
              else f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})")
    print(f"| `import g4f`, CPU, {args.pairs} alternating pairs | hook off, ms | hook on, ms | on / off, median (range) "
          f"| full collections during it, on / off |")
    print("|---|---|---|---|---|")
    print(f"| g4f-gptalk installed | {statistics.median(s[0] for s in off) * 1000:.1f} "
          f"| {statistics.median(s[0] for s in on) * 1000:.1f} | {spread} "
          f"| {sum(s[1] for s in on)} / {sum(s[1] for s in off)} |")


if __name__ == "__main__":
    main()
