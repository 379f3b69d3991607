"""Core benchmarks of dreamlake: append() cost, end-to-end throughput, memory, tail reads.

Run::

    python benchmarks/bench_core.py [--points N] [--quick] [--json PATH] [--check]

Every dreamlake figure is set against a baseline measured in the same run on the same machine, and
the whole run works in a temporary directory that is deleted at the end. ``DREAMLAKE_*`` environment
variables are ignored (removed), so "default options" means the package defaults.

Methods
-------
1. ``append()`` per call. dreamlake: ``t.append(value=0.5, step=i)``; baseline:
   ``lst.append({"value": 0.5, "step": i})`` (same dict, bare list), both written out as the loop body
   of a ``for i in range(n)`` loop (loop overhead included on both sides). The Session uses
   ``batch_size`` and ``max_queue`` larger than any timed block and a one-hour ``flush_interval``, so
   the agent sleeps while a block runs and never competes for the GIL; ``s.flush()`` runs between
   blocks, outside the timing, and ``gc.collect()`` before every block, on both sides.

   The machine is noisy (2 vCPUs, VM; its speed changes by up to 2x from one second to the next), so
   the two sides are interleaved: ``--rounds`` rounds (default 7, after one discarded warm-up round),
   dreamlake first in even rounds and baseline first in odd ones, and the ratio is taken within each
   round. ``--slices N`` (default 1) splits each round's blocks into N alternating smaller blocks for
   finer interleaving; beware that small blocks favour the baseline (its freed dicts are reused while
   still in this core's cache, while dreamlake's are freed by the agent thread): 10 slices of 10,000
   gave 20-50% higher ratios here.

   - mean: per side and round, ``--block`` calls (default 100,000) timed as blocks with
     ``time.perf_counter_ns`` around the whole loop. The figure per side is the median over rounds of
     the per-call mean; the ratio is the median over rounds of that round's dreamlake/baseline ratio
     (each round's two figures were measured side by side). Bar: ratio <= 2.0.
   - p99: per side and round, ``--per-call`` calls (default 50,000) timed one by one,
     ``t0 = perf_counter_ns(); <call>; out[i] = perf_counter_ns() - t0``; the timer's own cost (printed
     as "timer overhead") is included identically on both sides. The figure is the median over rounds
     of each round's p99 (nearest rank). The bar is absolute: p99 < 10 us.

1b. Call styles: the docs' ``s.track("loss").append(value=0.5, step=i)`` (a lookup per call), a kept
   handle ``t.append(value=0.5, step=i)`` and the bare loop, as mean blocks of ``--block`` calls per
   side and round; the ratios (seed-style / handle, and
   each / bare) are taken within each round, the median over rounds reported. Bar: seed-style /
   handle <= 1.2. Each round's blocks are cut in 10 slices, the sides alternating slice by slice (the
   machine's speed swings within a second). ``--append-only`` runs sections 1 and 1b and nothing else.

2. End to end: ``--points`` (default 1,000,000) appends with the default agent options, timed from the
   first ``append`` until ``close()`` returns, in a fresh subprocess; then ``data.jsonl`` is checked
   (number of newlines == N, last line has index N-1 and the right data). Baseline: the bare loop of
   section 1 for the same N, in its own subprocess. ``--e2e-runs`` (default 5) pairs of subprocesses run
   alternately; medians are reported. The ratio is dreamlake time / bare-loop time.

3. Peak RSS of the end-to-end run: peak RSS of that subprocess (``VmHWM``, reset just before the
   session opens; ``ru_maxrss`` where there is no ``/proc``) minus its RSS at that moment. The growth
   of the bare-loop subprocess (it holds all N dicts) is shown beside it for scale; there is no bar.

   One more end-to-end subprocess (not in the table) runs with per-stage accounting: CPU time of the
   calling thread (``time.thread_time``) and wall time around the agent's drain (``pending``/``take``),
   ``_jsonl.encode_lines``, the ``os.write`` loop, the metadata update, the whole agent thread, and the
   producer's slow path and waits for room, to show where the time goes.

4. Tail read: a 10,000-point track written through the Session API, and a 2,000,000-point track whose
   ``data.jsonl`` is written directly in the same byte format (checked against the Session-written
   file), whose ``metadata.json`` the Session then creates itself. On an open Session, after one
   warm-up read each, ``--reads`` (default 50) reads of ``read(start_index=n-100, limit=100)`` alternate
   between the two tracks; medians are compared (big / small, bar <= 3.0).

5. Stalled sink, in a subprocess: ``dreamlake._sinks.LocalSink`` is replaced by a subclass whose
   ``write_track`` awaits forever, ``Session(max_queue=200_000, on_full="drop_newest")`` takes 2,000,000
   appends; RSS growth (peak RSS, as in 3, minus RSS after open) is compared with the growth of a plain
   list holding ``max_queue`` such dicts (another subprocess), bar <= 1.5x; ``dropped`` must equal
   N - max_queue. Then ``close(timeout=1)`` must raise ``FlushTimeoutError``.

6. Accepted means safe: ``--kill9-trials`` (default 3) subprocesses append 20,000 points with the
   default options, then SIGKILL themselves right after the last call returned (no close). The
   session is then reopened (which stores what the dead run's spool held) and the track must hold
   all 20,000 points, in order, once. Section 1 is also run with ``spool=False``, for the spool's cost.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

import dreamlake
from _harness import (
    Row,
    apply_defaults,
    clean_env,
    dist_version,
    drop_dreamlake_env,
    fmt,
    markdown,
    mb,
    ns,
    peak_rss,
    platform_facts,
    platform_line,
    reset_peak_rss,
    row,
    rss,
)
from dreamlake import FlushTimeoutError, Session, Track

perf_counter_ns = time.perf_counter_ns
WORKSPACE = "bench"
TRACK = "loss"


# --------------------------------------------------------------------------------------------------
# helpers


def p99(samples: Sequence[int]) -> int:
    """Nearest-rank 99th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def timer_overhead_ns(n: int = 200_000) -> float:
    """Median cost of one back-to-back ``perf_counter_ns()`` pair."""
    clock = perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        out[i] = clock() - t0
    return statistics.median(out)


def line_bytes(i: int) -> bytes:
    """One ``data.jsonl`` line exactly as dreamlake writes ``append(value=0.5, step=i)``."""
    return b'{"index":%d,"data":{"value":0.5,"step":%d}}\n' % (i, i)


def track_file(root: Path, session: str, track: str = TRACK) -> Path:
    return root / WORKSPACE / session / "tracks" / track / "data.jsonl"


def verify_jsonl(path: Path, n: int) -> dict[str, Any]:
    """Count the lines of ``path`` and decode its last line."""
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            lines += chunk.count(b"\n")
        size = f.tell()
        f.seek(max(0, size - 4096))
        last = json.loads(f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])
    ok = lines == n and last == {"index": n - 1, "data": {"value": 0.5, "step": n - 1}}
    return {"lines": lines, "last_index": last.get("index"), "bytes": size, "ok": ok}


def run_child(mode: str, directory: Path, *extra: str) -> dict[str, Any]:
    """Run this script in ``--child`` mode in a fresh interpreter; return its JSON result."""
    env = clean_env()
    cmd = [sys.executable, __file__, "--child", mode, "--child-dir", str(directory), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------------------------------
# 1. append() per call


def dl_block(track: Track, n: int) -> int:
    start = perf_counter_ns()
    for i in range(n):
        track.append(value=0.5, step=i)
    return perf_counter_ns() - start


def bare_block(lst: list[dict[str, Any]], n: int) -> int:
    start = perf_counter_ns()
    for i in range(n):
        lst.append({"value": 0.5, "step": i})  # noqa: PERF401 -- the baseline is this very loop
    return perf_counter_ns() - start


def dl_calls(track: Track, n: int) -> list[int]:
    clock = perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        track.append(value=0.5, step=i)
        out[i] = clock() - t0
    return out


def bare_calls(lst: list[dict[str, Any]], n: int) -> list[int]:
    clock = perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        lst.append({"value": 0.5, "step": i})
        out[i] = clock() - t0
    return out


def bench_append(
    root: Path, rounds: int, block: int, per_call: int, slices: int, spool: bool = True
) -> dict[str, Any]:
    """Section 1; see the module docstring. Each side gets ``block`` + ``per_call`` calls per round."""
    bound = 2 * max(block, per_call)
    session = Session(
        "append", WORKSPACE, local_path=root, batch_size=bound, max_queue=bound, flush_interval=3600.0,
        spool=spool,
    )
    sides = ("dreamlake", "baseline")
    means: dict[str, list[float]] = {side: [] for side in sides}
    p99s: dict[str, list[int]] = {side: [] for side in sides}
    appended = flushes = 0
    with session:
        track = session.track(TRACK)

        def run_dl(timed: Callable[[Track, int], Any], n: int) -> Any:
            nonlocal appended, flushes
            gc.collect()
            result = timed(track, n)
            appended += n
            session.flush()  # the agent writes between slices, never during one
            flushes += 1
            return result

        def run_bare(timed: Callable[[list[dict[str, Any]], int], Any], n: int) -> Any:
            gc.collect()
            lst: list[dict[str, Any]] = []
            result = timed(lst, n)
            del lst
            return result

        block_slice, call_slice = max(1, block // slices), max(1, per_call // slices)
        for r in range(-1, rounds):  # round -1 is a warm-up (first-touch page faults, caches), discarded
            order = sides if r % 2 == 0 else sides[::-1]
            elapsed = dict.fromkeys(sides, 0)
            samples: dict[str, list[int]] = {side: [] for side in sides}
            for _ in range(slices):
                for side in order:
                    if side == "dreamlake":
                        elapsed[side] += run_dl(dl_block, block_slice)
                    else:
                        elapsed[side] += run_bare(bare_block, block_slice)
            for _ in range(slices):
                for side in order:
                    if side == "dreamlake":
                        samples[side] += run_dl(dl_calls, call_slice)
                    else:
                        samples[side] += run_bare(bare_calls, call_slice)
            if r < 0:
                continue
            for side in sides:
                means[side].append(elapsed[side] / (block_slice * slices))
                p99s[side].append(p99(samples[side]))
        stats = session.agent_stats()
    if stats["written"] != appended:
        raise RuntimeError(f"append bench: {appended} appended but {stats['written']} written")
    mean_ratios = [d / b for d, b in zip(means["dreamlake"], means["baseline"], strict=True)]
    p99_ratios = [d / b for d, b in zip(p99s["dreamlake"], p99s["baseline"], strict=True)]
    return {
        "rounds": rounds,
        "block": block_slice * slices,
        "per_call": call_slice * slices,
        "slices": slices,
        "mean_ns": {side: statistics.median(v) for side, v in means.items()},
        "mean_ratio": statistics.median(mean_ratios),
        "min_mean_ratio": min(means["dreamlake"]) / min(means["baseline"]),
        "p99_ns": {side: statistics.median(v) for side, v in p99s.items()},
        "p99_ratio": statistics.median(p99_ratios),
        "per_round_mean_ns": means,
        "per_round_mean_ratio": mean_ratios,
        "per_round_p99_ns": p99s,
        "agent_flushes": stats["flushes"],
        "explicit_flushes": flushes,
    }


STYLE_SLICES = 10  # per round and side: the machine's speed swings within a second


def seed_block(session: Session, n: int) -> int:
    start = perf_counter_ns()
    for i in range(n):
        session.track(TRACK).append(value=0.5, step=i)
    return perf_counter_ns() - start


def bench_call_styles(root: Path, rounds: int, block: int) -> dict[str, Any]:
    """Section 1b; see the module docstring."""
    session = Session(
        "styles", WORKSPACE, local_path=root, batch_size=2 * block, max_queue=2 * block, flush_interval=3600.0
    )
    sides = ("seed", "handle", "bare")
    means: dict[str, list[float]] = {side: [] for side in sides}
    with session:
        track = session.track(TRACK)
        piece = max(1, block // STYLE_SLICES)
        for r in range(-1, rounds):  # round -1 is a warm-up, discarded
            elapsed = dict.fromkeys(sides, 0)
            for j in range(STYLE_SLICES):  # the three sides alternate within the round
                for k in range(3):
                    side = sides[(r + j + k) % 3]
                    gc.collect()
                    if side == "bare":
                        lst: list[dict[str, Any]] = []
                        elapsed[side] += bare_block(lst, piece)
                        del lst
                    elif side == "seed":
                        elapsed[side] += seed_block(session, piece)
                        session.flush()  # the agent writes between blocks, never during one
                    else:
                        elapsed[side] += dl_block(track, piece)
                        session.flush()  # the agent writes between blocks, never during one
            if r >= 0:
                for side in sides:
                    means[side].append(elapsed[side] / (piece * STYLE_SLICES))
    ratios = {
        "seed/handle": [a / b for a, b in zip(means["seed"], means["handle"], strict=True)],
        "seed/bare": [a / b for a, b in zip(means["seed"], means["bare"], strict=True)],
        "handle/bare": [a / b for a, b in zip(means["handle"], means["bare"], strict=True)],
    }
    return {
        "rounds": rounds,
        "block": block,
        "mean_ns": {side: statistics.median(v) for side, v in means.items()},
        "ratio": {name: statistics.median(v) for name, v in ratios.items()},
        "per_round_ratio": ratios,
    }


# --------------------------------------------------------------------------------------------------
# 2./3. end to end (children)


def child_e2e(directory: Path, n: int) -> dict[str, Any]:
    rss0 = reset_peak_rss()
    session = Session("e2e", WORKSPACE, local_path=directory).open()  # default agent options
    track = session.track(TRACK)
    t0 = time.perf_counter()
    for i in range(n):
        track.append(value=0.5, step=i)
    t1 = time.perf_counter()
    session.close()
    t2 = time.perf_counter()
    peak = peak_rss()
    check = verify_jsonl(track_file(directory, "e2e"), n)
    return {
        "seconds": t2 - t0,
        "append_loop_s": t1 - t0,
        "close_s": t2 - t1,
        "rss_growth": peak - rss0,
        "config": {
            "batch_size": session.config.batch_size,
            "max_queue": session.config.max_queue,
            "flush_interval": session.config.flush_interval,
        },
        "check": check,
    }


def child_bare(n: int) -> dict[str, Any]:
    rss0 = reset_peak_rss()
    lst: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for i in range(n):
        lst.append({"value": 0.5, "step": i})  # noqa: PERF401 -- the baseline is this very loop
    t1 = time.perf_counter()
    return {"seconds": t1 - t0, "rss_growth": peak_rss() - rss0, "len": len(lst)}


def child_e2e_breakdown(directory: Path, n: int) -> dict[str, Any]:
    """The end-to-end run with per-thread CPU time around the agent's stages (monkeypatched).

    Each wrapped stage adds up ``time.thread_time()`` (CPU of the calling thread, so a thread waiting
    for the GIL or for the queue costs nothing) and wall time; ``backlog`` is the largest number of
    points the agent found queued for the track when it started a flush.
    """
    from dreamlake._agent import hosts as _runner
    from dreamlake._agent import queue as _queue
    from dreamlake._disk import jsonl as _jsonl
    from dreamlake._disk import session_dir as _session_dir

    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    calls: dict[str, int] = {}
    backlog = 0

    def timed(key: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal backlog
            c0, w0 = time.thread_time(), time.perf_counter()
            result = None
            try:
                result = func(*args, **kwargs)
                return result
            finally:
                cpu[key] = cpu.get(key, 0.0) + time.thread_time() - c0
                wall[key] = wall.get(key, 0.0) + time.perf_counter() - w0
                calls[key] = calls.get(key, 0) + 1
                if key.startswith("agent: PointQueue.") and isinstance(result, list):
                    for entry in result:  # pending(): (buffer, count); drain(): (buffer, points)
                        if isinstance(entry, tuple) and len(entry) == 2:
                            size = entry[1] if isinstance(entry[1], int) else len(entry[1])
                            backlog = max(backlog, size)

        return wrapper

    # The package is under active development: wrap whichever of these stages exist.
    targets: list[tuple[Any, str, str]] = [
        (_queue.PointQueue, "drain", "agent: PointQueue.drain"),
        (_queue.PointQueue, "pending", "agent: PointQueue.pending"),
        (_queue.PointQueue, "take", "agent: PointQueue.take"),
        (_runner.AgentThread, "_main", "agent thread (all)"),  # from the first append on, see below
        (_session_dir.SessionDir, "write_track", "worker: SessionDir.write_track (all)"),
        (_jsonl, "encode_lines", "worker: _jsonl.encode_lines"),
        (_jsonl, "_write_all", "worker: _write_all (os.write)"),
        (_session_dir.SessionDir, "_write_meta", "worker: _write_meta"),
        (_queue.PointQueue, "admit", "main: PointQueue.admit (slow path)"),
        (_queue.PointQueue, "_wait_for_room", "main: _wait_for_room (queue full)"),
    ]
    patched = []
    for owner, attr, label in targets:
        if hasattr(owner, attr):
            setattr(owner, attr, timed(label, getattr(owner, attr)))
            patched.append(label)

    gc.collect()
    session = Session("e2e", WORKSPACE, local_path=directory).open()
    track = session.track(TRACK)
    # The agent thread's CPU before the first append (its start-up imports anyio's backend): subtracted.
    thread = getattr(getattr(session, "_runner", None), "_thread", None)
    agent_cpu0 = 0.0
    if thread is not None and thread.ident is not None and hasattr(time, "pthread_getcpuclockid"):
        agent_cpu0 = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    times0 = os.times()
    w0, c0 = time.perf_counter(), time.thread_time()
    for i in range(n):
        track.append(value=0.5, step=i)
    w1, c1 = time.perf_counter(), time.thread_time()
    session.close()
    w2, c2 = time.perf_counter(), time.thread_time()
    times1 = os.times()
    cpu["main: append loop"], wall["main: append loop"] = c1 - c0, w1 - w0
    cpu["main: close()"], wall["main: close()"] = c2 - c1, w2 - w1
    if "agent thread (all)" in cpu:
        cpu["agent thread (all)"] -= agent_cpu0
    process_cpu = (times1.user + times1.system) - (times0.user + times0.system)
    return {
        "wall": {"append_loop": w1 - w0, "close": w2 - w1, "total": w2 - w0},
        "cpu": cpu,
        "stage_wall": wall,
        "calls": calls,
        "process_cpu": process_cpu,
        "backlog": backlog,
        "max_queue": session.config.max_queue,
        "patched": patched,
        "check": verify_jsonl(track_file(directory, "e2e"), n),
    }


# --------------------------------------------------------------------------------------------------
# 5. stalled sink (children)


def child_stalled(directory: Path, n: int, max_queue: int) -> dict[str, Any]:
    import anyio

    import dreamlake._sinks as sinks_module
    from dreamlake._sinks.base import TrackSpec
    from dreamlake._sinks.local import LocalSink

    class StalledSink(LocalSink):
        async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
            await anyio.sleep_forever()

    sinks_module.LocalSink = StalledSink  # type: ignore[misc]
    session = Session(
        "stalled", WORKSPACE, local_path=directory, max_queue=max_queue, on_full="drop_newest"
    ).open()
    track = session.track(TRACK)
    rss0 = reset_peak_rss()
    half = n // 2
    rss_half = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        for i in range(half):
            track.append(value=0.5, step=i)
        rss_half = rss()
        for i in range(half, n):
            track.append(value=0.5, step=i)
        t1 = time.perf_counter()
    rss_end = rss()
    peak = peak_rss()
    stats = session.agent_stats()
    c0 = time.perf_counter()
    try:
        session.close(timeout=1)
        close_error = None
    except FlushTimeoutError as exc:
        close_error = f"FlushTimeoutError: {exc}"
    close_s = time.perf_counter() - c0
    return {
        "append_loop_s": t1 - t0,
        "rss_growth_peak": max(peak, rss_half, rss_end) - rss0,
        "rss_growth_half": rss_half - rss0,
        "rss_growth_end": rss_end - rss0,
        "stats": {k: stats[k] for k in ("written", "queued", "dropped")},
        "drop_warnings": sum(issubclass(w.category, RuntimeWarning) for w in caught),
        "close_s": close_s,
        "close_error": close_error,
    }


def child_list(n: int) -> dict[str, Any]:
    rss0 = reset_peak_rss()
    lst: list[dict[str, Any]] = []
    for i in range(n):
        lst.append({"value": 0.5, "step": i})  # noqa: PERF401 -- the baseline is this very loop
    return {"rss_growth": max(rss(), peak_rss()) - rss0, "len": len(lst)}


KILL9_BURST = 20_000


def child_burst(directory: Path) -> None:
    """Section 6: append a burst, then die by SIGKILL right after the last call returned."""
    session = Session("burst", WORKSPACE, local_path=directory).open()  # default options
    track = session.track(TRACK)
    for i in range(KILL9_BURST):
        track.append(value=0.5, step=i)
    os.kill(os.getpid(), signal.SIGKILL)


def bench_kill9(root: Path, trials: int) -> dict[str, Any]:
    """Section 6: what a burst killed right after its last call keeps, once the session is reopened."""
    kept, on_disk = [], []
    for trial in range(trials):
        directory = root / str(trial)
        cmd = [sys.executable, __file__, "--child", "burst", "--child-dir", str(directory)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), check=False)
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"burst child ended with {proc.returncode}: {proc.stderr}")
        path = track_file(directory, "burst")
        on_disk.append(path.read_bytes().count(b"\n") if path.exists() else 0)
        started = time.perf_counter()
        with Session("burst", WORKSPACE, local_path=directory) as session:
            stats = session.track(TRACK).stats()
        recovery_s = time.perf_counter() - started
        check = verify_jsonl(path, KILL9_BURST)
        kept.append({"points": stats["totalDataPoints"], "ok": check["ok"], "reopen_s": recovery_s})
        shutil.rmtree(directory, ignore_errors=True)
    return {"burst": KILL9_BURST, "trials": kept, "on_disk_before_reopen": on_disk}


def child_main(args: argparse.Namespace) -> None:
    directory = Path(args.child_dir)
    result: dict[str, Any]
    if args.child == "e2e":
        result = child_e2e(directory, args.points)
    elif args.child == "bare":
        result = child_bare(args.points)
    elif args.child == "breakdown":
        result = child_e2e_breakdown(directory, args.points)
    elif args.child == "stalled":
        result = child_stalled(directory, args.stall_points, args.stall_max_queue)
    elif args.child == "list":
        result = child_list(args.stall_max_queue)
    elif args.child == "burst":
        child_burst(directory)
    else:
        raise SystemExit(f"unknown child mode {args.child!r}")
    print(json.dumps(result), flush=True)
    # A stalled agent thread may still be parked on its event loop; nothing is left to write.
    os._exit(0)


# --------------------------------------------------------------------------------------------------
# 4. tail read


def write_direct(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    step = 100_000
    with open(path, "wb") as f:
        for start in range(0, n, step):
            f.write(b"".join([line_bytes(i) for i in range(start, min(n, start + step))]))


def bench_tail_read(root: Path, big_n: int, small_n: int, reads: int) -> dict[str, Any]:
    name = "tail"
    with Session(name, WORKSPACE, local_path=root, batch_size=small_n, max_queue=small_n) as session:
        small = session.track("small")
        for i in range(small_n):
            small.append(value=0.5, step=i)
    written = track_file(root, name, "small").read_bytes()
    expected = b"".join(line_bytes(i) for i in range(small_n))
    if written != expected:
        raise RuntimeError("the direct-write format differs from what dreamlake writes")
    t0 = time.perf_counter()
    write_direct(track_file(root, name, "big"), big_n)
    build_s = time.perf_counter() - t0

    times: dict[str, list[float]] = {"big": [], "small": []}
    sizes = {"big": big_n, "small": small_n}
    with Session(name, WORKSPACE, local_path=root) as session:
        tracks = {key: session.track(key) for key in sizes}
        for key, track in tracks.items():  # warm-up; also checks the answer
            n = sizes[key]
            got = track.read(start_index=n - 100, limit=100)
            indices = [entry["index"] for entry in got["data"]]
            if indices != list(range(n - 100, n)) or got["hasMore"] or got["data"][-1]["data"] != {
                "value": 0.5,
                "step": n - 1,
            }:
                raise RuntimeError(f"tail read of {key} returned the wrong points")
        for r in range(reads):
            order = ("big", "small") if r % 2 == 0 else ("small", "big")
            for key in order:
                n = sizes[key]
                t0 = time.perf_counter()
                tracks[key].read(start_index=n - 100, limit=100)
                times[key].append(time.perf_counter() - t0)
        total = tracks["big"].stats()["totalDataPoints"]
    if total != big_n:
        raise RuntimeError(f"the big track reports {total} points, expected {big_n}")
    return {
        "big_n": big_n,
        "small_n": small_n,
        "reads": reads,
        "build_big_s": build_s,
        "median_ms": {key: statistics.median(v) * 1000 for key, v in times.items()},
        "p90_ms": {key: statistics.quantiles(v, n=10)[-1] * 1000 for key, v in times.items()},
    }


# --------------------------------------------------------------------------------------------------
# main


def machine_facts() -> dict[str, Any]:
    try:
        clocksource = Path(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource"
        ).read_text().strip()
    except OSError:
        clocksource = "?"
    digest = hashlib.sha256()
    package = Path(dreamlake.__file__).parent
    for source in sorted(package.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return {
        **platform_facts(),
        "memory": mb(psutil.virtual_memory().total),
        "clocksource": clocksource,
        "timer_overhead_ns": timer_overhead_ns(),
        "dreamlake": dreamlake.__version__,
        "dreamlake_path": str(package),
        "dreamlake_sources_sha256": digest.hexdigest()[:16],
        "msgspec": dist_version("msgspec"),
        "anyio": dist_version("anyio"),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="dreamlake core benchmarks (see the module docstring)")
    parser.add_argument("--points", type=int, default=None, help="end-to-end points (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="smaller, faster run (rough figures)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 if a bar or a check fails")
    parser.add_argument("--rounds", type=int, default=None, help="append rounds (default 7, quick 3)")
    parser.add_argument("--block", type=int, default=None, help="calls per mean block (default 100,000)")
    parser.add_argument("--per-call", type=int, default=None, help="individually timed calls per round")
    parser.add_argument("--slices", type=int, default=1, help="alternating blocks per round and side")
    parser.add_argument("--e2e-runs", type=int, default=None, help="end-to-end runs (default 5, quick 1)")
    parser.add_argument("--reads", type=int, default=None, help="timed tail reads per track (default 50)")
    parser.add_argument("--big-track", type=int, default=None, help="tail-read big track (default 2M)")
    parser.add_argument("--stall-points", type=int, default=None, help="stalled-sink appends (default 2M)")
    parser.add_argument("--stall-max-queue", type=int, default=None, help="stalled max_queue (200,000)")
    parser.add_argument("--kill9-trials", type=int, default=3, help="kill -9 burst trials (default 3)")
    parser.add_argument("--append-only", action="store_true", help="only sections 1 and 1b (append cost)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "points": 200_000 if quick else 1_000_000,
        "rounds": 3 if quick else 7,
        "block": 20_000 if quick else 100_000,
        "per_call": 10_000 if quick else 50_000,
        "e2e_runs": 1 if quick else 5,
        "reads": 15 if quick else 50,
        "big_track": 200_000 if quick else 2_000_000,
        "stall_points": 400_000 if quick else 2_000_000,
        "stall_max_queue": 50_000 if quick else 200_000,
    }
    apply_defaults(args, defaults)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    drop_dreamlake_env()

    command = shlex.join([sys.executable, *sys.argv])
    facts = machine_facts()
    print(f"# dreamlake core benchmarks\n\ncommand: `{command}`\n")
    print(
        platform_line(facts)
        + f"clocksource {facts['clocksource']}; "
        f"timer overhead {facts['timer_overhead_ns']:.0f} ns per perf_counter_ns pair; "
        f"dreamlake {facts['dreamlake']} (sources sha256 {facts['dreamlake_sources_sha256']}), "
        f"msgspec {facts['msgspec']}, anyio {facts['anyio']}\n",
        flush=True,
    )
    started = time.perf_counter()
    results: dict[str, Any] = {"step_seconds": {}}
    last_start, last_label = started, ""

    def step(label: str) -> None:
        nonlocal last_start, last_label
        now = time.perf_counter()
        if last_label:
            results["step_seconds"][last_label] = round(now - last_start, 2)
        last_start, last_label = now, label
        if label:
            print(f"- {label} ...", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="dreamlake-bench-"))
    try:
        step(f"append() cost: {args.rounds} rounds")
        results["append"] = bench_append(tmp / "append", args.rounds, args.block, args.per_call, args.slices)
        shutil.rmtree(tmp / "append", ignore_errors=True)
        step(f"append() cost without the spool (spool=False): {args.rounds} rounds")
        results["append_unspooled"] = bench_append(
            tmp / "append", args.rounds, args.block, args.per_call, args.slices, spool=False
        )
        shutil.rmtree(tmp / "append", ignore_errors=True)
        step(f"call styles: track(name).append vs a kept handle vs the bare loop: {args.rounds} rounds")
        results["styles"] = bench_call_styles(tmp / "styles", args.rounds, args.block)
        shutil.rmtree(tmp / "styles", ignore_errors=True)
        if args.append_only:
            step("")
            rows = append_rows(results)
            print()
            print(markdown(rows))
            print(f"\nappend ratios per round: {fmt(results['append']['per_round_mean_ratio'], 2)}; "
                  f"seed/handle per round: {fmt(results['styles']['per_round_ratio']['seed/handle'], 2)}")
            return 0

        step(f"end to end and peak RSS: {args.e2e_runs} x {args.points:,} points (subprocesses)")
        e2e: list[dict[str, Any]] = []
        bare: list[dict[str, Any]] = []
        for r in range(args.e2e_runs):
            for kind in ("e2e", "bare") if r % 2 == 0 else ("bare", "e2e"):
                directory = tmp / f"{kind}-{r}"
                result = run_child(kind, directory, "--points", str(args.points))
                (e2e if kind == "e2e" else bare).append(result)
                shutil.rmtree(directory, ignore_errors=True)
        results["e2e"] = {"runs": e2e, "bare": bare}

        step("end to end once more, with per-stage CPU accounting (not in the table)")
        results["breakdown"] = run_child("breakdown", tmp / "breakdown", "--points", str(args.points))
        shutil.rmtree(tmp / "breakdown", ignore_errors=True)

        step(f"tail read: {args.big_track:,} vs 10,000 points")
        results["tail"] = bench_tail_read(tmp / "tail", args.big_track, 10_000, args.reads)
        shutil.rmtree(tmp / "tail", ignore_errors=True)

        step(f"stalled sink: {args.stall_points:,} appends, max_queue {args.stall_max_queue:,} (subprocess)")
        extra = ["--stall-points", str(args.stall_points), "--stall-max-queue", str(args.stall_max_queue)]
        results["list"] = run_child("list", tmp / "list", *extra)
        results["stalled"] = run_child("stalled", tmp / "stalled", *extra)

        step(f"kill -9 right after a burst of {KILL9_BURST:,} appends: {args.kill9_trials} trials")
        results["kill9"] = bench_kill9(tmp / "kill9", args.kill9_trials)
        step("")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started

    rows = build_rows(args, results)
    print()
    print(markdown(rows))
    print()
    print(notes(args, results, facts))
    print(f"\ntotal benchmark time {elapsed:.0f} s; per step (s): {results['step_seconds']}")
    failed = [r["measure"] for r in rows if r["ok"] is False]
    if args.json:
        payload = {
            "command": command,
            "machine": facts,
            "params": {k: v for k, v in vars(args).items() if not k.startswith("child")},
            "rows": rows,
            "results": results,
            "failed": failed,
            "elapsed_s": elapsed,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    return 1 if args.check and failed else 0


def append_rows(results: dict[str, Any]) -> list[Row]:
    """The rows of sections 1 and 1b."""
    rows: list[Row] = []
    ap = results["append"]
    mean_dl, mean_base = ap["mean_ns"]["dreamlake"], ap["mean_ns"]["baseline"]
    rows.append(row("append() mean per call", ns(mean_dl), ns(mean_base), ap["mean_ratio"],
                    "ratio <= 2.0", ap["mean_ratio"] <= 2.0))
    p_dl, p_base = ap["p99_ns"]["dreamlake"], ap["p99_ns"]["baseline"]
    rows.append(row("append() p99 per call", ns(p_dl), ns(p_base), ap["p99_ratio"],
                    "dreamlake < 10 us", p_dl < 10_000))
    off = results["append_unspooled"]
    rows.append(row("append() mean per call, spool=False", ns(off["mean_ns"]["dreamlake"]),
                    ns(off["mean_ns"]["baseline"]), off["mean_ratio"], "info", None))
    st = results["styles"]
    rows.append(row("session.track(name).append(...) vs kept handle", ns(st["mean_ns"]["seed"]),
                    ns(st["mean_ns"]["handle"]), st["ratio"]["seed/handle"], "ratio <= 1.2",
                    st["ratio"]["seed/handle"] <= 1.2))
    rows.append(row("session.track(name).append(...) vs bare loop", ns(st["mean_ns"]["seed"]),
                    ns(st["mean_ns"]["bare"]), st["ratio"]["seed/bare"], "info", None))
    rows.append(row("kept handle vs bare loop (same rounds)", ns(st["mean_ns"]["handle"]),
                    ns(st["mean_ns"]["bare"]), st["ratio"]["handle/bare"], "info", None))
    return rows


def build_rows(args: argparse.Namespace, results: dict[str, Any]) -> list[Row]:
    rows = append_rows(results)

    n = args.points
    e2e_s = statistics.median(r["seconds"] for r in results["e2e"]["runs"])
    bare_s = statistics.median(r["seconds"] for r in results["e2e"]["bare"])
    rows.append(row(f"end to end {n:,} points, first append to close() (median of {args.e2e_runs})",
                    f"{n / e2e_s:,.0f} pts/s ({e2e_s:.2f} s)",
                    f"{n / bare_s:,.0f} pts/s ({bare_s:.2f} s, bare loop)",
                    e2e_s / bare_s, ">= 1,000,000 pts/s", n / e2e_s >= 1_000_000))
    checks = [r["check"] for r in results["e2e"]["runs"]] + [results["breakdown"]["check"]]
    rows.append(row("end to end: lines in data.jsonl / last index (every run)",
                    f"{checks[0]['lines']:,} / {checks[0]['last_index']:,}", f"{n:,} / {n - 1:,}", None,
                    "all written, in order", all(c["ok"] for c in checks)))
    rss_dl = statistics.median(r["rss_growth"] for r in results["e2e"]["runs"])
    rss_bare = statistics.median(r["rss_growth"] for r in results["e2e"]["bare"])
    rows.append(row("end to end: peak RSS growth", mb(rss_dl), f"{mb(rss_bare)} (list of N dicts)",
                    rss_dl / rss_bare, "info", None))

    tail = results["tail"]
    big_ms, small_ms = tail["median_ms"]["big"], tail["median_ms"]["small"]
    rows.append(row(f"read(n-100, 100), median of {tail['reads']}",
                    f"{big_ms:.2f} ms ({tail['big_n']:,} pts)",
                    f"{small_ms:.2f} ms ({tail['small_n']:,} pts)",
                    big_ms / small_ms, "ratio <= 3.0", big_ms / small_ms <= 3.0))

    st, lst = results["stalled"], results["list"]
    mq = args.stall_max_queue
    rows.append(row(f"stalled sink: RSS growth, {args.stall_points:,} appends, max_queue {mq:,}",
                    mb(st["rss_growth_peak"]), f"{mb(lst['rss_growth'])} (list of {mq:,} dicts)",
                    st["rss_growth_peak"] / lst["rss_growth"], "ratio <= 1.5",
                    st["rss_growth_peak"] <= 1.5 * lst["rss_growth"]))
    expected = args.stall_points - mq
    rows.append(row("stalled sink: agent_stats()['dropped']; close(timeout=1)",
                    f"{st['stats']['dropped']:,}; {'FlushTimeoutError' if st['close_error'] else 'returned'}",
                    f"{expected:,} (N - max_queue); FlushTimeoutError", None, "equal",
                    st["stats"]["dropped"] == expected and bool(st["close_error"])))
    k9 = results["kill9"]
    kept = [t["points"] for t in k9["trials"]]
    rows.append(row(f"kill -9 right after {k9['burst']:,} appends: points kept after reopening",
                    f"{100 * min(kept) / k9['burst']:.1f}% (min of {len(kept)}; "
                    f"{max(k9['on_disk_before_reopen']):,} on disk before)",
                    f"{k9['burst']:,} appended", None, "100%, exactly once",
                    all(k == k9["burst"] and t["ok"] for k, t in zip(kept, k9["trials"], strict=True))))
    return rows


def notes(args: argparse.Namespace, results: dict[str, Any], facts: dict[str, Any]) -> str:
    ap = results["append"]
    out = ["Notes:"]
    out.append(
        f"- append mean per round (ns), dreamlake: {fmt(ap['per_round_mean_ns']['dreamlake'])}; "
        f"baseline: {fmt(ap['per_round_mean_ns']['baseline'])}; "
        f"ratios {fmt(ap['per_round_mean_ratio'], 2)} (the table has their median; "
        f"best round / best round {ap['min_mean_ratio']:.2f})"
    )
    out.append(
        f"- append p99 per round (ns, timer overhead ~{facts['timer_overhead_ns']:.0f} ns included), "
        f"dreamlake: {fmt(ap['per_round_p99_ns']['dreamlake'])}; "
        f"baseline: {fmt(ap['per_round_p99_ns']['baseline'])}"
    )
    if ap["agent_flushes"] != ap["explicit_flushes"]:
        out.append(
            f"- WARNING: the agent flushed {ap['agent_flushes']} times during the append bench, "
            f"not only the {ap['explicit_flushes']} flushes between blocks: it may have run during timing"
        )
    n = args.points
    runs = results["e2e"]["runs"]
    loop_us = statistics.median(r["append_loop_s"] for r in runs) / n * 1e6
    out.append(
        f"- end to end per run (s): {fmt([r['seconds'] for r in runs], 3)}, of which append loop "
        f"{fmt([r['append_loop_s'] for r in runs], 3)} and close() {fmt([r['close_s'] for r in runs], 3)}; "
        f"bare loop {fmt([r['seconds'] for r in results['e2e']['bare']], 3)}. With the agent running, "
        f"append() costs {loop_us * 1000:,.0f} ns per call (vs {ap['mean_ns']['dreamlake']:,.0f} ns "
        f"with the agent asleep). Agent options: {runs[0]['config']}"
    )
    bd = results["breakdown"]
    wall = bd["wall"]["total"]
    parts = "; ".join(
        f"{k} {v:.3f} s ({100 * v / wall:.0f}%)"
        for k, v in bd["cpu"].items()
        if not k.startswith("main: _wait")
    )
    waited = bd["stage_wall"].get("main: _wait_for_room (queue full)", 0.0)
    out.append(
        f"- CPU time per stage in one more end-to-end run ({wall:.2f} s wall, process CPU "
        f"{bd['process_cpu']:.2f} s; % of wall): {parts}. The producer waited {waited:.3f} s for room "
        f"({bd['calls'].get('main: _wait_for_room (queue full)', 0)} times); largest backlog seen by "
        f"the agent {bd['backlog']:,} points (max_queue {bd['max_queue']:,}); calls: {bd['calls']}"
    )
    tail = results["tail"]
    out.append(
        f"- tail read p90 (ms): big {tail['p90_ms']['big']:.2f}, small {tail['p90_ms']['small']:.2f}; "
        f"big track file written directly in {tail['build_big_s']:.1f} s"
    )
    st = results["stalled"]
    out.append(
        f"- stalled sink: RSS growth at N/2 {mb(st['rss_growth_half'])}, at N {mb(st['rss_growth_end'])}, "
        f"peak {mb(st['rss_growth_peak'])}; agent stats {st['stats']}; "
        f"{st['drop_warnings']} RuntimeWarning(s); "
        f"{args.stall_points:,} appends took {st['append_loop_s']:.2f} s; close(timeout=1) took "
        f"{st['close_s']:.2f} s and raised {st['close_error']!r}"
    )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
