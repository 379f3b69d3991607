"""Backpressure: every on_full policy against a stalled sink, and the memory bound."""

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamlake import FlushTimeoutError, QueueFullError, Session

from .sinks import GatedSink, SlowFirstWriteSink, install

MAX = 1000


@pytest.fixture
def stalled(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[GatedSink]]:
    GatedSink.gate.clear()
    GatedSink.entered.clear()
    install(monkeypatch, GatedSink)
    yield GatedSink
    GatedSink.gate.set()  # never leave an agent stuck


def wait_until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def steps_on_disk(session: Session) -> list[int]:
    path = session.path / "tracks" / "t" / "data.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["index"] for e in entries] == list(range(len(entries)))
    return [e["data"]["step"] for e in entries]


def append_steps(session: Session, steps: range) -> None:
    track = session.track("t")
    for step in steps:
        track.append(step=step)


def make(tmp_path: Path, on_full: str) -> Session:
    return Session("r", "w", local_path=tmp_path, max_queue=MAX, batch_size=100, on_full=on_full).open()  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_block_waits_for_room_and_loses_nothing(tmp_path: Path, stalled: type[GatedSink]) -> None:
    s = make(tmp_path, "block")
    track = s.track("t")
    appended = 0

    def produce() -> None:
        nonlocal appended
        for step in range(3 * MAX):
            track.append(step=step)
            appended += 1

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: appended >= MAX)
    # With the sink stalled nothing leaves memory, so the producer cannot get past the bound.
    assert producer.is_alive()
    assert appended <= MAX + 1
    assert s._queue.held <= MAX
    stalled.gate.set()
    producer.join(60)
    assert not producer.is_alive()
    s.close()
    assert steps_on_disk(s) == list(range(3 * MAX))


@pytest.mark.timeout(60)
def test_drop_newest_keeps_the_first_points_and_warns_once(tmp_path: Path, stalled: type[GatedSink]) -> None:
    s = make(tmp_path, "drop_newest")
    with pytest.warns(RuntimeWarning, match="dropped") as caught:
        append_steps(s, range(3 * MAX))
    assert len([w for w in caught if "dropped" in str(w.message)]) == 1
    assert s.agent_stats()["dropped"] == 2 * MAX
    stalled.gate.set()
    s.close()
    assert steps_on_disk(s) == list(range(MAX))
    assert json.loads((s.path / "session.json").read_text())["agent"]["dropped"] == 2 * MAX


@pytest.mark.timeout(60)
def test_drop_oldest_keeps_the_newest_queued_points(tmp_path: Path, stalled: type[GatedSink]) -> None:
    s = make(tmp_path, "drop_oldest")
    append_steps(s, range(MAX))
    assert stalled.entered.wait(30)  # the agent holds one batch in flight; those cannot be dropped
    with pytest.warns(RuntimeWarning, match="dropped"):
        append_steps(s, range(MAX, 3 * MAX))
    stalled.gate.set()
    s.close()
    steps = steps_on_disk(s)
    assert len(steps) == MAX
    assert steps == sorted(steps)
    assert steps[-1] == 3 * MAX - 1
    assert s.agent_stats()["dropped"] == 2 * MAX


@pytest.mark.timeout(60)
def test_raise_refuses_the_point_and_keeps_the_rest(tmp_path: Path, stalled: type[GatedSink]) -> None:
    s = make(tmp_path, "raise")
    track = s.track("t")
    for step in range(MAX):
        track.append(step=step)
    with pytest.raises(QueueFullError, match="max_queue"):
        track.append(step=MAX)
    stalled.gate.set()
    s.flush()
    track.append(step=MAX + 1)  # room again once the sink caught up
    s.close()
    assert steps_on_disk(s) == [*range(MAX), MAX + 1]


@pytest.mark.timeout(60)
def test_flush_timeout_reports_and_close_still_writes(tmp_path: Path, stalled: type[GatedSink]) -> None:
    s = make(tmp_path, "block")
    for step in range(10):
        s.track("t").append(step=step)
    with pytest.raises(FlushTimeoutError, match="still in memory"):
        s.flush(timeout=0.2)
    stalled.gate.set()
    s.close()
    assert steps_on_disk(s) == list(range(10))


@pytest.mark.timeout(60)
def test_close_past_its_deadline_loses_no_taken_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SlowFirstWriteSink.release.clear()
    SlowFirstWriteSink.slowed.clear()
    install(monkeypatch, SlowFirstWriteSink)
    # Five chunks pending when close() gives up: the agent is cancelled between chunks.
    s = Session("r", "w", local_path=tmp_path, batch_size=1000, max_queue=10_000, flush_interval=3600).open()
    append_steps(s, range(5000))
    assert SlowFirstWriteSink.slowed.wait(30)
    with pytest.raises(FlushTimeoutError, match="5000 points"):
        s.close(timeout=0.3)
    SlowFirstWriteSink.release.set()
    s.close()  # waits for the same stop again; the exit hook does this at interpreter exit
    assert steps_on_disk(s) == list(range(5000))
