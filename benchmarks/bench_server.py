"""Server benchmarks of ``dreamlake serve``: bulk ingest with the archiver keeping up, the 0.2.x
``append`` round trip, tail and cold-chunk reads, and the server's RSS over a long ingest.

Run::

    python benchmarks/bench_server.py [--quick] [--zstd] [--json PATH] [--check]
    python benchmarks/bench_server.py --hot mongodb://HOST/DB --cold s3://BUCKET/PREFIX [--quick]

With ``--hot``/``--cold`` only sections 1 and 3 run, twice: on the embedded tiers and on MongoDB
+ S3 (a fresh database ``DB_bench_<run>`` and prefix ``PREFIX/bench-<run>``; ``AWS_*`` variables
reach the server), each in its own server, with the same bodies; the table puts them side by side
with the time per bulk request, so the cost of each round trip to the database shows.

Every server runs as ``python -m dreamlake serve --host 127.0.0.1 --port 0 --data DIR`` in a child
process (its own process group) on a temporary ``--data`` directory, with a token from
``python -m dreamlake token create``; it is stopped by its PID (SIGTERM, then SIGKILL of its group
after 30 s) when its section ends, also on Ctrl-C or SIGTERM. This process is the load generator:
it shares the machine's cores with the server, so every figure includes that competition (the
baselines too). ``DREAMLAKE_*`` environment variables are removed for the children.

Methods
-------
1. Bulk ingest (server 1, after section 2). ``--requests`` (default 100) bodies of ``--points``
   (50,000) points ``{"value": float, "step": int}``, split evenly over ``--tracks`` (4) tracks,
   are msgpack-encoded before any timing (``--zstd``: also zstd-compressed and sent with
   ``Content-Encoding: zstd``). ``--connections`` (2) threads, one keep-alive ``httpx.Client``
   each, opened with a ``GET /health`` before the clock starts, take the next body in turn and
   ``POST /sessions/{id}/batches`` it with a fresh ``Idempotency-Key``. "Acknowledged": total
   points / time until the last 200. "Acknowledged + archived": total points / time until the
   ``stats`` of every track report ``chunkedDataPoints == floor(points_per_track / chunk) * chunk``
   (polled every 20 ms after the last response, deadline ``--archive-deadline``). Meanwhile a
   thread polls every track's ``stats`` every 0.2 s and keeps the largest ``bufferedDataPoints``,
   per track and summed over the tracks at one poll; the bar for "bounded" is the server's
   ``--max-buffered-chunks`` (passed by this script, default 50) times the chunk size, plus the
   points of the requests that can be in flight (one per connection): past it the bulk route
   answers 503 with ``Retry-After`` and this load generator waits, as the SDK does.

   Baselines, same run: (a) the same bodies, same connections, POSTed to the same route with an
   unknown session id: the server authenticates, looks the session up and answers 404 without
   decoding or storing (uvicorn still receives and drops every byte), so it is the loopback HTTP +
   auth floor; (b) ``msgspec.msgpack.Decoder(BulkBatch).decode`` of the same bodies in this
   process, one core: the decode that the route itself must do.

2. 0.2.x ``append`` round trip (server 1, a fresh session). ``POST
   /sessions/{id}/tracks/loss/append`` with ``{"data": {"value": 0.5, "step": i}}`` on one
   keep-alive ``httpx.Client``, each call timed with ``perf_counter_ns``; baseline ``GET /health``
   on the same client. The two alternate in blocks of 10 (order swapped each round), after
   ``--warmup`` (200) discarded calls each, until each side has ``--calls`` (2,000) samples or
   ``--latency-seconds`` (12) have passed (checked between rounds: both sides get as many calls);
   p50 and p99 are nearest-rank over all samples.

3. Reads (server 1, a fresh session, after section 1's archiving is done). Track ``big``:
   ``--big-track`` (1,000,000) points plus 5,000; track ``small``: 10,000 plus 5,000; each
   ingested in bodies of 100,000 points, the last 5,000 in a body of their own. After the archiver
   has moved every full chunk (so ``big`` has 1,000,000 points in the cold tier and both have
   their last 5,000 in the hot tier, in the same hot batches), the tail read
   ``GET .../tracks/{name}/data?startIndex=total-100&limit=100`` alternates between the tracks
   call by call (one warm-up read each) until ``--reads`` (200) each or ``--read-seconds`` (8)
   pass, checked between pairs; medians compared. Then 100 points from the middle of a cold chunk
   of ``big``: "warm" reads its middle chunk again and again (in the server's decoded-chunk cache
   after the first read, which counts as a miss) for up to half of ``--read-seconds``; "miss" then
   reads the other chunks in turn for the other half, so a chunk comes back only after every other
   one was read: a miss as long as the cache holds fewer chunks than that (it holds 32;
   ``--big-track`` must be at least 40 chunks). The chunk files are in the
   OS page cache either way: a miss costs the file read, zstd and JSON decoding, not a disk seek.
   Each read's first index and count are checked.

4. RSS (server 2, fresh). ``--rss-points`` (10,000,000) points sent as in section 1 (the bodies of
   section 1 sent again in a cycle, new idempotency keys, a new session) while a thread samples
   the server process's RSS (psutil) every ``--rss-interval`` (0.5 s, quick 0.1 s), with the
   number of points acknowledged so far, until the archiver has caught up. Reported: RSS before the
   first request, the maximum, the RSS at the end; the slope is a least-squares fit of RSS (MB)
   against points acknowledged (millions) over the samples of the second half of the sending time.
   Baseline: the msgpack bytes per million points (before any zstd), i.e. the slope if the server
   kept what it received; bar: slope <= 10% of it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import itertools
import json
import math
import os
import queue
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import msgspec
import psutil  # type: ignore[import-untyped,unused-ignore]
import zstandard

import dreamlake
from _harness import (
    Row,
    apply_defaults,
    clean_env,
    dist_version,
    markdown,
    platform_facts,
    platform_line,
    row,
    terminate,
)
from dreamlake._disk.jsonl import encode_points
from dreamlake._schema.wire import BulkBatch
from dreamlake.server.points import check_lines

WORKSPACE = "bench"
READY = "dreamlake serve: listening on "
HOT_TAIL = 5_000  # points past the last full chunk in the read tracks (section 3)
READ_BODY = 100_000  # points per request when building the read tracks
MIN_CHUNKS = 40  # cold chunks of the big read track: more than the server's chunk cache holds (32)
MB = 1 << 20
perf_counter = time.perf_counter
perf_counter_ns = time.perf_counter_ns


# --------------------------------------------------------------------------------------------------
# the server and its clients


def make_token(data: Path, hot: str | None = None) -> str:
    """``dreamlake token create`` (into ``--hot`` if given): its last line of stdout is the token."""
    args = [sys.executable, "-m", "dreamlake", "token", "create", "--data", str(data)]
    args += ["--workspace", WORKSPACE, *(("--hot", hot) if hot else ())]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True, env=clean_env())
    return done.stdout.strip().splitlines()[-1]


class ServerProcess:
    """``dreamlake serve`` on 127.0.0.1 and a free port, in its own process group; ``url`` once it
    listens. A context manager: leaving it (also by an exception or Ctrl-C) stops the server."""

    def __init__(
        self, data: Path, chunk_size: int, max_buffered_chunks: int, timeout: float = 60.0,
        tiers: Sequence[str] = (),
    ) -> None:
        self.command = [
            sys.executable, "-m", "dreamlake", "serve", "--host", "127.0.0.1", "--port", "0",
            "--data", str(data), "--chunk-size", str(chunk_size), "--log-level", "warning",
            "--max-buffered-chunks", str(max_buffered_chunks), *tiers,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C in the terminal reaches only us; we stop it by PID
            env=clean_env(),
        )
        self.pid = self.proc.pid
        self.stderr: list[str] = []
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        threading.Thread(target=self._collect, daemon=True).start()
        try:
            deadline = perf_counter() + timeout
            while True:
                line = lines.get(timeout=max(0.0, deadline - perf_counter()))
                if line is None:
                    self.proc.wait(timeout)
                    raise RuntimeError(f"dreamlake serve exited ({self.proc.returncode}): {self.errors()}")
                if line.startswith(READY):
                    self.url = line[len(READY) :].strip()
                    break
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"dreamlake serve did not start in {timeout} s: {self.errors()}") from None
        except BaseException:
            self.stop()
            raise

    def _pump(self, lines: queue.Queue[str | None]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            lines.put(line)
        lines.put(None)

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def errors(self) -> str:
        return "".join(self.stderr).strip()

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the PID, then wait; SIGKILL to its process group if it does not stop in time."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                self.kill()
            except BaseException:  # a second Ctrl-C while waiting: still leave nothing running
                self.kill()
                raise
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to the server's process group (it is the group leader), then reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def client(url: str, token: str) -> httpx.Client:
    """A keep-alive client for one connection at a time, with ``token`` as bearer."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def create_session(c: httpx.Client, name: str) -> str:
    r = c.post(f"/workspaces/{WORKSPACE}/sessions", json={"name": name})
    r.raise_for_status()
    session_id: str = r.json()["session"]["id"]
    return session_id


def track_stats(c: httpx.Client, session_id: str, track: str) -> dict[str, Any] | None:
    """A track's ``stats``; None while the track does not exist yet."""
    r = c.get(f"/sessions/{session_id}/tracks/{track}/stats")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


def wait_archived(
    c: httpx.Client, session_id: str, expected: dict[str, int], deadline: float
) -> tuple[float | None, dict[str, int]]:
    """Poll until every track's ``chunkedDataPoints`` reaches its expected value; the time it was
    first seen (None past ``deadline``) and the last values seen."""
    seen = dict.fromkeys(expected, 0)
    remaining = set(expected)
    while True:
        for name in sorted(remaining):
            stats = track_stats(c, session_id, name)
            seen[name] = int(stats["chunkedDataPoints"]) if stats else 0
            if seen[name] >= expected[name]:
                remaining.discard(name)
        if not remaining:
            return perf_counter(), seen
        if perf_counter() > deadline:
            return None, seen
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------------
# load generation


def msgpack_size(body: bytes, zstd: bool) -> int:
    """The size of a body's msgpack (a zstd frame records it in its header)."""
    return zstandard.frame_content_size(body) if zstd else len(body)


def encode_bodies(requests: int, points: int, tracks: int, zstd: bool) -> list[bytes]:
    """Bulk bodies, each ``points`` points split over ``tracks`` tracks ``t0..``, steps continuing."""
    encoder = msgspec.msgpack.Encoder()
    compressor = zstandard.ZstdCompressor(level=3) if zstd else None
    per_track = points // tracks
    bodies = []
    for r in range(requests):
        first = r * per_track
        part = [{"value": (first + i) * 0.001, "step": first + i} for i in range(per_track)]
        lines = encode_points(part)  # as the SDK's remote sink sends them: JSON lines
        tracks_doc = [{"name": f"t{k}", "lines": lines} for k in range(tracks)]
        blob = encoder.encode({"tracks": tracks_doc, "logs": [], "parameters": []})
        bodies.append(compressor.compress(blob) if compressor else blob)
    return bodies


class Load:
    """POSTs ``count`` bodies (``bodies`` in a cycle) to ``path`` from ``connections`` threads, one
    keep-alive client each, and counts what was acknowledged."""

    def __init__(
        self,
        url: str,
        token: str,
        path: str,
        bodies: Sequence[bytes],
        count: int,
        points_per_body: int,
        connections: int,
        key_prefix: str,
        zstd: bool,
        expect: int,
    ) -> None:
        self.path, self.bodies, self.count = path, bodies, count
        self.points_per_body, self.key_prefix, self.expect = points_per_body, key_prefix, expect
        self.headers = {"Content-Type": "application/msgpack"}
        if zstd:
            self.headers["Content-Encoding"] = "zstd"
        self.clients = [client(url, token) for _ in range(connections)]
        for c in self.clients:  # open the connections before the clock starts
            c.get("/health").raise_for_status()
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.acked = 0
        self.backoffs = 0  # 503 answers (the archiver is behind), each waited out and resent
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> float:
        """Send everything; the wall time from the first request to the last response."""
        threads = [threading.Thread(target=self._worker, args=(c,), daemon=True) for c in self.clients]
        start = perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = perf_counter() - start
        for c in self.clients:
            c.close()
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} request(s) failed, first: {self.errors[0]}")
        return elapsed

    def _worker(self, c: httpx.Client) -> None:
        try:
            while (i := next(self._next)) < self.count:
                headers = {**self.headers, "Idempotency-Key": f"{self.key_prefix}-{i}"}
                t0 = perf_counter()
                r = c.post(self.path, content=self.bodies[i % len(self.bodies)], headers=headers)
                while r.status_code == 503 and self.expect == 200:  # back-pressure: as the SDK does
                    with self._lock:
                        self.backoffs += 1
                    time.sleep(float(r.headers.get("retry-after", "1")))
                    r = c.post(self.path, content=self.bodies[i % len(self.bodies)], headers=headers)
                dt = perf_counter() - t0
                if r.status_code != self.expect:
                    raise RuntimeError(f"request {i}: {r.status_code} {r.text[:300]}")
                with self._lock:
                    self.acked += self.points_per_body
                    self.latencies.append(dt)
        except Exception as exc:
            with self._lock:
                self.errors.append(repr(exc))
            self._next = itertools.count(self.count)  # the other threads stop too


class Sampler(threading.Thread):
    """Calls ``sample()`` every ``interval`` seconds (and once more at ``stop()``), in a thread."""

    def __init__(self, interval: float, sample: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self._sample = sample
        self._stop_event = threading.Event()
        self.samples: list[tuple[float, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.samples.append((perf_counter(), self._sample()))
                self._stop_event.wait(self.interval)
            self.samples.append((perf_counter(), self._sample()))
        except Exception as exc:
            self.error = exc

    def stop(self) -> list[tuple[float, Any]]:
        self._stop_event.set()
        self.join(timeout=60)
        if self.error is not None:
            raise RuntimeError(f"sampler failed: {self.error!r}")
        return self.samples


def buffered_poll(c: httpx.Client, session_id: str, tracks: Sequence[str]) -> dict[str, int]:
    """``bufferedDataPoints`` of every track (0 for a track not created yet)."""
    out = {}
    for name in tracks:
        stats = track_stats(c, session_id, name)
        out[name] = int(stats["bufferedDataPoints"]) if stats else 0
    return out


def run_ingest(
    url: str,
    token: str,
    name: str,
    bodies: Sequence[bytes],
    count: int,
    args: argparse.Namespace,
    rss_of: ServerProcess | None = None,
) -> dict[str, Any]:
    """``count`` bulk requests into a new session, then wait for the archiver (sections 1 and 4)."""
    tracks = [f"t{k}" for k in range(args.tracks)]
    per_track = args.points // args.tracks * count
    expected = dict.fromkeys(tracks, per_track // args.chunk_size * args.chunk_size)
    with client(url, token) as c, client(url, token) as poller_client:
        session_id = create_session(c, name)
        load = Load(url, token, f"/sessions/{session_id}/batches", bodies, count,
                    args.points // args.tracks * args.tracks, args.connections, name, args.zstd, 200)
        poller = Sampler(0.2, lambda: buffered_poll(poller_client, session_id, tracks))
        rss = Sampler(args.rss_interval, lambda: (rss_of.rss(), load.acked)) if rss_of else None
        if rss:
            rss.start()
            time.sleep(2 * args.rss_interval)  # a few samples before the first request
        poller.start()
        start = perf_counter()
        acked_s = load.run()
        sent_at = perf_counter()
        done_at, seen = wait_archived(c, session_id, expected, sent_at + args.archive_deadline)
        polls = poller.stop()
        rss_samples = rss.stop() if rss else []
        final = {t: track_stats(c, session_id, t) for t in tracks}
    totals = {t: int(s["totalDataPoints"]) if s else 0 for t, s in final.items()}
    return {
        "points": load.acked,
        "requests": count,
        "body_bytes": sum(len(bodies[i % len(bodies)]) for i in range(count)),
        "msgpack_bytes": sum(msgpack_size(bodies[i % len(bodies)], args.zstd) for i in range(count)),
        "acked_s": acked_s,
        "archived_s": None if done_at is None else done_at - start,
        "archive_lag_s": None if done_at is None else done_at - sent_at,
        "expected_chunked": expected,
        "chunked": seen,
        "totals": totals,
        "ok": done_at is not None and seen == expected and totals == dict.fromkeys(tracks, per_track),
        "max_buffered_sum": max((sum(p.values()) for _, p in polls), default=0),
        "max_buffered_track": max((max(p.values()) for _, p in polls), default=0),
        "buffered_polls": len(polls),
        "backoffs": load.backoffs,
        "request_ms": {
            "p50": 1000 * statistics.median(load.latencies),
            "max": 1000 * max(load.latencies),
        },
        "rss": [(t - start, r, a) for t, (r, a) in rss_samples],
        "sent_at_s": sent_at - start,
    }


def run_baseline_404(
    url: str, token: str, bodies: Sequence[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """Section 1's bodies to the bulk route of a session that does not exist."""
    points = args.points // args.tracks * args.tracks
    load = Load(url, token, "/sessions/0000000000000000/batches", bodies, len(bodies), points,
                args.connections, "missing", args.zstd, 404)
    seconds = load.run()
    p50 = 1000 * statistics.median(load.latencies)
    return {"points": load.acked, "seconds": seconds, "request_ms_p50": p50}


def decode_baseline(bodies: Sequence[bytes], zstd: bool) -> dict[str, Any]:
    """The route's own decode and check of the same bodies, in this process (zstd included if used)."""
    decoder = msgspec.msgpack.Decoder(BulkBatch)
    inflate = zstandard.ZstdDecompressor()
    points = 0
    start = perf_counter()
    for body in bodies:
        batch = decoder.decode(inflate.decompress(body) if zstd else body)
        points += sum(check_lines(t.lines) for t in batch.tracks)
    return {"points": points, "seconds": perf_counter() - start}


# --------------------------------------------------------------------------------------------------
# round trips and reads


def interleaved(
    sides: Mapping[str, Callable[[int], None]], n: int, block: int, budget_s: float
) -> dict[str, list[int]]:
    """Time each side's calls (ns), in alternating blocks (order swapped each round), until ``n``
    each or ``budget_s`` passed; the budget is checked between rounds, so every side gets the same
    number of calls, at least ``block``."""
    out: dict[str, list[int]] = {name: [] for name in sides}
    names = list(sides)
    deadline = perf_counter() + budget_s
    for r in itertools.count():
        if min(len(v) for v in out.values()) >= n or (r > 0 and perf_counter() > deadline):
            break
        for name in names if r % 2 == 0 else names[::-1]:
            call, samples = sides[name], out[name]
            for _ in range(min(block, n - len(samples))):
                t0 = perf_counter_ns()
                call(len(samples))
                samples.append(perf_counter_ns() - t0)
    return out


def timed_calls(
    call: Callable[[int], None], n: int, budget_s: float, samples: list[int] | None = None
) -> list[int]:
    """Time ``call`` (ns) until ``samples`` holds ``n`` or ``budget_s`` passed (at least one call)."""
    samples = [] if samples is None else samples
    deadline = perf_counter() + budget_s
    while len(samples) < n and (not samples or perf_counter() < deadline):
        t0 = perf_counter_ns()
        call(len(samples))
        samples.append(perf_counter_ns() - t0)
    return samples


def nearest_rank(samples: Sequence[int], q: float) -> int:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def bench_append(url: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    """Section 2; see the module docstring."""
    encoder = msgspec.json.Encoder()
    statuses: list[int] = []
    made = {"append": 0}
    with client(url, token) as c:
        session_id = create_session(c, "append")
        path = f"/sessions/{session_id}/tracks/loss/append"
        headers = {"Content-Type": "application/json"}

        def append(_: int) -> None:
            body = encoder.encode({"data": {"value": 0.5, "step": made["append"]}})
            made["append"] += 1
            r = c.post(path, content=body, headers=headers)
            statuses.append(r.status_code)

        def health(_: int) -> None:
            statuses.append(c.get("/health").status_code)

        sides = {"append": append, "health": health}
        interleaved(sides, args.warmup, 10, args.latency_seconds / 4)
        samples = interleaved(sides, args.calls, 10, args.latency_seconds)
        stats = track_stats(c, session_id, "loss")
    bad = sum(1 for s in statuses if s != 200)
    return {
        "samples": {k: len(v) for k, v in samples.items()},
        "p50_ms": {k: nearest_rank(v, 0.5) / 1e6 for k, v in samples.items()},
        "p99_ms": {k: nearest_rank(v, 0.99) / 1e6 for k, v in samples.items()},
        "non_200": bad,
        "appended": made["append"],
        "track_total": int(stats["totalDataPoints"]) if stats else 0,
    }


def build_track(c: httpx.Client, session_id: str, name: str, cold: int) -> None:
    """``cold`` points in bodies of ``READ_BODY``, then ``HOT_TAIL`` more in one last body."""
    encoder = msgspec.msgpack.Encoder()
    parts = [(first, min(cold, first + READ_BODY)) for first in range(0, cold, READ_BODY)]
    for k, (first, end) in enumerate([*parts, (cold, cold + HOT_TAIL)]):
        points = [{"value": i * 0.001, "step": i} for i in range(first, end)]
        body = encoder.encode({"tracks": [{"name": name, "points": points}]})
        headers = {"Content-Type": "application/msgpack", "Idempotency-Key": f"build-{name}-{k}"}
        c.post(f"/sessions/{session_id}/batches", content=body, headers=headers).raise_for_status()


def bench_reads(url: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    """Section 3; see the module docstring."""
    size = args.chunk_size
    totals = {"big": args.big_track + HOT_TAIL, "small": 10_000 + HOT_TAIL}
    bad: list[str] = []
    with client(url, token) as c:
        session_id = create_session(c, "reads")
        start = perf_counter()
        for name, n in totals.items():
            build_track(c, session_id, name, n - HOT_TAIL)
        built_s = perf_counter() - start
        expected = {name: n // size * size for name, n in totals.items()}
        done, seen = wait_archived(c, session_id, expected, perf_counter() + args.archive_deadline)
        if done is None:
            raise RuntimeError(f"the archiver did not finish the read tracks in time: {seen} of {expected}")
        archived_s = done - start

        def reader(name: str, first: Callable[[int], int]) -> Callable[[int], None]:
            path = f"/sessions/{session_id}/tracks/{name}/data"

            def read(i: int) -> None:
                begin = first(i)
                r = c.get(path, params={"startIndex": begin, "limit": 100})
                data = r.json()["data"] if r.status_code == 200 else []
                if len(data) != 100 or data[0]["index"] != begin:
                    bad.append(f"{name} at {begin}: {r.status_code} {len(data)} points")

            return read

        cold = args.big_track // size  # chunks of ``big`` in the cold tier
        chunks = [k for k in range(cold) if k != cold // 2]  # "miss" cycles through these
        sides = {
            "big": reader("big", lambda i: totals["big"] - 100),
            "small": reader("small", lambda i: totals["small"] - 100),
        }
        for read in sides.values():
            read(0)  # warm-up
        tail = interleaved(sides, args.reads, 1, args.read_seconds)
        warm = reader("big", lambda i: (cold // 2) * size + size // 2)
        miss = reader("big", lambda i: chunks[i % len(chunks)] * size + size // 2)
        # The first read of the middle chunk loads it into the cache: it is the first miss.
        middle = {"warm": [], "miss": timed_calls(warm, 1, 0.0)}
        timed_calls(warm, args.reads, args.read_seconds / 2, middle["warm"])
        timed_calls(miss, args.reads, args.read_seconds / 2 - middle["miss"][0] / 1e9, middle["miss"])
    ms = {**tail, **middle}
    return {
        "totals": totals,
        "cold_points": expected,
        "build_s": built_s,
        "archived_s": archived_s,
        "reads": {k: len(v) for k, v in ms.items()},
        "median_ms": {k: statistics.median(v) / 1e6 for k, v in ms.items()},
        "p90_ms": {k: nearest_rank(v, 0.9) / 1e6 for k, v in ms.items()},
        "bad": bad,
    }


# --------------------------------------------------------------------------------------------------
# RSS


def rss_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Start / max / end RSS and the slope (MB per million points) over the second half of sending."""
    samples = result["rss"]
    sending = [(t, r, a) for t, r, a in samples if t <= result["sent_at_s"]]
    half = [(a / 1e6, r / MB) for t, r, a in sending if t >= result["sent_at_s"] / 2]
    slope = None
    if len(half) >= 3 and len({x for x, _ in half}) >= 2:
        slope = statistics.linear_regression(*zip(*half, strict=True)).slope
    return {
        "start": samples[0][1],
        "max": max(r for _, r, _ in samples),
        "end": samples[-1][1],
        "samples": len(samples),
        "slope_samples": len(half),
        "slope_mb_per_m": slope,
    }


# --------------------------------------------------------------------------------------------------
# report


def machine_facts() -> dict[str, Any]:
    digest = hashlib.sha256()
    package = Path(dreamlake.__file__).parent
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    return {
        **platform_facts(),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GB",
        "dreamlake": dreamlake.__version__,
        "dreamlake_sources_sha256": digest.hexdigest()[:16],
        "versions": {
            d: dist_version(d, "-") for d in ("uvicorn", "starlette", "h11", "httpx", "msgspec", "anyio")
        },
        "uvicorn_picks": {
            "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        },
    }


def rate(points: int, seconds: float | None) -> str:
    return "did not finish" if seconds is None else f"{points / seconds:,.0f} pts/s ({seconds:.2f} s)"


def build_rows(args: argparse.Namespace, results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    ing, base, dec = results["ingest"], results["baseline_404"], results["decode"]
    n = ing["points"]
    shape = (f"{ing['requests']} req x {args.points:,} pts, {args.tracks} tracks, {args.connections} conns"
             f"{', zstd' if args.zstd else ''}")
    base_rate = f"{rate(base['points'], base['seconds'])}, same bodies to an unknown session (404)"
    rows.append(row(f"bulk ingest, acknowledged ({shape})", rate(n, ing["acked_s"]), base_rate,
                    ing["acked_s"] / base["seconds"] * base["points"] / n,
                    ">= 1,000,000 pts/s", n / ing["acked_s"] >= 1_000_000))
    archived = ing["archived_s"]
    rows.append(row("bulk ingest, acknowledged + archived (all full chunks in the cold tier)",
                    rate(n, archived), base_rate,
                    None if archived is None else archived / base["seconds"] * base["points"] / n,
                    ">= 1,000,000 pts/s", archived is not None and n / archived >= 1_000_000 and ing["ok"]))
    rows.append(row("bulk ingest, acknowledged, vs decoding alone",
                    rate(n, ing["acked_s"]),
                    f"{rate(dec['points'], dec['seconds'])}, msgspec decode + line check, 1 core",
                    ing["acked_s"] / dec["seconds"] * dec["points"] / n, "info", None))
    # The server's bound per track, plus what the requests in flight (one per connection) can add.
    bound = args.max_buffered_chunks * args.chunk_size + args.connections * (args.points // args.tracks)
    rows.append(row(f"max bufferedDataPoints of one track ({ing['buffered_polls']} polls)",
                    f"{ing['max_buffered_track']:,} "
                    f"(sum of {args.tracks} tracks {ing['max_buffered_sum']:,})",
                    f"{bound:,} (--max-buffered-chunks {args.max_buffered_chunks} x {args.chunk_size:,} "
                    "+ requests in flight)",
                    ing["max_buffered_track"] / bound,
                    "<= baseline (bounded)", ing["max_buffered_track"] <= bound))

    ap = results["append"]
    rows.append(row(f"0.2.x append round trip p50 ({ap['samples']['append']:,} calls)",
                    f"{ap['p50_ms']['append']:.2f} ms", f"{ap['p50_ms']['health']:.2f} ms (GET /health)",
                    ap["p50_ms"]["append"] / ap["p50_ms"]["health"], "p50 <= 2 ms",
                    ap["p50_ms"]["append"] <= 2.0 and ap["non_200"] == 0))
    rows.append(row("0.2.x append round trip p99", f"{ap['p99_ms']['append']:.2f} ms",
                    f"{ap['p99_ms']['health']:.2f} ms (GET /health)",
                    ap["p99_ms"]["append"] / ap["p99_ms"]["health"], "info", None))

    rd = results["reads"]
    med, count, tot = rd["median_ms"], rd["reads"], rd["totals"]
    rows.append(row(f"tail read, last 100 points, median of {count['big']}",
                    f"{med['big']:.2f} ms ({tot['big']:,} pts, {rd['cold_points']['big']:,} cold)",
                    f"{med['small']:.2f} ms ({tot['small']:,} pts, {rd['cold_points']['small']:,} cold)",
                    med["big"] / med["small"], "ratio <= 3.0",
                    med["big"] / med["small"] <= 3.0 and not rd["bad"]))
    rows.append(row(f"100 points mid cold chunk, chunk cache warm, median of {count['warm']}",
                    f"{med['warm']:.2f} ms", f"{med['small']:.2f} ms (small tail read)",
                    med["warm"] / med["small"], "info", None))
    rows.append(row(f"100 points mid cold chunk, chunk cache miss, median of {count['miss']}",
                    f"{med['miss']:.2f} ms", f"{med['small']:.2f} ms (small tail read)",
                    med["miss"] / med["small"], "info", None))

    rs = results["rss_summary"]
    r4 = results["rss_ingest"]
    bytes_per_m = r4["msgpack_bytes"] / (r4["points"] / 1e6) / MB
    grown = (rs["max"] - rs["start"]) / MB
    rows.append(row(f"server RSS while ingesting {r4['points']:,} pts: start / max / end",
                    f"{rs['start'] / MB:,.0f} / {rs['max'] / MB:,.0f} / {rs['end'] / MB:,.0f} MB",
                    f"{r4['msgpack_bytes'] / MB:,.0f} MB of msgpack bodies received",
                    grown / (r4["msgpack_bytes"] / MB), "info", None))
    slope = rs["slope_mb_per_m"]
    rows.append(row(f"server RSS slope, second half of sending ({rs['slope_samples']} samples)",
                    "n/a" if slope is None else f"{slope:+.2f} MB per M pts",
                    f"{bytes_per_m:.1f} MB per M pts (bodies received)",
                    None if slope is None else slope / bytes_per_m, "ratio <= 0.10 (flat)",
                    slope is not None and slope / bytes_per_m <= 0.10 and r4["ok"]))
    return rows


def notes(args: argparse.Namespace, results: dict[str, Any]) -> str:
    ing, base, ap, rd = results["ingest"], results["baseline_404"], results["append"], results["reads"]
    r4, rs = results["rss_ingest"], results["rss_summary"]
    out = ["Notes:"]
    out.append(
        f"- section 1: {ing['requests']} bodies of {ing['msgpack_bytes'] / ing['requests'] / MB:.2f} MB "
        f"msgpack, {ing['body_bytes'] / ing['requests'] / MB:.2f} MB sent; "
        f"request time p50 {ing['request_ms']['p50']:.0f} ms, max {ing['request_ms']['max']:.0f} ms "
        f"(404 baseline p50 {base['request_ms_p50']:.1f} ms); the archiver finished "
        + ("never (deadline)" if ing["archive_lag_s"] is None else f"{ing['archive_lag_s']:.2f} s")
        + f" after the last response; 503 answers waited out: {ing['backoffs']}; "
        f"chunked per track {ing['chunked']} "
        f"(expected {ing['expected_chunked']}), totals {ing['totals']}"
    )
    out.append(
        f"- section 2: {ap['samples']} timed calls (after warm-up), {ap['appended']:,} appends made, "
        f"track total {ap['track_total']:,}; non-200 answers: {ap['non_200']}"
    )
    if ap["p50_ms"]["health"] >= 20:
        out.append(
            f"- GET /health takes {ap['p50_ms']['health']:.1f} ms at p50: the signature of Nagle's algorithm "
            "meeting delayed ACKs (~40 ms on Linux), i.e. the server's accepted sockets lack TCP_NODELAY. "
            "(asyncio sets it only on sockets created with proto IPPROTO_TCP)."
        )
    out.append(
        f"- section 3: read tracks built in {rd['build_s']:.1f} s, all full chunks archived "
        f"{rd['archived_s']:.1f} s after the first request; p90 (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in rd["p90_ms"].items())
        + f"; reads per kind {rd['reads']}; bad reads: {len(rd['bad'])} {rd['bad'][:3]}"
    )
    slope_line = rs["slope_mb_per_m"]
    out.append(
        f"- section 4: {r4['requests']} requests acknowledged in {r4['acked_s']:.1f} s "
        f"({r4['points'] / r4['acked_s']:,.0f} pts/s), archived "
        + ("never (deadline)" if r4["archived_s"] is None else f"after {r4['archived_s']:.1f} s "
           f"({r4['points'] / r4['archived_s']:,.0f} pts/s)")
        + f"; max bufferedDataPoints (sum) {r4['max_buffered_sum']:,}; {rs['samples']} RSS samples; "
        f"slope {'n/a' if slope_line is None else f'{slope_line:+.2f}'} MB per M pts; RSS (MB) at "
        + ", ".join(f"{t:+.1f} s: {r / MB:.0f}" for t, r, _ in r4["rss"][:: max(1, len(r4["rss"]) // 12)])
    )
    if results["server_stderr"]:
        out.append(f"- server stderr (warnings and errors): {results['server_stderr'][:1500]}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# --hot/--cold: sections 1 and 3 on MongoDB + S3 beside the embedded tiers


def scale_tiers(args: argparse.Namespace, run: str) -> list[str]:
    """``--hot``/``--cold`` for one server: a database and a key prefix of this run only."""
    parts = urllib.parse.urlsplit(args.hot)
    database = f"{parts.path.strip('/') or 'dreamlake'}_bench_{run}"
    query = parts.query
    if "@" in parts.netloc and "authsource=" not in query.lower():  # credentials stay checked where they were
        query = "&".join(q for q in (query, f"authSource={parts.path.strip('/') or 'admin'}") if q)
    hot = urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{database}", query, ""))
    return ["--hot", hot, "--cold", f"{args.cold.rstrip('/')}/bench-{run}"]


def run_tiers(
    args: argparse.Namespace,
    tmp: Path,
    step: Callable[[str], None],
    results: dict[str, Any],
    stderr: list[str],
) -> tuple[list[Row], str]:
    """Sections 1 (bulk ingest, then the archiver) and 3 (reads) on the embedded tiers and on
    ``--hot``/``--cold``, one fresh server each, same bodies; rows put the two side by side."""
    bodies = encode_bodies(args.requests, args.points, args.tracks, args.zstd)
    run = f"{os.getpid()}_{int(time.time())}"
    pairs = {"embedded": [], "mongo+s3": scale_tiers(args, run)}
    for name, tiers in pairs.items():
        step(f"{name}: bulk ingest {args.requests} x {args.points:,} points, then reads")
        data = tmp / name.replace("+", "-")
        token = make_token(data, tiers[1] if tiers else None)
        with ServerProcess(data, args.chunk_size, args.max_buffered_chunks, tiers=tiers) as server:
            results[name] = {
                "ingest": run_ingest(server.url, token, "ingest", bodies, args.requests, args),
                "reads": bench_reads(server.url, token, args),
            }
            step("")
            stderr.append(server.errors())
    results["server_stderr"] = "\n".join(s for s in stderr if s)
    emb, sc = results["embedded"], results["mongo+s3"]
    n = sc["ingest"]["points"]
    req = sc["ingest"]["requests"]
    rows: list[Row] = []

    def ok(r: dict[str, Any]) -> bool:
        return bool(r["ingest"]["ok"]) and not r["reads"]["bad"]

    for label, key in (("acknowledged", "acked_s"), ("acknowledged + archived", "archived_s")):
        a, b = sc["ingest"][key], emb["ingest"][key]
        rows.append(row(f"bulk ingest, {label}: MongoDB + S3 ({req} requests x {args.points:,} pts)",
                        rate(n, a), f"{rate(n, b)} (embedded)", None if a is None or b is None else b / a,
                        "info (correct)", ok(sc) and ok(emb)))  # fmt: skip
    per = {k: 1000 * r["ingest"]["acked_s"] / r["ingest"]["requests"] for k, r in (("sc", sc), ("emb", emb))}
    rows.append(row(f"bulk route: time per request ({req} requests, {args.connections} connections)",
                    f"{per['sc']:.0f} ms (p50 {sc['ingest']['request_ms']['p50']:.0f} ms)",
                    f"{per['emb']:.0f} ms (p50 {emb['ingest']['request_ms']['p50']:.0f} ms, embedded)",
                    per["sc"] / per["emb"], "info", None))  # fmt: skip
    reads = (("big", "tail read, last 100 of 1M+ pts"), ("small", "tail read, last 100 of 15k pts"),
             ("miss", "100 pts mid cold chunk, cache miss"),
             ("warm", "100 pts mid cold chunk, warm"))  # fmt: skip
    for kind, label in reads:
        a, b = sc["reads"]["median_ms"][kind], emb["reads"]["median_ms"][kind]
        rows.append(row(f"{label}: MongoDB + S3, median", f"{a:.2f} ms", f"{b:.2f} ms (embedded)", a / b,
                        "info", None))  # fmt: skip
    text = "\n".join([
        "Notes:",
        f"- --hot {pairs['mongo+s3'][1]} --cold {pairs['mongo+s3'][3]} (a database and prefix of this run)",
        *(f"- {k}: archiver finished {r['ingest']['archive_lag_s']} s after the last response; 503s waited "
          f"out {r['ingest']['backoffs']}; chunked {r['ingest']['chunked']}; read tracks built in "
          f"{r['reads']['build_s']:.1f} s; bad reads {r['reads']['bad'][:3]}" for k, r in (("mongo+s3", sc),
                                                                                      ("embedded", emb))),
        f"- server stderr: {results['server_stderr'][:1500]}" if results["server_stderr"] else "",
    ])  # fmt: skip
    return rows, text


# --------------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="dreamlake server benchmarks (see the module docstring)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller, faster run (rough figures)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 if a bar or a check fails")
    parser.add_argument("--zstd", action="store_true", help="send bulk bodies zstd-compressed")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="the servers' --chunk-size")
    parser.add_argument(
        "--max-buffered-chunks", type=int, default=50,
        help="the servers' --max-buffered-chunks (the bound shown)",
    )
    parser.add_argument("--requests", type=int, default=None, help="section 1 requests (100, quick 20)")
    parser.add_argument("--points", type=int, default=50_000, help="points per bulk request")
    parser.add_argument("--tracks", type=int, default=4, help="tracks per bulk request (1-4)")
    parser.add_argument("--connections", type=int, default=2, help="concurrent connections")
    parser.add_argument("--archive-deadline", type=float, default=None, help="seconds (120, quick 30)")
    parser.add_argument("--calls", type=int, default=None, help="timed append calls (2,000, quick 500)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls per side (200, quick 50)")
    parser.add_argument("--latency-seconds", type=float, default=None, help="cap per side pair (12, quick 3)")
    parser.add_argument("--big-track", type=int, default=None, help="cold points of 'big' (1M, quick 400k)")
    parser.add_argument("--reads", type=int, default=None, help="reads per kind (200, quick 50)")
    parser.add_argument("--read-seconds", type=float, default=None, help="cap per read pair (8, quick 2)")
    parser.add_argument("--rss-points", type=int, default=None, help="section 4 points (10M, quick 2M)")
    parser.add_argument("--rss-interval", type=float, default=None, help="RSS sampling, s (0.5, quick 0.1)")
    parser.add_argument(
        "--hot", metavar="URL", help="mongodb://...: sections 1, 3 on MongoDB + S3 beside the embedded tiers"
    )
    parser.add_argument("--cold", metavar="URL", help="s3://bucket/prefix (AWS_* apply); with --hot")
    args = parser.parse_args(argv)
    if (args.hot is None) != (args.cold is None):
        parser.error("--hot and --cold go together")
    quick = args.quick
    defaults = {
        "requests": 20 if quick else 100,
        "archive_deadline": 30.0 if quick else 120.0,
        "calls": 500 if quick else 2_000,
        "warmup": 50 if quick else 200,
        "latency_seconds": 3.0 if quick else 12.0,
        "big_track": 400_000 if quick else 1_000_000,
        "reads": 50 if quick else 200,
        "read_seconds": 2.0 if quick else 8.0,
        "rss_points": 2_000_000 if quick else 10_000_000,
        "rss_interval": 0.1 if quick else 0.5,
    }
    apply_defaults(args, defaults)
    if not 1 <= args.tracks <= args.points:
        parser.error("--tracks must be between 1 and --points")
    if args.big_track < MIN_CHUNKS * args.chunk_size:
        parser.error(f"--big-track must hold at least {MIN_CHUNKS} chunks (for the cache-miss cycle)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)
    command = shlex.join([sys.executable, *sys.argv])
    facts = machine_facts()
    print(f"# dreamlake server benchmarks\n\ncommand: `{command}`\n")
    print(
        platform_line(facts)
        + f"load average {os.getloadavg()[0]:.2f}; dreamlake {facts['dreamlake']} "
        f"(sources sha256 {facts['dreamlake_sources_sha256']}); {facts['versions']}; "
        f"uvicorn uses {facts['uvicorn_picks']}"
        + "\n",
        flush=True,
    )
    started = perf_counter()
    results: dict[str, Any] = {"step_seconds": {}}
    last_start, last_label = started, ""

    def step(label: str) -> None:
        nonlocal last_start, last_label
        now = perf_counter()
        if last_label:
            results["step_seconds"][last_label] = round(now - last_start, 2)
        last_start, last_label = now, label
        if label:
            print(f"- {label} ...", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="dreamlake-bench-server-"))
    stderr: list[str] = []
    if args.hot:
        try:
            rows, text = run_tiers(args, tmp, step, results, stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return report(args, command, facts, started, results, rows, text)
    try:
        step(f"encoding {args.requests} bulk bodies of {args.points:,} points")
        bodies = encode_bodies(args.requests, args.points, args.tracks, args.zstd)
        results["decode"] = decode_baseline(bodies, args.zstd)

        step("server 1: starting")
        data = tmp / "server1"
        token = make_token(data)
        with ServerProcess(data, args.chunk_size, args.max_buffered_chunks) as server:
            print(f"  server 1: pid {server.pid}, {server.url}", flush=True)
            step(f"append round trip: up to {args.calls:,} calls per side or {args.latency_seconds:.0f} s")
            results["append"] = bench_append(server.url, token, args)
            step("bulk ingest: 404 baseline")
            results["baseline_404"] = run_baseline_404(server.url, token, bodies, args)
            step(f"bulk ingest: {args.requests} x {args.points:,} points, then the archiver")
            results["ingest"] = run_ingest(server.url, token, "ingest", bodies, args.requests, args)
            step(f"reads: {args.big_track + HOT_TAIL:,} vs {10_000 + HOT_TAIL:,} points")
            results["reads"] = bench_reads(server.url, token, args)
            step("")
            stderr.append(server.errors())

        step(f"server 2: RSS while ingesting {args.rss_points:,} points")
        data = tmp / "server2"
        token = make_token(data)
        count = max(1, args.rss_points // (args.points // args.tracks * args.tracks))
        with ServerProcess(data, args.chunk_size, args.max_buffered_chunks) as server:
            results["rss_ingest"] = run_ingest(server.url, token, "rss", bodies, count, args, rss_of=server)
            results["rss_summary"] = rss_summary(results["rss_ingest"])
            step("")
            stderr.append(server.errors())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["server_stderr"] = "\n".join(s for s in stderr if s)
    return report(args, command, facts, started, results, build_rows(args, results), notes(args, results))


def report(
    args: argparse.Namespace, command: str, facts: dict[str, Any], started: float, results: dict[str, Any],
    rows: list[Row], text: str,
) -> int:
    """Print the table and the notes; write the JSON; the exit status."""
    elapsed = perf_counter() - started
    print()
    print(markdown(rows))
    print()
    print(text)
    print(f"\ntotal benchmark time {elapsed:.0f} s; load average at the end {os.getloadavg()[0]:.2f}; "
          f"per step (s): {results['step_seconds']}")
    failed = [r["measure"] for r in rows if r["ok"] is False]
    if args.json:
        payload = {
            "command": command,
            "machine": facts,
            "params": vars(args),
            "rows": rows,
            "results": results,
            "failed": failed,
            "elapsed_s": elapsed,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"JSON written to {args.json}")
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
