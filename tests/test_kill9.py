"""Randomised kill -9 trials: whatever moment SIGKILL lands, nothing beyond the loss window is lost.

Each of the 20 trials runs a child that logs in one of four ways, chosen so that the kill tends to
land in a different part of the write path:

* ``append``: two tracks at full speed, small batches and a short interval (background writes);
* ``flush``: large batches written only by explicit ``flush()`` calls (the kill lands in a big write);
* ``metadata``: 50 tracks, a few points each per round, a flush per round, with parameters and logs
  (the kill lands while metadata.json, parameters.json and the logs are replaced or appended);
* ``file``: a 20 MB file saved again and again under the same prefix and name while points are
  appended (the kill lands while the file is copied, hashed or put in the index).

After every ``flush()`` that returned, the child prints ``flushed <points per track> <round>``; the
trial waits for a random number of those lines, then a random fraction of the interval between
them, then kills the child's process group with SIGKILL. The durability contract (mode "buffered")
is that every point appended before a completed flush is on disk, so the test checks: the session
directory satisfies the storage invariants (a torn last line is allowed until the next run repairs
it); every track holds points ``0..m-1`` in order with ``m`` at least the last flushed count; the
parameters, logs and saved file are at least as recent as the last completed flush; and a new run
reads everything back through the API and leaves the files without a torn line.

Each trial prints one ``KILL9`` line with its numbers (run with ``-s`` to see them).
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dreamlake import Session

from ._invariants import check_session
from ._subproc import SESSION, WORKSPACE, Child, block, make_script, no_errors

pytestmark = pytest.mark.timeout(120)

TRIALS = 20
SCENARIOS = ("append", "flush", "metadata", "file")  # trial t runs SCENARIOS[t % 4]: 5 trials each
FILE_SIZE = 20 * 1024 * 1024
FILE_PREFIX = "/ckpt"
FILE_NAME = "ckpt.bin"

# Every point of every track is {"step": i, "value": i * 0.25} (exact in binary: the JSON round trip
# cannot change it), so any lost, duplicated, reordered or altered point shows up.
APPEND = """
with Session(NAME, WS, local_path=ROOT, batch_size=2000, flush_interval=0.05) as s:
    a, b = s.track("a"), s.track("b")
    i = 0
    while True:
        a.append(step=i, value=i * 0.25)
        b.append(step=i, value=i * 0.25)
        i += 1
        if i % EVERY == 0:
            s.flush()
            print("flushed", i, i // EVERY, flush=True)
"""

FLUSH = """
with Session(NAME, WS, local_path=ROOT, batch_size=200_000, flush_interval=3600.0) as s:
    a, b = s.track("a"), s.track("b")
    i = 0
    while True:
        a.append(step=i, value=i * 0.25)
        b.append(step=i, value=i * 0.25)
        i += 1
        if i % EVERY == 0:  # 2 * EVERY = 100k points per flush
            s.flush()
            print("flushed", i, i // EVERY, flush=True)
"""

METADATA = """
with Session(NAME, WS, local_path=ROOT) as s:
    tracks = [s.track(f"t{k:02d}") for k in range(TRACKS)]
    params = s.parameters()
    i = 0
    r = 0
    while True:
        for t in tracks:
            for j in range(i, i + PER_ROUND):
                t.append(step=j, value=j * 0.25)
        i += PER_ROUND
        params.set(round=r, lr=0.1 / (r + 1))
        s.log("round done", round=r)
        s.flush()
        print("flushed", i, r, flush=True)
        r += 1
"""

FILE = """
with Session(NAME, WS, local_path=ROOT, batch_size=2000, flush_interval=0.05) as s:
    a, b = s.track("a"), s.track("b")
    i = 0
    n = 0
    while True:
        saving = s.file(SOURCE, prefix=PREFIX).save(wait=False)
        appended = 0
        while not saving.done() and appended < CAP:  # points appended while the file is copied
            for _ in range(100):
                a.append(step=i, value=i * 0.25)
                b.append(step=i, value=i * 0.25)
                i += 1
            appended += 100
        meta = saving.result()
        n += 1
        print("saved", n, meta["checksum"], flush=True)
        s.flush()
        print("flushed", i, n, flush=True)
"""


def plan(trial: int) -> dict[str, Any]:
    """The trial's scenario and random choices (deterministic: seeded by the trial number)."""
    rng = random.Random(1000 + trial)
    scenario = SCENARIOS[trial % len(SCENARIOS)]
    choice: dict[str, Any] = {
        "scenario": scenario,
        # progress lines to wait for before the kill (fewer of the big flushes: checking is slow)
        "lines": rng.randint(2, 3 if scenario == "flush" else 5),
        "fraction": rng.random(),  # of the interval between progress lines, slept before the kill
    }
    if scenario == "append":
        choice["params"] = {"EVERY": rng.choice([2_000, 5_000, 10_000, 20_000])}
    elif scenario == "flush":
        choice["params"] = {"EVERY": 50_000}
    elif scenario == "metadata":
        choice["params"] = {"TRACKS": 50, "PER_ROUND": rng.randint(1, 5)}
    else:
        choice["params"] = {"PREFIX": FILE_PREFIX, "CAP": rng.choice([2_000, 10_000, 20_000])}
        choice["content_seed"] = rng.getrandbits(32)
    return choice


def run_until_killed(script: str, lines: int, fraction: float) -> tuple[list[str], float]:
    """Run ``script``, kill -9 it at the chosen moment; return its stdout lines and the sleep."""
    with Child(script) as child:
        stamps: list[float] = []
        while len(stamps) < lines:
            line = child.expect(lambda text: text.startswith(("flushed ", "saved ")), timeout=30)
            if line.startswith("flushed "):
                stamps.append(time.monotonic())
        interval = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
        delay = fraction * interval
        time.sleep(delay)  # not a wait for an effect: it only chooses the moment of the kill
        child.signal(signal.SIGKILL)  # the child alone (it forks nothing); Child's exit kills the group
        status = child.wait(30)
        assert status == -signal.SIGKILL, f"the child ended by itself ({status}):\n{child.stderr}"
        no_errors(child.stderr)
        return child.lines, delay


def last_flushed(lines: list[str]) -> tuple[int, int]:
    """``(points per track, round)`` of the last completed flush the child reported."""
    flushed = [line.split() for line in lines if line.startswith("flushed ")]
    assert flushed, lines
    return int(flushed[-1][1]), int(flushed[-1][2])


def check_track(name: str, points: list[dict[str, Any]], flushed: int) -> None:
    """Points ``0..m-1`` in order, nothing altered, and ``m`` at least the flushed count."""
    bad = next((k for k, p in enumerate(points) if p != {"step": k, "value": k * 0.25}), None)
    assert bad is None, f"track {name}: point {bad} is {points[bad]!r}"
    lost = max(0, flushed - len(points))
    assert lost == 0, (
        f"track {name}: {lost} points lost beyond the window (flushed {flushed}, found {len(points)})"
    )


def read_all(session: Session, track: str) -> list[dict[str, Any]]:
    """Every point of ``track`` through the API, in pages."""
    entries: list[dict[str, Any]] = []
    while True:
        page = session.track(track).read(start_index=len(entries), limit=100_000)
        entries.extend(page["data"])
        if not page["hasMore"]:
            return entries


def leftovers(session_dir: Path) -> list[str]:
    """Temporary files a write cut short left behind (evidence of where the kill landed)."""
    return sorted(
        str(path.relative_to(session_dir))
        for path in session_dir.rglob("*")
        if path.is_file() and path.name.endswith((".tmp", ".part"))
    )


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill9_trial(tmp_path: Path, trial: int, record_property: Callable[[str, object], None]) -> None:
    choice = plan(trial)
    scenario: str = choice["scenario"]
    root = tmp_path / "store"
    session_dir = root / WORKSPACE / SESSION
    params: dict[str, Any] = {"ROOT": str(root), "NAME": SESSION, "WS": WORKSPACE, **choice["params"]}
    source_checksum = None
    if scenario == "file":
        source = tmp_path / FILE_NAME  # the same bytes at every save: any stored copy must match them
        content = random.Random(choice["content_seed"]).randbytes(FILE_SIZE)
        source.write_bytes(content)
        source_checksum = hashlib.sha256(content).hexdigest()
        params["SOURCE"] = str(source)
    code = {"append": APPEND, "flush": FLUSH, "metadata": METADATA, "file": FILE}[scenario]

    lines, delay = run_until_killed(make_script(block(code), **params), choice["lines"], choice["fraction"])
    flushed, flushed_round = last_flushed(lines)

    # Right after the crash: every invariant holds, except that a last line may be torn.
    report = check_session(session_dir, allow_torn_tail=True)
    assert report.violations == [], report.violations
    torn = [str(Path(path).relative_to(session_dir)) for path in report.torn]
    left = leftovers(session_dir)
    expected_tracks = {f"t{k:02d}" for k in range(params["TRACKS"])} if scenario == "metadata" else {"a", "b"}
    assert set(report.tracks) == expected_tracks
    for name, points in report.tracks.items():
        check_track(name, points, flushed)
    found = {name: len(points) for name, points in report.tracks.items()}

    if scenario == "metadata":
        # Parameters and logs written by the flush that printed round r are there too.
        parameters = json.loads((session_dir / "parameters.json").read_text())
        assert parameters["data"]["round"] >= flushed_round, parameters
        rounds = [entry["metadata"]["round"] for entry in report.logs]
        assert rounds == list(range(len(rounds))), rounds
        assert len(rounds) >= flushed_round + 1, (rounds[-3:], flushed_round)

    saved = [line.split() for line in lines if line.startswith("saved ")]
    if scenario == "file":
        index = json.loads((session_dir / "files" / ".files_metadata.json").read_text())
        live = [
            entry
            for entry in index["files"]
            if entry.get("deletedAt") is None
            and entry["path"] == FILE_PREFIX
            and entry["filename"] == FILE_NAME
        ]
        assert saved, lines  # the child printed a flush line, so a save had completed
        assert len(live) == 1, live  # each save replaced the one before; never two, never none
        assert live[0]["checksum"] == source_checksum == saved[-1][2]
        assert live[0]["sizeBytes"] == FILE_SIZE
        # check_session verified that its bytes match the checksum.

    # The next run: it stores what the dead run's spool held beyond the files (exactly once, in
    # order, after what was there); reading repairs a torn last line, a log entry a torn logs.jsonl.
    recovered: dict[str, int] = {}
    with Session(SESSION, WORKSPACE, local_path=root) as s:
        for name in sorted(expected_tracks):
            entries = read_all(s, name)
            recovered[name] = len(entries)
            assert [e["index"] for e in entries] == list(range(len(entries))), name
            assert [e["data"] for e in entries[: found[name]]] == report.tracks[name], name
            check_track(name, [e["data"] for e in entries], flushed)
            assert s.track(name).stats()["totalDataPoints"] == len(entries), name
        s.log("reopened after kill -9")
        if scenario == "file":
            files = s.file(prefix=FILE_PREFIX).list()
            assert [(f["filename"], f["checksum"]) for f in files] == [(FILE_NAME, source_checksum)]
    after = check_session(session_dir, allow_torn_tail=False)
    assert after.violations == [], after.violations
    assert {name: len(points) for name, points in after.tracks.items()} == recovered
    assert len(after.logs) >= len(report.logs) + 1
    assert not list((root / ".spool").iterdir())  # the dead run's spool was removed once stored

    numbers = {
        "scenario": scenario,
        "flushed": flushed,
        "found_min": min(found.values()),
        "found_max": max(found.values()),
        "points_on_disk": sum(found.values()),
        "lost_beyond_window": max(0, flushed - min(found.values())),
        "recovered_from_spool": sum(recovered.values()) - sum(found.values()),
        "torn": len(torn),
        "leftovers": len(left),
        "saves": len(saved),
        "delay_ms": round(delay * 1000, 1),
    }
    for key, value in numbers.items():
        record_property(key, value)
    print(
        f"\nKILL9 trial={trial:2d} scenario={scenario:8s} lines={choice['lines']} "
        f"delay={numbers['delay_ms']:7.1f}ms flushed={flushed:7d} found={numbers['found_min']:7d}"
        f"..{numbers['found_max']:<7d} on_disk={numbers['points_on_disk']:8d} "
        f"lost_beyond_window={numbers['lost_beyond_window']} recovered={numbers['recovered_from_spool']} "
        f"torn={torn} leftovers={left} "
        f"saves={len(saved)}"
    )
