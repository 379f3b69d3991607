"""Wide sessions: end-to-end rate of 1 track vs 1,000 vs 10,000 tracks with the same number of points.

Run::

    python benchmarks/bench_wide.py [--points N] [--rounds R] [--dir DIR] [--json PATH] [--check]

Each shape runs in a fresh subprocess with default agent options (``DREAMLAKE_*`` removed) under
``RLIMIT_NOFILE`` 1,024: ``tracks`` handles are kept in a list, then ``for step: for track:
t.append(v=step)`` and ``close()``; the time is from the first append until ``close()`` returns. The
shapes are interleaved over ``--rounds`` rounds (the machine is noisy) and the median rate is
reported; the ratio is each wide shape's rate over the one-track rate of the same run. Afterwards
every track's ``data.jsonl`` is checked to hold its points and ``metadata.json`` to count them.

A wide session creates a directory and two files per track (the 0.2.x layout); how long the file
system takes to create them dominates the wide shapes, so ``--dir`` matters (here, a fresh directory
on a busy ``/tmp`` took ~0.8 ms per file created against ~25 us elsewhere on the same disk). So each
wide shape also gets a *file-system floor* (info rows): the system calls that layout needs, made
from plain Python with no dreamlake at all, in the same ``--dir``: per track a ``mkdir``, a first
append (open with ``O_CREAT``, ``flock``, ``fstat``, write, unlock, close) and a last one that also
replaces ``metadata.json`` (``stat``, temporary file written, ``fstat``, ``rename``), as two
flushes of a wide session do. Its ratio is the one-track time over the larger of that and the
floor: even with every system call run beside the appending loop, no writer of this layout could
do better on that file system.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import clean_env, markdown, row

SHAPES = [(1, 1_000_000), (1_000, 1_000), (10_000, 100)]  # (tracks, steps) at the default --points
BARS = {1_000: 0.6, 10_000: 0.4}  # issue 12's goals, as a fraction of the one-track rate


def child(directory: Path, tracks: int, steps: int) -> dict[str, Any]:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    from dreamlake import Session

    session = Session("wide", "bench", local_path=directory).open()
    handles = [session.track(f"layer{k}.grad_norm") for k in range(tracks)]
    t0 = time.perf_counter()
    for step in range(steps):
        for t in handles:
            t.append(v=step)
    t1 = time.perf_counter()
    session.close()
    t2 = time.perf_counter()
    ok = check(directory, tracks, steps)
    return {"seconds": t2 - t0, "append_s": t1 - t0, "close_s": t2 - t1, "check": ok}


def check(directory: Path, tracks: int, steps: int) -> bool:
    """Every track holds ``steps`` lines and its metadata counts them."""
    base = directory / "bench" / "wide" / "tracks"
    for k in range(tracks):
        track = base / f"layer{k}.grad_norm"
        lines = (track / "data.jsonl").read_bytes().count(b"\n")
        meta = json.loads((track / "metadata.json").read_text())
        if lines != steps or meta["totalDataPoints"] != steps or meta["nextIndex"] != steps:
            return False
    return True


def layout_floor(directory: Path, tracks: int, steps: int) -> float:
    """Seconds the 0.2.x layout's system calls take for ``tracks`` tracks (see the docstring)."""
    line = b'{"index":0,"data":{"v":0}}\n' * max(1, steps // 2)
    meta = json.dumps({"name": "layer.grad_norm", "totalDataPoints": steps}, indent=2).encode()
    t0 = time.perf_counter()
    for k in range(tracks):
        track = os.path.join(directory, f"layer{k}.grad_norm")
        os.mkdir(track)
        for last in (False, True):
            fd = os.open(os.path.join(track, "data.jsonl"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.fstat(fd)
            os.write(fd, line)
            if last:
                with contextlib.suppress(FileNotFoundError):
                    os.stat(os.path.join(track, "metadata.json"))
                tmp = os.path.join(track, ".metadata.json.tmp")
                mfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(mfd, meta)
                os.fstat(mfd)
                os.close(mfd)
                os.rename(tmp, os.path.join(track, "metadata.json"))
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    return time.perf_counter() - t0


def run_shape(tracks: int, steps: int, parent: Path) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix=f"{tracks}x{steps}_", dir=parent))
    out = subprocess.run(
        [sys.executable, __file__, "--child", f"{tracks}x{steps}", "--child-dir", str(directory)],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="dreamlake wide-session benchmark (see the docstring)")
    parser.add_argument("--points", type=int, default=1_000_000, help="points per shape")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "--dir", help="where the sessions are written (default: the system's temporary directory)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a bar is missed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tracks, steps = map(int, args.child.split("x"))
        print(json.dumps(child(Path(args.child_dir), tracks, steps)), flush=True)
        return

    shapes = [(tracks, max(1, args.points // tracks)) for tracks, _ in SHAPES]
    command = " ".join(["python", "benchmarks/bench_wide.py", *sys.argv[1:]])
    print(f"# dreamlake wide-session benchmark\n\ncommand: `{command}`\n")
    rates: dict[int, list[float]] = {tracks: [] for tracks, _ in shapes}
    runs: dict[int, list[dict[str, Any]]] = {tracks: [] for tracks, _ in shapes}
    floors: dict[int, list[float]] = {tracks: [] for tracks, _ in shapes}
    # Every session is removed at the end, not between shapes: deleting tens of thousands of files
    # here (ext4 with discard) slowed the file creations of the next shapes by up to 10x.
    scratch = Path(tempfile.mkdtemp(prefix="bench_wide_", dir=args.dir))
    try:
        measure(args, shapes, scratch, rates, runs, floors)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, shapes, rates, runs, floors)


def measure(
    args: argparse.Namespace,
    shapes: list[tuple[int, int]],
    scratch: Path,
    rates: dict[int, list[float]],
    runs: dict[int, list[dict[str, Any]]],
    floors: dict[int, list[float]],
) -> None:
    """Run every shape ``--rounds`` times, alternating the order; after each wide shape, its
    file-system floor (the disk's speed drifts: see the module docstring)."""
    for r in range(args.rounds):
        order = shapes if r % 2 == 0 else shapes[::-1]
        for tracks, steps in order:
            result = run_shape(tracks, steps, scratch)
            rates[tracks].append(tracks * steps / result["seconds"])
            runs[tracks].append(result)
            print(
                f"- round {r + 1}: {tracks:,} tracks x {steps:,} steps: {result['seconds']:.2f} s "
                f"(appends {result['append_s']:.2f} s, close {result['close_s']:.2f} s), "
                f"check {'ok' if result['check'] else 'FAILED'}",
                flush=True,
            )
            if tracks > 1:
                floor = layout_floor(Path(tempfile.mkdtemp(prefix="floor_", dir=scratch)), tracks, steps)
                floors[tracks].append(floor)
                print(f"  file-system floor: {floor:.2f} s", flush=True)


def report(
    args: argparse.Namespace,
    shapes: list[tuple[int, int]],
    rates: dict[int, list[float]],
    runs: dict[int, list[dict[str, Any]]],
    floors: dict[int, list[float]],
) -> None:
    """Print the table; write the JSON; exit 1 under ``--check`` if a bar is missed."""
    one = statistics.median(rates[1])
    rows = [row(f"1 track x {shapes[0][1]:,} steps, end to end", f"{one:,.0f} pts/s", "-", None, "-", None)]
    checked = all(r["check"] for results in runs.values() for r in results)
    ok_all = checked
    for tracks, steps in shapes[1:]:
        rate = statistics.median(rates[tracks])
        # the ratio within each round, then the median: the machine's speed drifts between rounds
        ratio = statistics.median(w / o for w, o in zip(rates[tracks], rates[1], strict=True))
        ok = ratio >= BARS[tracks]
        ok_all = ok_all and ok
        rows.append(
            row(
                f"{tracks:,} tracks x {steps:,} steps, end to end",
                f"{rate:,.0f} pts/s",
                f"{one:,.0f} pts/s (1 track)",
                ratio,
                f">= {BARS[tracks]}x",
                ok,
            )
        )
        # per round, as the ratios: the one-track time over the larger of it and the floor
        one_s = [shapes[0][0] * shapes[0][1] / o for o in rates[1]]
        rows.append(
            row(
                f"{tracks:,} tracks: file-system floor (the layout's system calls alone, no dreamlake);"
                " ratio: the best any writer of this layout could reach here",
                f"{statistics.median(floors[tracks]):.2f} s",
                f"{statistics.median(one_s):.2f} s (1 track, end to end)",
                statistics.median(o / max(o, f) for o, f in zip(one_s, floors[tracks], strict=True)),
                "info",
                None,
            )
        )
    print()
    print(markdown(rows))
    print(f"\nrates per round (pts/s): { {k: [round(v) for v in vs] for k, vs in rates.items()} }")
    print(f"cpu_count {os.cpu_count()}; every track's data and metadata checked: {checked}")
    if args.json:
        results = {"rates": rates, "runs": runs, "floors": floors}
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.check and not ok_all:
        sys.exit(1)


if __name__ == "__main__":
    main()
