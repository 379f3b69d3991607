"""Remote-mode benchmarks of dreamlake: end-to-end throughput to a real server, append() cost, and
memory and disk while the server is stalled.

Run::

    python benchmarks/bench_remote.py [--quick] [--json PATH] [--check] [--profile] [--chunk-size N]

One ``python -m dreamlake serve --host 127.0.0.1 --port 0 --data DIR --chunk-size 10000`` runs in a
child process (its own process group, its output in files) for the whole run, with a token from
``python -m dreamlake token create``; it is resumed (SIGCONT) and stopped by its PID (SIGTERM, then
SIGKILL of its group after 30 s) in a ``finally``, also on Ctrl-C or SIGTERM. Every client runs in
a fresh subprocess, so the client and the server never share a GIL; they do share the machine's
cores (2 here), so every figure includes that competition. Everything lives in a temporary
directory deleted at the end; ``DREAMLAKE_*`` variables are removed for the children. The load
average is printed at the start and the end: other work on the machine shows in every figure. "Remote"
means remote-only (``Session(name, ws, remote=URL, api_key=TOKEN)`` with ``DREAMLAKE_LOCAL_PATH``
set, so only the spool, which is the journal, is written locally, under ``ROOT/.spool``); "hybrid"
passes ``local_path`` as well; "local" is ``Session(name, ws, local_path=ROOT)``.

In remote mode the hot path writes every point into the spool (``ROOT/.spool/<writer>.spool``, a
``MAP_SHARED`` sparse file of two halves of ``max(4 MiB, max_queue x 64 bytes)``), where it stays
until the server acknowledges it. At each flush the agent hands what it takes from the queue to the
sink, which encodes it as JSON lines into the batch being formed (``Batch.add_track``, in a worker
thread); the flush seals that batch, held in memory until acknowledged; a sender task builds each
request (``Sender.prepare``: msgpack, then zstd or gzip, in a worker thread, the next one while one
is on the wire) and posts them one at a time.

Methods
-------
1. End to end. ``--points`` (default 1,000,000; quick 200,000) calls of
   ``track.append(value=float(i), step=i)`` on one track with the default agent options, timed from
   the first append until ``close()`` returns; ``open()`` is not timed. After ``close()``: remote
   and hybrid require ``agent_stats()["unsentPoints"] == 0``, no ``.spool`` file left (a spool is
   deleted at close once everything in it is acknowledged) and the server's
   ``GET .../tracks/loss/stats`` to report ``totalDataPoints == N`` (read over plain HTTP); local and
   hybrid require ``data.jsonl`` to hold N lines, the last with index N-1. ``--runs`` (3) runs of
   local and remote, ``--hybrid-runs`` (3; quick 1) of hybrid, each in a fresh subprocess, the
   order of local and remote swapped every run; medians are reported. After each run that sent
   points, the parent waits (untimed) until the server's archiver has moved every full chunk of
   that track to the cold tier, so no run competes with the previous run's archiving. The server's
   CPU time (``psutil``) during each run and during that archiving is noted.
   Bars: remote >= 500,000 pts/s and remote throughput >= 0.33x local. Hybrid is shown for scale.

2. ``append()`` per call with the agent running, one subprocess holding a local and a remote
   session (default agent options: the agent wakes every ``batch_size`` = 50,000 points, so it
   forms and sends batches while a block runs). The remote session talks to a server of its own,
   started under ``nice -n 19``: it stands in for a server on another machine, taking only the CPU
   the client leaves idle, so its ingest does not compete with the appending thread for the two
   cores (section 1 measures the server on equal terms). Per round and side, ``--calls`` (200,000;
   quick 50,000) appends timed as one block with ``perf_counter_ns`` (and the appending thread's
   CPU time, ``thread_time_ns``); then, untimed, ``flush()`` (remote: until the server acknowledged
   everything, and then until it has archived it, so no block competes with the server's
   archiving) and ``gc.collect()``. One discarded warm-up round, then ``--rounds`` (11; quick 3),
   the order of the sides swapped every round. The whole is run in ``--append-runs`` (3; quick 1)
   subprocesses, each with a fresh server: how the threads land on the two cores is set early in a
   process and moved one run's ratio by up to 0.15 (1.07x one run, 1.14x the next), so rounds of
   several processes are pooled. Figure: the median over the pooled rounds of the per-call mean;
   ratio: the median of the pooled per-round remote/local ratios (and each run's, in the notes).
   Bar: <= 1.1 (wall time).

3. Stalled server, in a subprocess: a remote-only session with ``max_queue=200,000`` and
   ``on_full="drop_newest"`` is opened while the server answers (``open()`` creates the session on
   the server); then the child SIGSTOPs the server (by the PID the parent gave it) and makes
   ``--stall-points`` (2,000,000; quick 500,000) appends. Nothing is acknowledged, so the spool
   fills (one half sealed at the first flush, the other written until full) and ``drop_newest``
   drops the rest; the queue drains into batches held in memory. RSS growth: the largest of the
   peak RSS (``VmHWM``, reset just before the stall) and the RSS sampled after N/2 appends, after N
   and once the agent has handed the whole queue to the sink (``agent_stats()["queued"] == 0``,
   waited for up to 30 s), minus the RSS before the stall; it includes the spool's pages mapped by
   the process (``RssFile``, noted apart from ``RssAnon``). Baseline: the RSS growth of a plain list
   of ``max_queue`` such dicts (another subprocess). Bar: ratio <= 1.5 (the bar of bench_core's
   stalled sink). At that moment: the spool's bytes on disk (``st_blocks * 512`` of the ``.spool``
   files; their apparent size is noted), the points accepted (``N - dropped``) and dropped, and
   ``unsentPoints``/``unsentBytes``, which must account for every accepted point. Then the child
   SIGCONTs the server and ``close()``s, timed: the accepted points are sent (figure: accepted /
   seconds), and the server must report exactly the accepted points, ``unsentPoints`` must be 0 and
   the spool deleted.

4. Not in the table: one more remote end-to-end run with per-stage accounting (CPU time of the
   calling thread, ``time.thread_time``, and wall time) around ``PointQueue.take`` (the agent taking
   points from the queue), ``Batch.add_track`` (encoding them as JSON lines, in a worker thread),
   ``Sender.prepare`` (the request: msgpack of the body and its compression, each also timed alone,
   in a worker thread), the spool's marks (``Outbox.sending``/``acked``: a batch's number and ends
   written before it is sent, its points marked stored and the half freed once acknowledged), the
   whole agent thread, and the wall time spent waiting for HTTP answers; each batch's send (start,
   duration, points, JSON and body size); the spool's bytes on disk when the append loop ends; plus
   the server's CPU time. ``--profile`` runs that child once more under ``py-spy record`` (if it
   is installed), with another ``py-spy`` attached to the server until its archiving is done, and
   prints where the samples of each fall. ``--chunk-size 1000000000`` keeps the server's archiver
   idle (no track fills a chunk), which shows what archiving costs the ingest.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
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

import httpx
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
    terminate,
)
from dreamlake import Session, Track
from dreamlake._agent.spool import half_bytes

perf_counter_ns = time.perf_counter_ns
thread_time_ns = time.thread_time_ns
WORKSPACE = "bench"
TRACK = "loss"
DEFAULT_CHUNK = 10_000  # the server's default --chunk-size, passed explicitly
READY = "dreamlake serve: listening on "
TOKEN_VAR = "BENCH_REMOTE_TOKEN"  # how the parent hands the token to its children


# --------------------------------------------------------------------------------------------------
# helpers


def pts(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} pts/s ({seconds:.2f} s)"


def spool_files(root: Path) -> list[Path]:
    """The spools under a local root (``ROOT/.spool/<writer>.spool``)."""
    return sorted((root / ".spool").glob("*.spool"))


def spool_disk(root: Path) -> tuple[int, int]:
    """Bytes the spools under ``root`` take on disk (``st_blocks * 512``: they are sparse) and
    their apparent size."""
    stats = [p.stat() for p in spool_files(root)]
    return sum(st.st_blocks * 512 for st in stats), sum(st.st_size for st in stats)


def rss_parts() -> dict[str, int]:
    """``RssAnon`` (heap), ``RssFile`` (mapped files: the spool) and ``RssShmem`` of this process,
    in bytes (Linux; empty elsewhere)."""
    parts: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                parts[key] = int(value.split()[0]) * 1024
    return parts


def check_jsonl(path: Path, n: int) -> bool:
    """``data.jsonl`` holds ``n`` lines and the last one has index ``n - 1``."""
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            lines += chunk.count(b"\n")
        f.seek(max(0, f.tell() - 4096))
        last = json.loads(f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])
    return lines == n and last["index"] == n - 1


def server_track(url: str, token: str, session: str) -> dict[str, Any]:
    """The server's id of ``session`` and the stats of its track, over plain HTTP."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        response = c.post(f"/workspaces/{WORKSPACE}/sessions", json={"name": session})
        response.raise_for_status()
        sid = str(response.json()["session"]["id"])
        response = c.get(f"/sessions/{sid}/tracks/{TRACK}/stats")
        response.raise_for_status()
        stats = response.json()
    return {"id": sid, **{k: int(stats[k]) for k in ("totalDataPoints", "chunkedDataPoints")}}


def wait_archived(url: str, token: str, session: str, chunk: int, timeout: float = 120.0) -> float:
    """Wait until the archiver has moved every full chunk of ``session``'s track; the seconds waited."""
    t0 = time.perf_counter()
    while True:
        track = server_track(url, token, session)
        if track["chunkedDataPoints"] == track["totalDataPoints"] // chunk * chunk:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"the archiver did not catch up with {session} in {timeout} s: {track}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# the server (parent)


class Server:
    """``dreamlake serve`` on 127.0.0.1 and a free port, in its own process group."""

    def __init__(self, data: Path, logs: Path, chunk: int, timeout: float = 60.0, nice: int = 0) -> None:
        self.data = data
        self.chunk = chunk
        self.out, self.err = logs / f"serve{nice or ''}.out", logs / f"serve{nice or ''}.err"
        cmd = [
            *(["nice", "-n", str(nice)] if nice else []),  # nice execs: the PID stays the server's
            sys.executable,
            "-m",
            "dreamlake",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data",
            str(data),
            "--chunk-size",
            str(chunk),
            "--log-level",
            "warning",
        ]
        with open(self.out, "w") as out, open(self.err, "w") as err:  # files: no pipe to fill up
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=clean_env(), start_new_session=True
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while True:
            for line in self.out.read_text().splitlines():
                if line.startswith(READY):
                    self.url = line[len(READY) :].strip()
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dreamlake serve did not start: {self.err.read_text()[-2000:]}")
            time.sleep(0.05)

    def token(self) -> str:
        cmd = [
            sys.executable,
            "-m",
            "dreamlake",
            "token",
            "create",
            "--data",
            str(self.data),
            "--workspace",
            WORKSPACE,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=60, check=True)
        return done.stdout.strip().splitlines()[-1]

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def wait_archived(self, token: str, session: str) -> float:
        """Wait until the archiver has moved every full chunk of ``session``'s track; the seconds waited."""
        return wait_archived(self.url, token, session, self.chunk)

    def stop(self) -> None:
        """Resume it (it may be SIGSTOPped), SIGTERM it by PID, SIGKILL its group after 30 s."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()


def run_child(
    mode: str,
    directory: Path,
    args: argparse.Namespace,
    server: Server | None,
    token: str,
    prefix: Sequence[str] = (),
) -> dict[str, Any]:
    """Run this script in ``--child`` mode in a fresh interpreter (under ``prefix``, e.g. a profiler);
    return its JSON result. The token goes in the environment, not on a command line."""
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [
        *prefix,
        sys.executable,
        __file__,
        "--child",
        mode,
        "--child-dir",
        str(directory),
        "--points",
        str(args.points),
        "--calls",
        str(args.calls),
        "--rounds",
        str(args.rounds),
        "--stall-points",
        str(args.stall_points),
        "--stall-max-queue",
        str(args.stall_max_queue),
        "--chunk-size",
        str(args.chunk_size),
    ]
    if server is not None:
        cmd += ["--url", server.url, "--server-pid", str(server.pid)]
    env = clean_env(**{TOKEN_VAR: token})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    # The last JSON line: a profiler wrapping the child (``prefix``) may print after it.
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("{"))
    result: dict[str, Any] = json.loads(line)
    result["stderr"] = proc.stderr[-2000:]
    return result


# --------------------------------------------------------------------------------------------------
# children


def open_session(mode: str, name: str, directory: Path, url: str, token: str, **options: Any) -> Session:
    """A session of ``mode`` (local, remote, hybrid); remote-only keeps its spool under ``directory``."""
    if mode == "local":
        return Session(name, WORKSPACE, local_path=directory, **options).open()
    if mode == "hybrid":
        return Session(name, WORKSPACE, remote=url, api_key=token, local_path=directory, **options).open()
    os.environ["DREAMLAKE_LOCAL_PATH"] = str(directory)  # where remote-only mode keeps its spool
    try:
        return Session(name, WORKSPACE, remote=url, api_key=token, **options).open()
    finally:
        del os.environ["DREAMLAKE_LOCAL_PATH"]


def child_e2e(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    directory, n = Path(args.child_dir), args.points
    name = directory.name
    session = open_session(mode, name, directory, args.url, args.token)  # default agent options
    track = session.track(TRACK)
    gc.collect()
    times0 = os.times()
    t0 = time.perf_counter()
    for i in range(n):
        track.append(value=float(i), step=i)
    t1 = time.perf_counter()
    session.close()
    t2 = time.perf_counter()
    times1 = os.times()
    stats = session.agent_stats()
    result: dict[str, Any] = {
        "seconds": t2 - t0,
        "append_loop_s": t1 - t0,
        "close_s": t2 - t1,
        "client_cpu_s": (times1.user + times1.system) - (times0.user + times0.system),
        "stats": {k: v for k, v in stats.items() if k != "flushLatencyMs"},
        "session": name,
    }
    ok = stats["written"] == n
    if mode != "local":
        server = server_track(args.url, args.token, name)
        result["server_total"] = server["totalDataPoints"]
        result["spools_left"] = len(spool_files(directory))  # deleted at close once all is acknowledged
        ok = (
            ok and stats["unsentPoints"] == 0 and not result["spools_left"] and server["totalDataPoints"] == n
        )
    if mode != "remote":
        ok = ok and check_jsonl(directory / WORKSPACE / name / "tracks" / TRACK / "data.jsonl", n)
    result["ok"] = ok
    return result


def append_block(track: Track, n: int) -> tuple[int, int]:
    """Wall and calling-thread CPU nanoseconds of ``n`` appends."""
    start, cpu = perf_counter_ns(), thread_time_ns()
    for i in range(n):
        track.append(value=float(i), step=i)
    return perf_counter_ns() - start, thread_time_ns() - cpu


def child_append(args: argparse.Namespace) -> dict[str, Any]:
    """Section 2: a local and a remote session in one process, blocks alternating."""
    directory, n = Path(args.child_dir), args.calls
    sessions = {
        "local": open_session("local", "append-local", directory / "local", args.url, args.token),
        "remote": open_session("remote", "append-remote", directory / "remote", args.url, args.token),
    }
    tracks = {side: s.track(TRACK) for side, s in sessions.items()}
    means: dict[str, list[float]] = {side: [] for side in sessions}
    cpu: dict[str, list[float]] = {side: [] for side in sessions}
    appended = 0
    for r in range(-1, args.rounds):  # round -1 warms up (first-touch page faults, connections), discarded
        order = ("remote", "local") if r % 2 == 0 else ("local", "remote")
        for side in order:
            gc.collect()
            elapsed, cpu_ns = append_block(tracks[side], n)
            sessions[side].flush()  # remote: until the server acknowledged it all
            if side == "remote":  # and archived: no block competes with the server's archiving
                wait_archived(args.url, args.token, "append-remote", args.chunk_size)
            if r >= 0:
                means[side].append(elapsed / n)
                cpu[side].append(cpu_ns / n)
        appended += n
    stats = {side: s.agent_stats() for side, s in sessions.items()}
    for s in sessions.values():
        s.close()
    server = server_track(args.url, args.token, "append-remote")
    ok = all(st["written"] == appended for st in stats.values()) and server["totalDataPoints"] == appended
    ratios = [rm / lm for rm, lm in zip(means["remote"], means["local"], strict=True)]
    cpu_ratios = [rm / lm for rm, lm in zip(cpu["remote"], cpu["local"], strict=True)]
    return {
        "per_round_ns": means,
        "per_round_ratio": ratios,
        "per_round_cpu_ns": cpu,
        "per_round_cpu_ratio": cpu_ratios,
        "remote_requests": stats["remote"]["requests"],
        "ok": ok,
    }


def pool_append_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Section 2's figures over the rounds of every run (see the docstring)."""

    def pooled(key: str) -> Any:
        if isinstance(runs[0][key], dict):
            return {side: [v for r in runs for v in r[key][side]] for side in runs[0][key]}
        return [v for r in runs for v in r[key]]

    means, cpu = pooled("per_round_ns"), pooled("per_round_cpu_ns")
    return {
        "mean_ns": {side: statistics.median(v) for side, v in means.items()},
        "ratio": statistics.median(pooled("per_round_ratio")),
        "cpu_ns": {side: statistics.median(v) for side, v in cpu.items()},
        "cpu_ratio": statistics.median(pooled("per_round_cpu_ratio")),
        "per_run_ratio": [statistics.median(r["per_round_ratio"]) for r in runs],
        "per_round_ns": means,
        "per_round_ratio": pooled("per_round_ratio"),
        "remote_requests": sum(r["remote_requests"] for r in runs),
        "ok": all(r["ok"] for r in runs),
    }


def child_stalled(args: argparse.Namespace) -> dict[str, Any]:
    """Section 3: SIGSTOP the server after open(), append, measure, SIGCONT, close()."""
    directory, n, max_queue = Path(args.child_dir), args.stall_points, args.stall_max_queue
    session = open_session(
        "remote", directory.name, directory, args.url, args.token, max_queue=max_queue, on_full="drop_newest"
    )
    track = session.track(TRACK)
    rss0 = reset_peak_rss()
    parts0 = rss_parts()
    os.kill(args.server_pid, signal.SIGSTOP)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            for i in range(n // 2):
                track.append(value=float(i), step=i)
            rss_half = rss()
            for i in range(n // 2, n):
                track.append(value=float(i), step=i)
            t1 = time.perf_counter()
            rss_end = rss()
            queued = -1
            while time.perf_counter() - t1 < 30:  # until the agent has handed the queue to the sink
                queued = int(session.agent_stats()["queued"])
                if queued == 0:
                    break
                time.sleep(0.01)
            t2 = time.perf_counter()
            rss_handed = rss()
            parts = rss_parts()
            peak = peak_rss()
            stats = session.agent_stats()
            spool_bytes, spool_size = spool_disk(directory)
    finally:
        os.kill(args.server_pid, signal.SIGCONT)
    c0 = time.perf_counter()
    reset_peak_rss()
    rss_before_close = rss()
    session.close()
    close_s = time.perf_counter() - c0
    drain_growth = peak_rss() - rss_before_close
    final = session.agent_stats()
    server = server_track(args.url, args.token, directory.name)
    dropped = int(stats["dropped"])
    accepted = n - dropped
    # Nothing was acknowledged during the stall: every accepted point is in a batch or still queued.
    accounted = int(stats["unsentPoints"]) + int(stats["queued"]) == accepted
    spools_left = len(spool_files(directory))
    return {
        "append_loop_s": t1 - t0,
        "handover_s": t2 - t1,
        "queued_after": queued,
        "rss_growth": max(peak, rss_half, rss_end, rss_handed) - rss0,
        "rss_growth_half": rss_half - rss0,
        "rss_growth_end": rss_end - rss0,
        "rss_growth_handed": rss_handed - rss0,
        "rss_parts_growth": {k: v - parts0.get(k, 0) for k, v in parts.items()},
        "spool_disk_bytes": spool_bytes,
        "spool_size_bytes": spool_size,
        "accepted": accepted,
        "dropped": dropped,
        "accounted": accounted,
        "stats": {
            k: stats[k]
            for k in (
                "written",
                "queued",
                "dropped",
                "flushes",
                "requests",
                "unsentPoints",
                "unsentBytes",
                "unspooled",
                "lastRemoteError",
            )
        },
        "drop_warnings": sum(issubclass(w.category, RuntimeWarning) for w in caught),
        "close_s": close_s,
        "close_rss_growth": drain_growth,
        "final_unsent": final["unsentPoints"],
        "final_requests": final["requests"],
        "spools_left": spools_left,
        "server_total": server["totalDataPoints"],
        "session": directory.name,
        "ok": accounted
        and final["unsentPoints"] == 0
        and spools_left == 0
        and server["totalDataPoints"] == accepted,
    }


def child_list(args: argparse.Namespace) -> dict[str, Any]:
    rss0 = reset_peak_rss()
    lst: list[dict[str, Any]] = []
    for i in range(args.stall_max_queue):
        lst.append({"value": float(i), "step": i})  # noqa: PERF401 -- the baseline is this very loop
    return {"rss_growth": max(rss(), peak_rss()) - rss0, "len": len(lst)}


def child_breakdown(args: argparse.Namespace) -> dict[str, Any]:
    """Section 4: a remote end-to-end run with CPU and wall time per stage (monkeypatched)."""
    from dreamlake._agent import hosts, queue
    from dreamlake._sinks import outbox, sender

    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    calls: dict[str, int] = {}

    def account(key: str, c0: float, w0: float) -> None:
        cpu[key] = cpu.get(key, 0.0) + time.thread_time() - c0
        wall[key] = wall.get(key, 0.0) + time.perf_counter() - w0
        calls[key] = calls.get(key, 0) + 1

    def timed(key: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return func(*a, **kw)
            finally:
                account(key, c0, w0)

        return wrapper

    def timed_async(key: str, func: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(*a: Any, **kw: Any) -> Any:
            w0 = time.perf_counter()
            try:
                return await func(*a, **kw)
            finally:  # wall only: other tasks run on this thread while it waits
                wall[key] = wall.get(key, 0.0) + time.perf_counter() - w0
                calls[key] = calls.get(key, 0) + 1
                body[0] = len(kw.get("content") or b"")

        return wrapper

    body = [0]  # the size of the last request's body: batches are sent one at a time
    sends: list[tuple[float, float, int, int, int]] = []  # start, seconds, points, JSON bytes, body bytes
    send = sender.Sender.send

    async def timed_send(self: Any, batch: outbox.Batch, *a: Any, **kw: Any) -> None:
        w0 = time.perf_counter()
        await send(self, batch, *a, **kw)
        sends.append((w0, time.perf_counter() - w0, batch.points, batch.nbytes, body[0]))

    class TimedEncoder:
        def __init__(self, inner: Any) -> None:
            self.encode = timed("worker: msgpack encode of the body (in prepare)", inner.encode)

    patches: list[tuple[Any, str, Any]] = [
        (queue.PointQueue, "take", timed("agent: PointQueue.take", queue.PointQueue.take)),
        (
            outbox.Batch,
            "add_track",
            timed("worker: Batch.add_track (encode_points: JSON lines)", outbox.Batch.add_track),
        ),
        (
            sender.Sender,
            "prepare",
            timed("worker: Sender.prepare (msgpack + compression)", sender.Sender.prepare),
        ),
        (outbox, "_ENCODE", TimedEncoder(outbox._ENCODE)),
        (sender, "_compress", timed("worker: zstd/gzip compress (in prepare)", sender._compress)),
        (outbox.Outbox, "sending", timed("agent: spool marks, sending", outbox.Outbox.sending)),
        (outbox.Outbox, "acked", timed("agent: spool marks, acked + half freed", outbox.Outbox.acked)),
        (hosts.AgentThread, "_main", timed("agent thread (all, incl. start-up)", hosts.AgentThread._main)),
        (
            sender.Sender,
            "_request",
            timed_async("sender: HTTP request, waiting (wall)", sender.Sender._request),
        ),
        (sender.Sender, "send", timed_send),
    ]
    for owner, attr, value in patches:
        setattr(owner, attr, value)

    directory, n = Path(args.child_dir), args.points
    session = open_session("remote", directory.name, directory, args.url, args.token)
    track = session.track(TRACK)
    server_cpu0 = _process_cpu(args.server_pid)
    times0 = os.times()
    w0, c0 = time.perf_counter(), time.thread_time()
    for i in range(n):
        track.append(value=float(i), step=i)
    w1, c1 = time.perf_counter(), time.thread_time()
    spool_bytes, spool_size = spool_disk(directory)  # what the spool holds when the loop ends
    unsent_at_loop_end = session.agent_stats()
    w1b, c1b = time.perf_counter(), time.thread_time()
    session.close()
    w2, c2 = time.perf_counter(), time.thread_time()
    times1 = os.times()
    server_cpu = _process_cpu(args.server_pid) - server_cpu0
    cpu["main: append loop"], wall["main: append loop"] = c1 - c0, w1 - w0
    cpu["main: close()"], wall["main: close()"] = c2 - c1b, w2 - w1b
    stats = session.agent_stats()
    return {
        "wall": {"append_loop": w1 - w0, "close": w2 - w1b, "total": w2 - w0 - (w1b - w1)},
        "cpu": cpu,
        "stage_wall": wall,
        "calls": calls,
        "process_cpu": (times1.user + times1.system) - (times0.user + times0.system),
        "server_cpu": server_cpu,
        "requests": stats["requests"],
        "flushes": stats["flushes"],
        "json_bytes": sum(s[3] for s in sends if s[0] >= w0),
        "body_bytes": sum(s[4] for s in sends if s[0] >= w0),
        "spool_disk_bytes": spool_bytes,
        "spool_size_bytes": spool_size,
        "at_loop_end": {
            k: unsent_at_loop_end[k] for k in ("queued", "unsentPoints", "unsentBytes", "requests")
        },
        # the batches sent from the first append on: start (s after it), wall ms, points, JSON KB, body KB
        "sends": [
            (round(t - w0, 3), round(d * 1000), p, round(j / 1024), round(b / 1024))
            for t, d, p, j, b in sends
            if t >= w0
        ],
        "ok": stats["unsentPoints"] == 0 and stats["written"] == n,
    }


def _process_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def child_main(args: argparse.Namespace) -> None:
    result: dict[str, Any]
    if args.child in ("local", "remote", "hybrid"):
        result = child_e2e(args.child, args)
    elif args.child == "append":
        result = child_append(args)
    elif args.child == "stalled":
        result = child_stalled(args)
    elif args.child == "list":
        result = child_list(args)
    elif args.child == "breakdown":
        result = child_breakdown(args)
    else:
        raise SystemExit(f"unknown child mode {args.child!r}")
    print(json.dumps(result), flush=True)
    os._exit(0)  # the agent threads are done; skip the interpreter's teardown


# --------------------------------------------------------------------------------------------------
# py-spy (optional)


def py_spy_summary(raw: Path, top: int = 25) -> str:
    """The functions with the most samples (own and inclusive) in a py-spy ``raw`` (collapsed) file.

    Samples taken while the process imports modules or opens the session (start-up, before the
    timed part) are left out; frames are shown as ``function (file:line)`` without the thread.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = startup = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        count = int(count_s)
        thread, *frames = stack.split(";")
        if any("_find_and_load" in f or "Agent.open" in f for f in frames):
            startup += count
            continue
        total += count
        name = thread.split(":", 1)[0]  # "thread (tid): name" and "thread (tid)" are the same thread
        threads[name] = threads.get(name, 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return f"py-spy: no samples after start-up ({startup} during it)"

    def top_of(counts: dict[str, int]) -> list[str]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"  {100 * v / total:5.1f}%  {k}" for k, v in ordered]

    per_thread = ", ".join(
        f"{k} {100 * v / total:.0f}%" for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
    )
    head = f"py-spy: {total} samples after start-up ({startup} left out); per thread: {per_thread}"
    return "\n".join([head, "own time:", *top_of(own), "inclusive:", *top_of(inclusive)])


# --------------------------------------------------------------------------------------------------
# main


def machine_facts() -> dict[str, Any]:
    return {
        **platform_facts(),
        "memory": mb(psutil.virtual_memory().total),
        "dreamlake": dreamlake.__version__,
        "versions": {d: dist_version(d) for d in ("msgspec", "anyio", "httpx", "uvicorn", "starlette")},
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="dreamlake remote-mode benchmarks (see the module docstring)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller, faster run (rough figures)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 if a bar or a check fails")
    parser.add_argument("--profile", action="store_true", help="also run the breakdown under py-spy")
    parser.add_argument("--points", type=int, default=None, help="end-to-end points (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=None, help="end-to-end runs per mode (default 3)")
    parser.add_argument("--hybrid-runs", type=int, default=None, help="hybrid runs (default --runs, quick 1)")
    parser.add_argument("--calls", type=int, default=None, help="appends per append() block (200,000)")
    parser.add_argument("--rounds", type=int, default=None, help="append() rounds per run (11, quick 3)")
    parser.add_argument("--append-runs", type=int, default=None, help="append() subprocesses (3, quick 1)")
    parser.add_argument("--stall-points", type=int, default=None, help="stalled-server appends (2M)")
    parser.add_argument("--stall-max-queue", type=int, default=None, help="stalled max_queue (200,000)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK,
        help="the server's --chunk-size (default 10,000; a huge one keeps the archiver idle)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.token = os.environ.get(TOKEN_VAR)
    quick = args.quick
    defaults = {
        "points": 200_000 if quick else 1_000_000,
        "runs": 3,
        "hybrid_runs": 1 if quick else (args.runs or 3),
        "calls": 50_000 if quick else 200_000,
        "rounds": 3 if quick else 11,
        "append_runs": 1 if quick else 3,
        "stall_points": 500_000 if quick else 2_000_000,
        "stall_max_queue": 200_000,
    }
    apply_defaults(args, defaults)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    signal.signal(signal.SIGTERM, terminate)
    drop_dreamlake_env()

    command = shlex.join([sys.executable, *sys.argv])
    facts = machine_facts()
    print(f"# dreamlake remote-mode benchmarks\n\ncommand: `{command}`\n")
    print(
        platform_line(facts)
        + f"dreamlake {facts['dreamlake']}; "
        + ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
        + "\n",
        flush=True,
    )
    load0 = os.getloadavg()
    print(
        f"load average at start (1, 5, 15 min): {load0[0]:.2f}, {load0[1]:.2f}, {load0[2]:.2f}\n", flush=True
    )
    started = time.perf_counter()
    results: dict[str, Any] = {"step_seconds": {}, "loadavg_start": load0}
    last_start, last_label = started, ""

    def step(label: str) -> None:
        nonlocal last_start, last_label
        now = time.perf_counter()
        if last_label:
            results["step_seconds"][last_label] = round(now - last_start, 2)
        last_start, last_label = now, label
        if label:
            print(f"- {label} ...", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="dreamlake-bench-remote-"))
    server: Server | None = None
    try:
        step("server start and token")
        (tmp / "logs").mkdir()
        server = Server(tmp / "server", tmp / "logs", args.chunk_size)
        token = server.token()

        modes = ("local", "remote", "hybrid")
        step(
            f"end to end: {args.points:,} points, {args.runs} runs of local and remote, "
            f"{args.hybrid_runs} of hybrid (subprocesses)"
        )
        e2e: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for r in range(args.runs):
            order = modes if r % 2 == 0 else ("remote", "local", "hybrid")
            for mode in order[: 3 if r < args.hybrid_runs else 2]:
                directory = tmp / f"e2e-{mode}-{r}"
                cpu0 = server.cpu_seconds()
                result = run_child(mode, directory, args, server, token)
                result["server_cpu_s"] = server.cpu_seconds() - cpu0
                if mode != "local":
                    cpu1 = server.cpu_seconds()
                    result["archive_wait_s"] = server.wait_archived(token, result["session"])
                    result["server_cpu_after_s"] = server.cpu_seconds() - cpu1
                e2e[mode].append(result)
                shutil.rmtree(directory, ignore_errors=True)
        results["e2e"] = e2e

        step(
            f"append() per call, agent running: {args.append_runs} x {args.rounds} rounds of {args.calls:,} "
            "(subprocesses, each with a server of its own at nice 19)"
        )
        # The server stands in for another machine: at nice 19 it takes only the CPU the client
        # leaves idle, so the two sides' blocks differ by the client's own work, not by the
        # server's ingest and archiving competing with the appending thread for the two cores.
        runs = []
        for k in range(args.append_runs):
            niced = Server(tmp / f"server-nice-{k}", tmp / "logs", args.chunk_size, nice=19)
            try:
                runs.append(run_child("append", tmp / "append", args, niced, niced.token()))
            finally:
                niced.stop()
            shutil.rmtree(tmp / "append", ignore_errors=True)
        results["append"] = pool_append_runs(runs)

        step(
            f"stalled server: {args.stall_points:,} appends, max_queue {args.stall_max_queue:,} (subprocess)"
        )
        results["list"] = run_child("list", tmp / "list", args, None, token)
        try:
            results["stalled"] = run_child("stalled", tmp / "stalled", args, server, token)
        finally:
            os.kill(server.pid, signal.SIGCONT)  # the child did; again, in case it died before
        server.wait_archived(token, results["stalled"]["session"])
        shutil.rmtree(tmp / "stalled", ignore_errors=True)

        step("remote end to end once more, with per-stage accounting (not in the table)")
        results["breakdown"] = run_child("breakdown", tmp / "breakdown", args, server, token)
        server.wait_archived(token, "breakdown")
        shutil.rmtree(tmp / "breakdown", ignore_errors=True)

        if args.profile:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            if Path(spy).exists():
                step("remote end to end under py-spy, client and server (not in the table)")
                record = [spy, "record", "--format", "raw", "--rate", "200", "--threads", "--nonblocking"]
                client_raw, server_raw = tmp / "py-spy-client.txt", tmp / "py-spy-server.txt"
                # py-spy on the server from before the run until its archiving is done.
                spy_server = subprocess.Popen(
                    [*record, "--pid", str(server.pid), "--output", str(server_raw)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    time.sleep(0.5)  # attach
                    run_child(
                        "breakdown",
                        tmp / "spy",
                        args,
                        server,
                        token,
                        prefix=[*record, "--output", str(client_raw), "--"],
                    )
                    server.wait_archived(token, "spy")
                finally:
                    if spy_server.poll() is None:
                        spy_server.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    try:
                        spy_server.wait(30)
                    except subprocess.TimeoutExpired:
                        spy_server.kill()
                        spy_server.wait()
                results["py_spy"] = (
                    "CLIENT (the breakdown run under py-spy; slower than unprofiled)\n"
                    + py_spy_summary(client_raw)
                    + "\n\nSERVER (the same run and its archiving)\n"
                    + (py_spy_summary(server_raw) if server_raw.exists() else "(no samples written)")
                )
            else:
                results["py_spy"] = "py-spy is not installed (pip install py-spy)"
        step("")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started

    rows = build_rows(args, results)
    print()
    print(markdown(rows))
    print()
    print(notes(args, results))
    if "py_spy" in results:
        print("\n" + results["py_spy"])
    load1 = os.getloadavg()
    print(
        f"\ntotal benchmark time {elapsed:.0f} s; per step (s): {results['step_seconds']}; load average at "
        f"the end {load1[0]:.2f}, {load1[1]:.2f}, {load1[2]:.2f}"
    )
    failed = [r["measure"] for r in rows if r["ok"] is False]
    if args.json:
        payload = {
            "command": command,
            "machine": facts,
            "rows": rows,
            "results": results,
            "params": {k: v for k, v in vars(args).items() if k not in ("child", "token")},
            "failed": failed,
            "elapsed_s": elapsed,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    return 1 if args.check and failed else 0


def build_rows(args: argparse.Namespace, results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    n, runs = args.points, args.runs
    e2e = results["e2e"]
    secs = {mode: statistics.median(r["seconds"] for r in e2e[mode]) for mode in e2e}
    remote_rate, local_rate = n / secs["remote"], n / secs["local"]
    rows.append(
        row(
            f"remote end to end, {n:,} points, first append to close() (median of {runs})",
            pts(n, secs["remote"]),
            f"{pts(n, secs['local'])} local",
            remote_rate / local_rate,
            ">= 500,000 pts/s and >= 0.33x",
            remote_rate >= 500_000 and remote_rate >= 0.33 * local_rate,
        )
    )
    rows.append(
        row(
            f"hybrid end to end, {n:,} points (median of {args.hybrid_runs})",
            pts(n, secs["hybrid"]),
            f"{pts(n, secs['local'])} local",
            (n / secs["hybrid"]) / local_rate,
            "info",
            None,
        )
    )
    rows.append(
        row(
            "remote+hybrid: unsentPoints after close / spools left / server totalDataPoints (every run)",
            " ; ".join(
                f"{r['stats']['unsentPoints']} / {r['spools_left']} / {r['server_total']:,}"
                for r in [*e2e["remote"], *e2e["hybrid"]]
            ),
            f"0 / 0 / {n:,}",
            None,
            "all acknowledged, spool deleted (local, hybrid: data.jsonl complete)",
            all(r["ok"] for mode in e2e for r in e2e[mode]),
        )
    )

    ap = results["append"]
    rows.append(
        row(
            f"append() mean per call, agent running ({ap_rounds(ap)} rounds of {args.calls:,})",
            f"{ns(ap['mean_ns']['remote'])} remote",
            f"{ns(ap['mean_ns']['local'])} local",
            ap["ratio"],
            "ratio <= 1.1",
            ap["ratio"] <= 1.1,
        )
    )

    st, lst = results["stalled"], results["list"]
    mq = args.stall_max_queue
    rows.append(
        row(
            f"server stalled (SIGSTOP): client RSS growth, {args.stall_points:,} appends, "
            f"max_queue {mq:,}, drop_newest",
            mb(st["rss_growth"]),
            f"{mb(lst['rss_growth'])} (list of {mq:,} dicts)",
            st["rss_growth"] / lst["rss_growth"],
            "ratio <= 1.5",
            st["rss_growth"] <= 1.5 * lst["rss_growth"],
        )
    )
    half = half_bytes(mq)
    rows.append(
        row(
            "server stalled: spool on disk (st_blocks) / points accepted / dropped",
            f"{mb(st['spool_disk_bytes'])} / {st['accepted']:,} / {st['dropped']:,}",
            f"{args.stall_points:,} appended; bound: two halves of {mb(half)}",
            None,
            "spool <= two halves",
            st["spool_disk_bytes"] <= 2 * half,
        )
    )
    rows.append(
        row(
            "after SIGCONT: close() sends the accepted points; server totalDataPoints",
            f"{pts(st['accepted'], st['close_s'])}; {st['server_total']:,}",
            f"{st['accepted']:,} accepted (appended - dropped)",
            None,
            "all acknowledged, spool deleted",
            st["ok"],
        )
    )
    return rows


def ap_rounds(ap: dict[str, Any]) -> int:
    return len(ap["per_round_ratio"])


def notes(args: argparse.Namespace, results: dict[str, Any]) -> str:
    out = ["Notes:"]
    e2e = results["e2e"]
    for mode, runs in e2e.items():
        extra = ""
        if mode != "local":
            extra = (
                f"; server CPU during the run {fmt([r['server_cpu_s'] for r in runs], 2)}, then "
                f"archiving {fmt([r['server_cpu_after_s'] for r in runs], 2)}; requests "
                f"{[r['stats']['requests'] for r in runs]}, retries {[r['stats']['retries'] for r in runs]}, "
                f"flushes {[r['stats']['flushes'] for r in runs]}; then waited "
                f"{fmt([r['archive_wait_s'] for r in runs], 2)} s for the archiver"
            )
        out.append(
            f"- {mode} end to end per run (s): {fmt([r['seconds'] for r in runs], 3)}, of which append "
            f"loop {fmt([r['append_loop_s'] for r in runs], 3)} and close() "
            f"{fmt([r['close_s'] for r in runs], 3)}; "
            f"client CPU {fmt([r['client_cpu_s'] for r in runs], 2)}{extra}"
        )
    ap = results["append"]
    out.append(
        f"- append() mean per round (ns), remote: {fmt(ap['per_round_ns']['remote'])}; local: "
        f"{fmt(ap['per_round_ns']['local'])}; ratios {fmt(ap['per_round_ratio'], 2)}; median ratio of "
        f"each run {fmt(ap['per_run_ratio'], 2)}; "
        f"{ap['remote_requests']} requests sent; all points on the server: {ap['ok']}; appending "
        f"thread's CPU per call {ns(ap['cpu_ns']['remote'])} remote, {ns(ap['cpu_ns']['local'])} "
        f"local, ratio {ap['cpu_ratio']:.2f}"
    )
    st = results["stalled"]
    parts = ", ".join(f"{k} {mb(v)}" for k, v in st["rss_parts_growth"].items())
    out.append(
        f"- stalled: RSS growth at N/2 {mb(st['rss_growth_half'])}, at N {mb(st['rss_growth_end'])}, once "
        f"handed over {mb(st['rss_growth_handed'])} ({parts}), peak {mb(st['rss_growth'])}; "
        f"{args.stall_points:,} appends took {st['append_loop_s']:.2f} s, the agent handed the rest of the "
        f"queue to the sink in {st['handover_s']:.2f} s (queued then {st['queued_after']}); spool "
        f"{mb(st['spool_disk_bytes'])} on disk, {mb(st['spool_size_bytes'])} apparent (sparse); "
        f"{st['accepted']:,} accepted, unsent + queued account for all of them: {st['accounted']}; "
        f"stats {st['stats']}; {st['drop_warnings']} RuntimeWarning(s); after SIGCONT close() took "
        f"{st['close_s']:.2f} s ({st['final_requests']} requests) and grew the peak RSS by "
        f"{mb(st['close_rss_growth'])}; spools left {st['spools_left']}"
    )
    bd = results["breakdown"]
    wall = bd["wall"]["total"]
    cpu = "; ".join(f"{k} {v:.3f} s" for k, v in bd["cpu"].items())
    waits = "; ".join(f"{k} {v:.3f} s" for k, v in bd["stage_wall"].items() if "wall" in k)
    out.append(
        f"- breakdown run ({args.points:,} points, {wall:.2f} s wall: append loop "
        f"{bd['wall']['append_loop']:.2f} s, close() {bd['wall']['close']:.2f} s; client process CPU "
        f"{bd['process_cpu']:.2f} s, server CPU {bd['server_cpu']:.2f} s; {bd['flushes']} flushes, "
        f"{bd['requests']} requests, {mb(bd['json_bytes'])} of JSON lines sent as {mb(bd['body_bytes'])} "
        f"of bodies; spool when the loop ended {mb(bd['spool_disk_bytes'])} on disk, "
        f"{mb(bd['spool_size_bytes'])} apparent; then {bd['at_loop_end']}). CPU per stage: {cpu}. Wall: "
        f"{waits}. Calls: {bd['calls']}. Batches sent (start s after the first append, wall ms, points, "
        f"JSON KB, body KB; the append loop ended at {bd['wall']['append_loop']:.2f} s): {bd['sends']}"
    )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
