"""Wide sessions write each track in few, large writes: the agent wakes at ``WIDE_POINTS`` queued
points per track (when that is more than ``batch_size``, and never past half of ``max_queue``), and a
flush writes each track once with what it holds, without splitting it over two groups.

The bounds (``max_queue``, its bytes, the spool) are not touched: only the early wake-up comes later.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from dreamlake import Session
from dreamlake._agent.agent import Agent
from dreamlake._agent.queue import WIDE_POINTS, PointQueue
from dreamlake._config import AgentConfig
from dreamlake._sinks.base import TrackSpec
from dreamlake._sinks.local import LocalSink

from .sinks import install

pytestmark = pytest.mark.timeout(120)

FLUSH_INTERVAL = 3600.0  # only a wake-up, a flush() or close() writes


def watch_wakes(session: Session) -> list[tuple[int, int]]:
    """``(points held, bytes held)`` at each wake-up of the agent, seen from the appending thread."""
    queue: PointQueue = session._queue
    wakes: list[tuple[int, int]] = []
    wake = queue.waker

    def waker() -> None:
        wakes.append((queue.held, queue.held_bytes))
        wake()

    queue.waker = waker
    return wakes


def test_a_wide_queue_wakes_the_agent_at_its_points_per_track(tmp_path: Path) -> None:
    tracks, batch = 200, 100  # 25 per track is 5,000 points, far above batch_size
    with Session(
        "run", "ws", local_path=tmp_path, batch_size=batch, max_queue=100_000, flush_interval=FLUSH_INTERVAL
    ) as s:
        wakes = watch_wakes(s)
        handles = [s.track(f"t{k}") for k in range(tracks)]
        for step in range(WIDE_POINTS + 5):
            for t in handles:
                t.append(step=step)
    first = wakes[0][0]
    assert WIDE_POINTS * tracks <= first <= WIDE_POINTS * tracks + 1


def test_a_narrow_queue_still_wakes_at_batch_size(tmp_path: Path) -> None:
    with Session(
        "run", "ws", local_path=tmp_path, batch_size=100, max_queue=100_000, flush_interval=FLUSH_INTERVAL
    ) as s:
        wakes = watch_wakes(s)
        handles = [s.track(f"t{k}") for k in range(3)]  # 3 x 25 points is less than a batch
        for step in range(50):
            for t in handles:
                t.append(step=step)
    assert 100 <= wakes[0][0] <= 101


def test_the_raised_wake_up_stays_within_half_of_max_queue(tmp_path: Path) -> None:
    tracks, max_queue = 1_000, 2_000  # 25 per track would be 25,000: more than the queue holds
    with Session(
        "run", "ws", local_path=tmp_path, batch_size=100, max_queue=max_queue, flush_interval=FLUSH_INTERVAL
    ) as s:
        wakes = watch_wakes(s)
        handles = [s.track(f"t{k}") for k in range(tracks)]
        for step in range(3):
            for t in handles:
                t.append(step=step)
        assert s.agent_stats()["dropped"] == 0
    assert max_queue // 2 - 100 <= wakes[0][0] <= max_queue // 2 + 1
    for k in range(tracks):
        path = tmp_path / "ws" / "run" / "tracks" / f"t{k}" / "data.jsonl"
        assert path.read_bytes().count(b"\n") == 3


def test_heavy_points_wake_the_agent_at_the_same_share_of_max_queue_bytes(tmp_path: Path) -> None:
    # The raised byte threshold is the same share of max_queue_bytes as the raised point threshold
    # is of max_queue (as batch_size's is): here the bytes come first.
    tracks, batch, max_queue, max_bytes = 200, 1_000, 100_000, 2_000_000
    with Session(
        "run", "ws", local_path=tmp_path, batch_size=batch, max_queue=max_queue, max_queue_bytes=max_bytes,
        flush_interval=FLUSH_INTERVAL,
    ) as s:
        wakes = watch_wakes(s)
        handles = [s.track(f"t{k}") for k in range(tracks)]
        for step in range(WIDE_POINTS + 5):
            for t in handles:
                t.append(step=step, x=0.5)
    points, held_bytes = wakes[0]
    raised = max_bytes * (WIDE_POINTS * tracks) // max_queue  # 100,000 bytes: ~430 points
    assert points < WIDE_POINTS * tracks
    assert raised <= held_bytes < raised + 1_000


class CountingSink(LocalSink):
    """Counts each track's writes (the group call, which the agent uses)."""

    writes: ClassVar[Counter[str]] = Counter()

    async def write_tracks(self, writes: Sequence[tuple[TrackSpec, Sequence[dict[str, Any]]]]) -> int:
        for spec, points in writes:
            if points:
                CountingSink.writes[spec.name] += 1
        return await super().write_tracks(writes)


def test_a_wide_session_below_the_raised_wake_up_writes_each_track_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    CountingSink.writes = Counter()
    install(monkeypatch, CountingSink)
    tracks, steps = 2_000, WIDE_POINTS - 1  # 48,000 points: 480 batches of batch_size, one flush
    with Session(
        "run", "ws", local_path=tmp_path, batch_size=100, max_queue=100_000, flush_interval=FLUSH_INTERVAL
    ) as s:
        handles = [s.track(f"t{k}") for k in range(tracks)]
        for step in range(steps):
            for t in handles:
                t.append(step=step)
    assert CountingSink.writes == Counter({f"t{k}": 1 for k in range(tracks)})


class RecordingSink(LocalSink):
    """Records the groups the agent hands over, storing nothing."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "ws", {"name": "run"})
        self.groups: list[list[tuple[str, int]]] = []

    async def write_tracks(self, writes: Sequence[tuple[TrackSpec, Sequence[dict[str, Any]]]]) -> int:
        self.groups.append([(spec.name, len(points)) for spec, points in writes])
        return len(writes)


def pending_writes(tmp_path: Path, batch: int, counts: dict[str, int]) -> list[list[tuple[str, int]]]:
    """The groups one flush of a queue holding ``counts`` points per track hands to the sink."""
    queue = PointQueue(AgentConfig(batch_size=batch, max_queue=100_000, spool=False))
    queue.open()
    for name, count in counts.items():
        buffer = queue.buffer(TrackSpec(name))
        for i in range(count):
            buffer.items.append({"i": i})
    sink = RecordingSink(tmp_path)
    agent = Agent(queue, sink)
    assert anyio.run(agent._write_pending, None, False) is None
    assert queue.held == 0
    return sink.groups


def test_a_flush_does_not_split_a_track_over_two_groups(tmp_path: Path) -> None:
    groups = pending_writes(tmp_path, 100, {"a": 60, "b": 60, "c": 30})
    assert groups == [[("a", 60)], [("b", 60), ("c", 30)]]


def test_a_track_holding_more_than_a_batch_is_written_in_batches(tmp_path: Path) -> None:
    groups = pending_writes(tmp_path, 100, {"a": 30, "b": 250, "c": 30})
    assert groups == [[("a", 30)], [("b", 100)], [("c", 30)], [("b", 100)], [("b", 50)]]


class StoppingSink(RecordingSink):
    """Records the groups, and has stop() begin while the first is written."""

    agent: Agent

    async def write_tracks(self, writes: Sequence[tuple[TrackSpec, Sequence[dict[str, Any]]]]) -> int:
        self.agent._stopping = True
        return await super().write_tracks(writes)


@pytest.mark.parametrize("yield_to_stop", [True, False])
def test_the_run_loops_flush_leaves_what_it_has_not_taken_to_the_last_writes(
    tmp_path: Path, yield_to_stop: bool
) -> None:
    # close() writes what is left after the flush it finds running as last writes, which bring
    # each track's metadata.json in step as they write: that flush stops after its current group.
    queue = PointQueue(AgentConfig(batch_size=100, max_queue=100_000, spool=False))
    queue.open()
    for name in "abc":
        buffer = queue.buffer(TrackSpec(name))
        for i in range(60):
            buffer.items.append({"i": i})
    sink = StoppingSink(tmp_path)
    sink.agent = agent = Agent(queue, sink)
    assert anyio.run(agent._write_pending, None, yield_to_stop) is None
    if yield_to_stop:
        assert (sink.groups, queue.held) == ([[("a", 60)]], 120)  # b and c wait, untouched
    else:
        assert (sink.groups, queue.held) == ([[("a", 60)], [("b", 60)], [("c", 60)]], 0)


def test_a_wide_session_keeps_few_objects_for_the_garbage_collector(tmp_path: Path) -> None:
    # Every object a track keeps is visited by each full collection, and the points' allocations set
    # collections off all the time while a loop appends. Per track: its handle, buffer, spec and two
    # bound methods; once written, its log (which is its own lock) and thread lock, and the
    # metadata.json last written (a dict and its tags list).
    with Session("run", "ws", local_path=tmp_path, flush_interval=FLUSH_INTERVAL) as s:
        gc.collect()
        before = len(gc.get_objects())
        handles = [s.track(f"t{k}") for k in range(1_000)]
        gc.collect()
        with_handles = len(gc.get_objects())
        for t in handles:
            t.append(v=1)
        s.flush()
        gc.collect()
        written = len(gc.get_objects())
    assert (with_handles - before) / 1_000 < 5.1
    assert (written - with_handles) / 1_000 < 4.1
