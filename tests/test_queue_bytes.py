"""The byte bound of the queue (``max_queue_bytes``): heavy points against a stalled sink."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from dreamlake import QueueFullError, Session
from dreamlake._agent.hotpath import point_bytes
from dreamlake.testing import stalled

from .sinks import GatedSink, install

FLOATS = 10_000
HEAVY = point_bytes({"step": 1000, "values": [0.5] * FLOATS})  # ~320 kB each
BOUND = 10 * HEAVY + HEAVY // 2  # room for ten heavy points and a half
POINTS = 40


def heavy(step: int) -> dict[str, Any]:
    return {"step": step, "values": [float(step)] * FLOATS}


def wait_until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def make(tmp_path: Path, on_full: str) -> Session:
    return Session("heavy", "w", local_path=tmp_path, max_queue_bytes=BOUND, on_full=on_full).open()  # type: ignore[arg-type]


def steps_on_disk(session: Session) -> list[int]:
    path = session.path / "tracks" / "t" / "data.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(e["data"]["values"] == [float(e["data"]["step"])] * FLOATS for e in entries)
    return [e["data"]["step"] for e in entries]


def test_the_estimate_counts_heavy_points_by_their_size() -> None:
    assert point_bytes({"values": [0.5] * FLOATS}) > 41 * FLOATS  # a slot and a float object per item
    # Its Fifo slot, the dict (64 bytes, then a 120-byte table in 128-byte blocks), a float and an int.
    assert sys.getsizeof({"a": 0.5, "b": 1000}) == 64 + 120
    assert point_bytes({"a": 0.5, "b": 1000}) == 8 + 64 + 128 + 32 + 32
    assert point_bytes({"s": "x" * 1000}) - point_bytes({"s": ""}) == 992  # 1049 and 49 in blocks


@pytest.mark.timeout(60)
def test_raise_refuses_heavy_points_past_the_bound(tmp_path: Path) -> None:
    with stalled() as release:
        s = make(tmp_path, "raise")
        track = s.track("t")
        for step in range(11):  # admitted while below the bound: eleven, never twelve
            track.append(**heavy(step))
            assert s.agent_stats()["queuedBytes"] < BOUND + HEAVY
        with pytest.raises(QueueFullError, match="max_queue_bytes"):
            track.append(**heavy(11))
        assert s._queue.held == 11
        release.set()
        s.flush()
        assert s.agent_stats()["queuedBytes"] == 0
        track.append(**heavy(POINTS))  # room again once the sink caught up
        s.close()
    assert steps_on_disk(s) == [*range(11), POINTS]


@pytest.mark.timeout(60)
def test_drop_newest_keeps_the_bytes_bounded(tmp_path: Path) -> None:
    with stalled() as release:
        s = make(tmp_path, "drop_newest")
        track = s.track("t")
        for step in range(11):
            track.append(**heavy(step))
        with pytest.warns(RuntimeWarning, match="bytes"):
            track.append(**heavy(11))
        for step in range(12, POINTS):
            track.append(**heavy(step))
            assert s.agent_stats()["queuedBytes"] < BOUND + HEAVY
        assert s.agent_stats()["dropped"] == POINTS - 11
        release.set()
        s.close()
    assert steps_on_disk(s) == list(range(11))


@pytest.mark.timeout(60)
def test_drop_oldest_makes_room_for_a_heavy_point_with_small_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    GatedSink.gate.clear()
    GatedSink.entered.clear()
    install(monkeypatch, GatedSink)
    try:
        s = Session("heavy", "w", local_path=tmp_path, max_queue_bytes=BOUND, on_full="drop_oldest",
                    flush_interval=3600.0).open()
        track = s.track("t")
        small = point_bytes({"step": 1000})
        count = BOUND // small + 100
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            step = 0
            while not GatedSink.entered.is_set():  # until the agent holds a first batch in flight
                track.append(step=step)
                step += 1
                if step % 1000 == 0:
                    GatedSink.entered.wait(0.001)  # let the agent's thread run
            for later in range(step, count):  # the rest stays queued: droppable
                track.append(step=later)
            assert s.agent_stats()["queuedBytes"] < BOUND + small
            dropped = s.agent_stats()["dropped"]
            track.append(**heavy(10**6))  # costs the place of many small ones, not one
        assert s.agent_stats()["dropped"] - dropped >= HEAVY // small
        assert s.agent_stats()["queuedBytes"] <= BOUND
        GatedSink.gate.set()
        s.close()
    finally:
        GatedSink.gate.set()
    path = s.path / "tracks" / "t" / "data.jsonl"
    last = json.loads(path.read_text().splitlines()[-1])["data"]
    assert last["step"] == 10**6


@pytest.mark.timeout(60)
def test_block_waits_for_bytes_and_loses_nothing(tmp_path: Path) -> None:
    with stalled() as release:
        s = make(tmp_path, "block")
        track = s.track("t")
        appended = 0

        def produce() -> None:
            nonlocal appended
            for step in range(POINTS):
                track.append(**heavy(step))
                appended += 1

        producer = threading.Thread(target=produce)
        producer.start()
        wait_until(lambda: appended >= 11)
        # Nothing leaves memory while the sink is stalled: the producer waits at the bound.
        assert producer.is_alive()
        assert appended == 11
        assert s.agent_stats()["queuedBytes"] < BOUND + HEAVY
        release.set()
        producer.join(60)
        assert not producer.is_alive()
        s.close()
    assert steps_on_disk(s) == list(range(POINTS))


def test_the_python_twins_bound_the_bytes_the_same(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.modules['dreamlake._speedups'] = None  # the Python twins, as without a compiler
        from dreamlake import QueueFullError, Session
        from dreamlake._agent import hotpath
        from dreamlake.testing import stalled
        assert not hotpath.COMPILED
        with stalled() as release:
            s = Session("heavy", "w", local_path={str(tmp_path)!r}, max_queue_bytes={BOUND},
                        on_full="raise").open()
            track = s.track("t")
            accepted = 0
            try:
                for step in range({POINTS}):
                    track.append(step=step, values=[float(step)] * {FLOATS})
                    accepted += 1
            except QueueFullError:
                pass
            assert accepted == 11, accepted
            assert s.agent_stats()["queuedBytes"] < {BOUND + HEAVY}
            release.set()
            s.flush()
            assert s.agent_stats()["queuedBytes"] == 0, s.agent_stats()["queuedBytes"]
            s.close()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
