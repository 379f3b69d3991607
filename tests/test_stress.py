"""Concurrency stress: 8 threads in this process and 4 child processes append to one shared track
and their own, log, and read the shared track back, all on one session, for a minute (or
``DREAMLAKE_STRESS_SECONDS``). Nothing may be lost, duplicated or reordered within a writer, and no
reader may ever see a torn line or a gap in the indices."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dreamlake import Session

from ._invariants import check_session
from ._subproc import SESSION, WORKSPACE, Child, block, make_script, no_errors

SECONDS = float(os.environ.get("DREAMLAKE_STRESS_SECONDS", "60"))
THREADS = 8
PROCESSES = 4
OPTIONS: dict[str, Any] = {"batch_size": 1000, "flush_interval": 0.05}

pytestmark = pytest.mark.timeout(SECONDS + 240)


def writer(session: Session, name: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """Append to the shared track and to its own, and log, in bursts (about 5,000 points/s)."""
    shared, own = session.track("shared"), session.track(f"own-{name}")
    seq = 0
    while not stop.is_set():
        for _ in range(50):
            shared.append(writer=name, seq=seq)
            own.append(seq=seq)
            if seq % 10 == 0:
                session.log("progress", writer=name, seq=seq)
            seq += 1
        time.sleep(0.01)
    counts[name] = seq


def reader(session: Session, stop: threading.Event, problems: list[str], reads: list[int]) -> None:
    """Read the shared track's tail over and over; every read must be whole and contiguous."""
    track = session.track("shared")
    while not stop.is_set():
        total = track.stats()["totalDataPoints"]
        result = track.read(start_index=max(0, total - 200), limit=200)
        indices = [entry["index"] for entry in result["data"]]
        if indices != list(range(max(0, total - 200), max(0, total - 200) + len(indices))):
            problems.append(f"read at {total}: indices {indices[:3]}...{indices[-3:]}")
        if any(set(entry["data"]) != {"writer", "seq"} for entry in result["data"]):
            problems.append(f"read at {total}: a point with other fields")
        reads.append(len(indices))
        time.sleep(0.02)


CHILD = """
import threading
sys.path.insert(0, TESTS_PARENT)
from tests.test_stress import reader, writer
stop, counts, problems, reads = threading.Event(), {}, [], []
with Session(NAME, WS, local_path=ROOT, **OPTIONS) as s:
    threads = [threading.Thread(target=writer, args=(s, WRITER, stop, counts)),
               threading.Thread(target=reader, args=(s, stop, problems, reads))]
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.readline()
    stop.set()
    for t in threads:
        t.join()
print(json.dumps({"counts": counts, "problems": problems, "reads": len(reads)}), flush=True)
"""


def test_threads_and_processes_on_one_session(tmp_path: Path) -> None:
    stop = threading.Event()
    counts: dict[str, int] = {}
    problems: list[str] = []
    reads: list[int] = []
    repo = str(Path(__file__).resolve().parent.parent)
    with contextlib.ExitStack() as stack, Session(SESSION, WORKSPACE, local_path=tmp_path, **OPTIONS) as s:
        children = [
            stack.enter_context(Child(make_script(
                block(CHILD), ROOT=str(tmp_path), NAME=SESSION, WS=WORKSPACE, OPTIONS=OPTIONS,
                WRITER=f"p{n}", TESTS_PARENT=repo,
            ), stdin=True))
            for n in range(PROCESSES)
        ]
        for child in children:
            child.expect("ready", timeout=60)
        threads = [threading.Thread(target=writer, args=(s, f"t{n}", stop, counts)) for n in range(THREADS)]
        threads += [threading.Thread(target=reader, args=(s, stop, problems, reads)) for _ in range(2)]
        for thread in threads:
            thread.start()
        stop.wait(SECONDS)
        stop.set()
        for child in children:
            child.send("stop\n")
        for thread in threads:
            thread.join()
        for child in children:
            assert child.wait(120) == 0, child.stderr
            no_errors(child.stderr)
            result = json.loads(child.lines[-1])
            counts.update(result["counts"])
            problems.extend(result["problems"])
            assert result["reads"] > 0
    assert problems == []
    assert len(reads) > 10
    report = check_session(tmp_path / WORKSPACE / SESSION)  # every line whole, indices 0..n-1
    assert report.violations == []
    shared: dict[str, list[int]] = {name: [] for name in counts}
    for point in report.tracks["shared"]:
        shared[point["writer"]].append(point["seq"])
    logged: dict[str, list[int]] = {name: [] for name in counts}
    for entry in report.logs:
        logged[entry["metadata"]["writer"]].append(entry["metadata"]["seq"])
    for name, count in counts.items():
        assert shared[name] == list(range(count)), f"{name}: shared track"  # none lost, twice, reordered
        assert [p["seq"] for p in report.tracks[f"own-{name}"]] == list(range(count)), name
        assert logged[name] == list(range(0, count, 10)), f"{name}: logs"
    total = sum(counts.values())
    print(f"stress: {len(counts)} writers, {total:,} points per track kind, {len(report.logs):,} logs, "
          f"{len(reads)} reads in this process, {SECONDS:.0f} s")
