"""Soak test: minutes of full-speed logging with periodic kill -9 and restart on the same session.

Run (outside the default test run; needs numpy and psutil, from the ``test`` extra)::

    python benchmarks/soak.py [--minutes 10] [--kill-every 20] [--seed 0] [--warmup 3]
                              [--json PATH] [--keep]

Quick smoke run: ``python benchmarks/soak.py --minutes 1 --kill-every 10``. Exit status 1 on any
loss beyond the window or any invariant violation.

A child writer process (this file with ``--child``) opens ``Session("run", "soak", local_path=...)``
with the default agent options (durability "buffered": a kill -9 may lose what was appended since the
last completed flush, nothing older), resumes both tracks where the files end (``stats()``), then
appends ``{"step": i, "value": i * 0.5}`` to tracks ``loss`` and ``acc`` at full speed, logs
``progress`` every 1,000 steps, sets ``last_step`` every 10,000 and calls ``flush()`` every 100,000
steps. After each flush returns it prints ``flushed <steps> <logs> <last_step>``: steps 0..steps-1 of
both tracks, that many log lines and that parameter must survive any kill. About once a second it
prints ``rss <bytes> <step> <ms>``, ``ms`` being its slowest block of 1,000 steps since the last
line (a stall: a blocking flush or a full queue). The parent kills it with SIGKILL after
``--kill-every`` seconds (randomised +-50%, seeded), checks the files and starts the next child on
the same session; the last child is stopped gracefully (a ``stop`` line on stdin) and must leave
every point on disk. ``--minutes`` counts the time children run; the checks pause the clock.

Checks after every run: the storage invariants of ``tests/_invariants.py`` (``check_session``) for
session.json, parameters, logs and files, run on a copy of the session directory made of symlinks
with an empty ``tracks/``, since that checker keeps every point in memory and the tracks reach GBs;
the tracks are streamed instead, from where the previous check stopped, and every complete line k
must be byte-for-byte ``{"index":k,"data":{"step":k,"value":k/2}}`` (a mismatch is re-checked by
JSON content), ``metadata.json`` may not count more points than the file holds, and only the last
line may be torn (none after the graceful stop). Zero loss beyond the window: each track holds at
least the last flushed count, the logs and ``last_step`` are at least as recent, and the next
child's ``stats()`` is at least what the files held (more by what its open recovered from the killed
run's spool; those lines are checked like the rest at the next check). RSS: a least-squares slope
per child over its samples after the first ``--warmup`` seconds. The work directory (about 2.5 GB
per minute at full speed on a 2-core VM) is deleted unless ``--keep`` is given or a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

WS, NAME, TRACKS = "soak", "run", ("loss", "acc")
LOG_EVERY, PARAM_EVERY, FLUSH_EVERY = 1_000, 10_000, 100_000
BLOCK = 16 << 20  # bytes read at a time while checking a track
MB = 1 << 20


def child(root: Path) -> None:
    import psutil

    from dreamlake import Session

    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    logs_path = root / WS / NAME / "logs" / "logs.jsonl"
    proc = psutil.Process()
    with Session(NAME, WS, local_path=root) as s:  # its open stores what the last run's spool held
        tracks = [s.track(name) for name in TRACKS]
        counts = [t.stats()["totalDataPoints"] for t in tracks]
        logs = logs_path.read_bytes().count(b"\n") if logs_path.exists() else 0  # a torn tail is cut
        print("start", *counts, logs, flush=True)
        i = max(counts)
        for track, n in zip(tracks, counts, strict=True):  # a track the kill left behind catches up first
            for j in range(n, i):
                track.append(step=j, value=j * 0.5)
        loss, acc = (t.append for t in tracks)
        params, param, next_rss, stall, before = s.parameters(), -1, 0.0, 0.0, time.monotonic()
        while not stop.is_set():
            if i % LOG_EVERY == 0:
                s.log("progress", step=i)
                logs += 1
            if i % PARAM_EVERY == 0:
                params.set(last_step=i)
                param = i
            if i % FLUSH_EVERY == 0:
                s.flush()
                print("flushed", i, logs, param, flush=True)
            end = (i // LOG_EVERY + 1) * LOG_EVERY
            for j in range(i, end):
                v = j * 0.5
                loss(step=j, value=v)
                acc(step=j, value=v)
            i = end
            now = time.monotonic()
            stall, before = max(stall, now - before), now  # the slowest block of 1,000 steps
            if now >= next_rss:
                print("rss", proc.memory_info().rss, i, round(stall * 1000), flush=True)
                next_rss, stall = now + 1.0, 0.0
    stats = s.agent_stats()
    print("closed", i, logs, param, stats["dropped"], stats["writeErrors"], flush=True)


def digit_column(k0: int, n: int, unit: int, symbols: bytes = b"0123456789") -> Any:
    """``symbols[k // unit % len(symbols)]`` for ``k = k0 .. k0+n-1`` as a uint8 array, without division."""
    import numpy as np

    syms, m = np.frombuffer(symbols, np.uint8), len(symbols)
    if unit * m <= n:  # periodic within the block
        period = np.roll(np.repeat(syms, unit), -(k0 % (unit * m)))
        return np.tile(period, -(-n // len(period)))[:n]
    first, last = k0 // unit, (k0 + n - 1) // unit  # a few runs
    bounds = np.clip(np.arange(first, last + 2) * unit, k0, k0 + n)
    return np.repeat(syms[np.arange(first, last + 1) % m], np.diff(bounds))


def expected(first: int, n: int) -> bytes:
    """Lines ``first .. first+n-1`` as dreamlake writes them, built column by column with numpy."""
    import numpy as np

    parts, k0, stop = [], first, first + n
    while k0 < stop:
        dk, dh = len(str(k0)), len(str(k0 // 2))
        k1 = min(stop, 10**dk, 2 * 10**dh)  # below k1 every line has the same length
        line = f'{{"index":{"0" * dk},"data":{{"step":{"0" * dk},"value":{"0" * dh}.0}}}}\n'.encode()
        rows = np.empty((k1 - k0, len(line)), np.uint8, order="F")  # columns are contiguous
        rows[:] = np.frombuffer(line, np.uint8)
        for cols, width, scale in (((9, 25 + dk), dk, 1), ((34 + 2 * dk,), dh, 2)):  # index, step; value
            for p in range(width):
                column = digit_column(k0, k1 - k0, scale * 10 ** (width - 1 - p))
                for col in cols:
                    rows[:, col + p] = column
        rows[:, -4] = digit_column(k0, k1 - k0, 1, b"05")  # value = k / 2: .0 or .5
        parts.append(rows.tobytes(order="C"))
        k0 = k1
    return b"".join(parts)


def first_bad_line(buf: bytes, first: int) -> str | None:
    """Why the lines in ``buf`` (numbered from ``first``) are wrong, by JSON content; None if right."""
    for k, line in enumerate(buf.split(b"\n")[:-1], first):
        try:
            entry = json.loads(line)
        except ValueError:
            return f"line {k} does not parse: {line[:80]!r}"
        if entry != {"index": k, "data": {"step": k, "value": k * 0.5}}:
            return f"line {k} is not index {k}, step {k}, value {k * 0.5}: {line[:100]!r}"
    return None


class TrackFile:
    """A track's data.jsonl, checked incrementally: lines before ``offset`` were already verified."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.offset, self.count, self.last = directory, 0, 0, b""

    def advance(self) -> tuple[list[str], bool]:
        """Check the lines added since the last call; return (violations, whether the tail is torn)."""
        path, rest = self.directory / "data.jsonl", b""
        if not path.exists():
            return [], False
        with open(path, "rb") as f:
            f.seek(self.offset - len(self.last))
            if f.read(len(self.last)) != self.last:
                return [f"{path}: line {self.count - 1} changed after it was checked"], False
            while chunk := f.read(BLOCK):
                buf = rest + chunk
                cut = buf.rfind(b"\n") + 1
                buf, rest = buf[:cut], buf[cut:]
                if not buf:
                    continue
                n = buf.count(b"\n")
                if buf != expected(self.count, n):
                    problem = first_bad_line(buf, self.count)
                    if problem:
                        return [f"{path}: {problem}"], bool(rest)
                self.offset, self.count = self.offset + cut, self.count + n
                self.last = buf[buf.rfind(b"\n", 0, cut - 1) + 1 :]
        meta_path = self.directory / "metadata.json"  # missing if the kill beat its first write
        try:
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"totalDataPoints": 0}
        except ValueError as exc:
            return [f"{meta_path}: not valid JSON ({exc})"], bool(rest)
        if meta["totalDataPoints"] > self.count:
            return [f"{self.directory}/metadata.json counts {meta['totalDataPoints']} points, "
                    f"the file has {self.count}"], bool(rest)
        return [], bool(rest)


class Child:
    """One writer process and what it printed."""

    def __init__(self, root: Path, env: dict[str, str], err_path: Path) -> None:
        self.err_path = err_path
        with open(err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--child", str(root)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True,
            )
        self.t0 = time.monotonic()
        self.seconds = 0.0
        self.start: list[int] | None = None
        self.flushed: list[int] = [0, 0, -1]
        self.closed: list[int] | None = None
        self.rss: list[tuple[float, int, int, int]] = []  # (seconds since start, bytes, step, stall ms)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                break  # cut short by the kill
            word, *values = line.split()
            numbers = [int(v) for v in values]
            if word == "rss":
                self.rss.append((time.monotonic() - self.t0, *numbers))
            elif word in ("start", "flushed", "closed"):
                setattr(self, word, numbers)

    def end(self, graceful: bool) -> None:
        assert self.proc.stdin is not None
        if graceful:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=300)
        else:
            self.proc.send_signal(signal.SIGKILL)  # a no-op if it already exited and was reaped
            self.proc.wait()
        self.seconds = time.monotonic() - self.t0
        self.reader.join()

    def rss_summary(self, warmup: float) -> dict[str, Any]:
        rss = [r for _, r, _, _ in self.rss]
        steady = [(t, r) for t, r, _, _ in self.rss if t >= warmup]
        slope = None
        if len(steady) >= 5:
            slope = statistics.linear_regression(*zip(*steady, strict=True)).slope * 60 / MB
        return {"start_mb": rss[0] / MB if rss else None, "peak_mb": max(rss, default=0) / MB,
                "end_mb": rss[-1] / MB if rss else None, "slope_mb_per_min": slope,
                "max_stall_s": max((ms for *_, ms in self.rss), default=0) / 1000}


class Verifier:
    """Checks the session directory after each child and keeps what the next check builds on."""

    def __init__(self, session: Path, shadow: Path) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests/
        from tests._invariants import check_session

        self.check_session, self.session, self.shadow = check_session, session, shadow
        (shadow / "tracks").mkdir(parents=True)
        for entry in ("session.json", "parameters.json", "logs", "files"):
            (shadow / entry).symlink_to(session / entry)
        self.files = {name: TrackFile(session / "tracks" / name) for name in TRACKS}
        self.logs = 0

    def counts(self) -> list[int]:
        return [*(f.count for f in self.files.values()), self.logs]

    def after(self, run: Child, closed: bool) -> dict[str, Any]:
        """Check the files after ``run`` was killed (or closed): violations, losses, torn tails."""
        found, lost_points = [], 0
        # The child's open stored what the killed run's spool held beyond the files (checked below,
        # line by line, as the files advance): it may start past them, never short of them.
        recovered = 0 if run.start is None else sum(run.start) - sum(self.counts())
        if run.start is not None and any(s < c for s, c in zip(run.start, self.counts(), strict=True)):
            found.append(f"stats() and logs.jsonl gave the child {run.start}, the files hold {self.counts()}")
        report = self.check_session(self.shadow, allow_torn_tail=not closed)
        found += report.violations
        torn = len(report.torn)
        steps, logs, param = (run.closed or run.flushed)[:3]  # what must be on disk
        for name, track in self.files.items():
            floor = max(track.count, steps)
            bad, track_torn = track.advance()
            found += bad
            torn += track_torn
            lost_points += max(0, floor - track.count)
            if closed and (track_torn or track.count != steps):
                found.append(f"track {name}: {track.count} points (torn: {track_torn}) after close, "
                             f"{steps} appended")
        lost_logs = max(0, max(self.logs, logs) - len(report.logs))
        self.logs = len(report.logs)
        if closed and self.logs != logs:
            found.append(f"{self.logs} log lines after close, {logs} logged")
        path = self.session / "parameters.json"
        stored = json.loads(path.read_text())["data"]["last_step"] if path.exists() else -1
        if stored < param or (closed and stored != param):
            found.append(f"parameters.json has last_step={stored}, {param} was set and flushed")
        if run.closed is not None and run.closed[3:] != [0, 0]:
            found.append(f"agent stats at close: dropped={run.closed[3]} writeErrors={run.closed[4]}")
        return {"violations": found, "lost_points": lost_points, "lost_logs": lost_logs, "torn": torn,
                "recovered_at_open": recovered}


def soak(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="dreamlake-soak-"))
    root = work / "data"
    verifier = Verifier(root / WS / NAME, work / "shadow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMLAKE_")}
    rng = random.Random(args.seed)
    print(f"soak: {args.minutes:g} min, kill -9 every {args.kill_every:g} s +-50% (seed {args.seed}), "
          f"in {work}", flush=True)
    runs: list[dict[str, Any]] = []
    began = time.monotonic()
    deadline = began + args.minutes * 60
    current: Child | None = None
    try:
        while time.monotonic() < deadline and not any(r["violations"] for r in runs):
            current = run = Child(root, env, work / f"child-{len(runs)}.err")
            until = run.t0 + args.kill_every * rng.uniform(0.5, 1.5)
            closed = until + args.kill_every / 2 > deadline  # the last run: to the deadline, then close
            try:
                run.proc.wait(timeout=max(0.0, (deadline if closed else until) - time.monotonic()))
                raise RuntimeError(f"child {len(runs)} exited by itself ({run.proc.returncode}): "
                                   f"{run.err_path.read_text()[-2000:]}")
            except subprocess.TimeoutExpired:
                run.end(graceful=closed)
            current = None
            t_check = time.monotonic()
            record = {"run": len(runs), "killed": not closed, "seconds": run.seconds, "start": run.start,
                      "flushed": run.flushed, "closed": run.closed, **verifier.after(run, closed),
                      "on_disk": verifier.counts(), "check_seconds": time.monotonic() - t_check,
                      "rss": run.rss_summary(args.warmup), "rss_samples": run.rss}
            runs.append(record)
            rss, slope = record["rss"], record["rss"]["slope_mb_per_min"]
            print(f"run {record['run']:2d} {'closed' if closed else 'kill -9':7s} at {run.seconds:4.1f} s"
                  f" | resumed at {run.start and run.start[0]} (spool gave {record['recovered_at_open']:,})"
                  f" | last flush {run.flushed[0]:,} | on disk "
                  f"{verifier.counts()[0]:,}/{verifier.counts()[1]:,} pts, {verifier.logs:,} logs | lost "
                  f"{record['lost_points']}+{record['lost_logs']} | torn {record['torn']} | RSS "
                  f"{rss['start_mb'] or 0:.0f}->{rss['end_mb'] or 0:.0f} MB (peak {rss['peak_mb']:.0f}), "
                  f"{'n/a' if slope is None else f'{slope:+.1f}'} MB/min | "
                  f"stall {rss['max_stall_s']:.2f} s | check {record['check_seconds']:.1f} s", flush=True)
            deadline += record["check_seconds"]  # --minutes counts the time children run
            for v in record["violations"]:
                print("  VIOLATION:", v)
            stderr = run.err_path.read_text().strip()
            if stderr:
                print(f"  child stderr: {stderr[-1000:]}")
    finally:
        if current is not None:
            current.end(graceful=False)
        if args.keep or any(r["violations"] for r in runs):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    ran = sum(r["seconds"] for r in runs)
    points = sum(verifier.counts()[:-1])
    slopes = [r["rss"]["slope_mb_per_min"] for r in runs if r["rss"]["slope_mb_per_min"] is not None]
    summary = {
        "minutes at full speed": ran / 60,
        "minutes with the checks": (time.monotonic() - began) / 60,
        "kills -9": sum(r["killed"] for r in runs),
        "points on disk (2 tracks)": points,
        "points/s while a child ran": points / ran if ran else 0.0,
        "lost points beyond window": sum(r["lost_points"] for r in runs),
        "lost log lines beyond window": sum(r["lost_logs"] for r in runs),
        "invariant violations": sum(len(r["violations"]) for r in runs),
        "torn tails repaired": sum(r["torn"] for r in runs),
        "points and logs recovered from spools": sum(r["recovered_at_open"] for r in runs),
        "RSS slope median (MB/min)": statistics.median(slopes) if slopes else None,
        "RSS slope max (MB/min)": max(slopes, default=None),
        "RSS peak max (MB)": max((r["rss"]["peak_mb"] for r in runs), default=0.0),
        "slowest 1,000-step block (s)": max((r["rss"]["max_stall_s"] for r in runs), default=0.0),
    }
    print()
    for key, value in summary.items():
        shown = "n/a" if value is None else f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
        print(f"| {key:30s} | {shown:>14s} |")
    if args.json:
        raw = {"args": vars(args), "summary": summary, "runs": runs}
        Path(args.json).write_text(json.dumps(raw, indent=1))
    failed = summary["lost points beyond window"] or summary["lost log lines beyond window"]
    return 1 if failed or summary["invariant violations"] or not runs else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds per child, +-50%%")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of RSS left out of each slope")
    parser.add_argument("--json", help="write the raw numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
