"""What each durability level costs: end-to-end throughput of ``buffered`` and ``flush``, and the
per-call cost of ``sync``, each against ``buffered`` measured in the same run.

Run::

    python benchmarks/bench_durability.py [--points N] [--sync-calls N] [--runs N] [--json PATH]

Methods: each measurement runs in a fresh child process (so no run inherits another's memory or
threads) in a temporary directory on the same file system, with default agent options apart from
``durability``; runs alternate between the levels and the medians are reported.

- ``buffered`` and ``flush``: ``--points`` (default 1,000,000) ``track.append(value=0.5, step=i)``
  calls, timed from the first call until ``close()`` returns, then the lines of ``data.jsonl`` are
  counted (all must be there).
- ``sync``: ``--sync-calls`` (default 2,000) appends, each returning only once fsynced; mean time per
  call, against the mean per call of the ``buffered`` run (which includes its share of writing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import clean_env

CHILD = """
import json, sys, time
from pathlib import Path
from dreamlake import Session
root, level, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
with Session("d", "bench", local_path=root, durability=level) as s:
    track = s.track("loss")
    for i in range(n):
        track.append(value=0.5, step=i)
elapsed = time.perf_counter() - start
with open(Path(root) / "bench" / "d" / "tracks" / "loss" / "data.jsonl", "rb") as f:
    lines = sum(1 for _ in f)
print(json.dumps({"seconds": elapsed, "lines": lines}))
"""


def run(root: Path, level: str, n: int) -> dict[str, Any]:
    env = clean_env()
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), level, str(n)], env=env,
                         capture_output=True, text=True, check=True)
    shutil.rmtree(root, ignore_errors=True)
    result: dict[str, Any] = json.loads(out.stdout)
    if result["lines"] != n:
        raise SystemExit(f"{level}: {result['lines']} of {n} points on disk")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--sync-calls", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dreamlake-bench-durability-"))
    runs: dict[str, list[float]] = {"buffered": [], "flush": [], "sync": []}
    started = time.perf_counter()
    try:
        for k in range(args.runs):
            for level in ("buffered", "flush") if k % 2 == 0 else ("flush", "buffered"):
                runs[level].append(run(tmp / f"{level}-{k}", level, args.points)["seconds"])
            runs["sync"].append(run(tmp / f"sync-{k}", "sync", args.sync_calls)["seconds"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    buffered, flushed, synced = (statistics.median(runs[level]) for level in ("buffered", "flush", "sync"))
    per_call = {"buffered": buffered / args.points, "sync": synced / args.sync_calls}
    print(f"| level | measure ({args.runs} runs, median) | figure | ratio to buffered |")
    print("|---|---|---|---|")
    print(f"| buffered | {args.points:,} appends to close() | {args.points / buffered:,.0f} pts/s | 1.00x |")
    print(f"| flush | {args.points:,} appends to close() | {args.points / flushed:,.0f} pts/s "
          f"| {flushed / buffered:.2f}x time |")
    print(f"| sync | per append, each fsynced ({args.sync_calls:,} calls) | {per_call['sync'] * 1e6:,.0f} us "
          f"| {per_call['sync'] / per_call['buffered']:,.0f}x the buffered per-point cost "
          f"({per_call['buffered'] * 1e9:,.0f} ns) |")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "points": args.points,
                                               "sync_calls": args.sync_calls}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
