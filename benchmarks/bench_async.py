"""AsyncSession benchmarks: awaited ``append`` and ``append_nowait`` against the sync ``append``, and
how late the event loop wakes while a million points are logged at full speed.

Run::

    python benchmarks/bench_async.py [--quick] [--json PATH]

Methods
-------
1. Per-call cost, in one asyncio loop (the sync ``Session`` is also called from inside it), one
   block of ``--block`` calls (default 100,000) per side and round: ``track.append(value=0.5,
   step=i)`` on a ``Session``; ``await track.append(...)`` and ``track.append_nowait(...)`` on an
   ``AsyncSession``; the bare loop ``lst.append({"value": 0.5, "step": i})``. Queues and batches are
   larger than a block and the flush interval is an hour, so the agents sleep while a block runs;
   flushes and ``gc.collect()`` run between blocks, outside the timing. ``--rounds`` rounds (default
   7) after a discarded warm-up, the sides' order rotating each round; each figure is the median
   over rounds of the mean ns per call, each ratio the median of per-round ratios against the sync
   ``append`` (the machine's speed swings up to 2x between seconds, so only side-by-side figures
   are divided).
2. Loop lag, per backend (asyncio, trio): a probe task sleeps 1 ms at a time and records how much
   later than that it wakes, while another task appends ``--points`` points (default 1,000,000)
   with ``await track.append(...)``, yielding to the loop every 1,000 points (a training step that
   awaits something; ``append`` itself only yields when the queue is full), then flushes and closes
   the session with every point on disk (checked). Default agent options. The baseline is the same
   run with the points appended to a plain list instead: the lag an event loop shows anyway (the
   garbage collector's full passes, the scheduler), measured in the same run. ``--lag-runs`` runs
   (default 3) of each, alternating; reported: the medians of the probe's max and p99 lateness, the
   worst max, and the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from _harness import ns
from bench_core import machine_facts
from dreamlake import AsyncSession, Session

LAZY = {"flush_interval": 3600.0}
SIDES = ("sync append", "await append", "append_nowait", "bare list.append")


async def per_call(root: Path, rounds: int, block: int) -> dict[str, Any]:
    bound = {"batch_size": 2 * block, "max_queue": 2 * block, **LAZY}
    means: dict[str, list[float]] = {side: [] for side in SIDES}
    with Session("sync", "bench", local_path=root, **bound) as sync:
        async with AsyncSession("async", "bench", local_path=root, **bound) as asession:
            sync_track, async_track = sync.track("loss"), asession.track("loss")

            async def sync_side() -> None:
                append = sync_track.append
                for i in range(block):
                    append(value=0.5, step=i)

            async def await_side() -> None:
                append = async_track.append
                for i in range(block):
                    await append(value=0.5, step=i)

            async def nowait_side() -> None:
                append = async_track.append_nowait
                for i in range(block):
                    append(value=0.5, step=i)

            async def bare_side() -> None:
                lst: list[dict[str, Any]] = []
                append = lst.append
                for i in range(block):
                    append({"value": 0.5, "step": i})

            bodies: dict[str, Callable[[], Coroutine[Any, Any, None]]] = dict(
                zip(SIDES, (sync_side, await_side, nowait_side, bare_side), strict=True)
            )
            for round_ in range(rounds + 1):  # round 0 warms up
                order = SIDES[round_ % 4 :] + SIDES[: round_ % 4]
                for side in order:
                    gc.collect()
                    start = time.perf_counter_ns()
                    await bodies[side]()
                    elapsed = time.perf_counter_ns() - start
                    sync.flush()
                    await asession.flush()
                    if round_:
                        means[side].append(elapsed / block)
    reference = means["sync append"]
    return {
        "mean_ns": {side: statistics.median(values) for side, values in means.items()},
        "ratio": {
            side: statistics.median(v / r for v, r in zip(values, reference, strict=True))
            for side, values in means.items()
        },
        "rounds": means,
    }


async def loop_lag(root: Path | None, points: int) -> dict[str, Any]:
    """Probe the loop while ``points`` points go to an AsyncSession under ``root`` (or to a list)."""
    lags: list[float] = []
    finished = anyio.Event()

    async def probe() -> None:
        while not finished.is_set():
            start = time.perf_counter()
            await anyio.sleep(0.001)
            lags.append(time.perf_counter() - start - 0.001)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe)
        if root is None:
            lst: list[dict[str, Any]] = []
            for i in range(points):
                lst.append({"value": 0.5, "step": i})
                if i % 1000 == 0:
                    await anyio.lowlevel.checkpoint()
        else:
            async with AsyncSession("lag", "bench", local_path=root) as session:
                track = session.track("loss")
                for i in range(points):
                    await track.append(value=0.5, step=i)
                    if i % 1000 == 0:
                        await anyio.lowlevel.checkpoint()
        finished.set()
    wall = time.perf_counter() - start
    lags.sort()
    return {"max_ms": lags[-1] * 1e3, "p99_ms": lags[int(len(lags) * 0.99)] * 1e3, "wall_s": wall,
            "samples": len(lags)}


def check_written(data: Path, points: int) -> None:
    with open(data, "rb") as f:
        lines = sum(1 for _ in f)
    if lines != points:
        raise SystemExit(f"only {lines} of {points} points were written")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and points (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results here")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--lag-runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.block, args.points, args.lag_runs = 3, 20_000, 200_000, 1
    for key in [k for k in os.environ if k.startswith("DREAMLAKE_")]:
        del os.environ[key]
    tmp = Path(tempfile.mkdtemp(prefix="dreamlake-bench-async-"))
    results: dict[str, Any] = {"machine": machine_facts()}
    try:
        results["per_call"] = asyncio.run(per_call(tmp / "calls", args.rounds, args.block))
        for backend in ("asyncio", "trio"):
            runs: dict[str, list[dict[str, Any]]] = {"dreamlake": [], "baseline": []}
            for _ in range(args.lag_runs):  # alternating, so both sides see the same machine
                for side, root in (("dreamlake", tmp / f"lag-{backend}"), ("baseline", None)):
                    runs[side].append(anyio.run(loop_lag, root, args.points, backend=backend))
                    if root is not None:
                        check_written(root / "bench" / "lag" / "tracks" / "loss" / "data.jsonl", args.points)
                        shutil.rmtree(root)
            for side, values in runs.items():
                results[f"lag_{backend}_{side}"] = {
                    key: statistics.median(run[key] for run in values) for key in values[0]
                } | {"worst_max_ms": max(run["max_ms"] for run in values), "runs": values}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: dict[str, Any], args: argparse.Namespace) -> None:
    calls = results["per_call"]
    print(f"machine: {results['machine']}")
    print(f"\n| measure ({args.block:,} calls per block, {args.rounds} rounds) | mean per call "
          "| ratio to sync append |")
    print("|---|---|---|")
    for side in SIDES:
        print(f"| {side} | {ns(calls['mean_ns'][side])} | {calls['ratio'][side]:.2f}x |")
    print(f"\n| loop lag while {args.points:,} points are appended and flushed (median of "
          f"{args.lag_runs} runs; worst max) | dreamlake max / p99 (worst) | baseline (list) max / p99 "
          "(worst) | wall (dreamlake / baseline) |")
    print("|---|---|---|---|")
    for backend in ("asyncio", "trio"):
        dl, base = results[f"lag_{backend}_dreamlake"], results[f"lag_{backend}_baseline"]
        print(f"| {backend} | {dl['max_ms']:.1f} / {dl['p99_ms']:.1f} ms ({dl['worst_max_ms']:.1f}) "
              f"| {base['max_ms']:.1f} / {base['p99_ms']:.1f} ms ({base['worst_max_ms']:.1f}) "
              f"| {dl['wall_s']:.2f} s / {base['wall_s']:.2f} s |")


if __name__ == "__main__":
    raise SystemExit(main())
