"""A failing sink: reported once, raised from flush()/close(), points kept and written once it recovers."""

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamlake import Session, StorageError

from .sinks import FailingSink, install


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FailingSink]]:
    FailingSink.failing.clear()
    install(monkeypatch, FailingSink)
    yield FailingSink
    FailingSink.failing.clear()


def indices_and_steps(session: Session) -> list[int]:
    path = session.path / "tracks" / "t" / "data.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["index"] for e in entries] == list(range(len(entries)))
    return [e["data"]["step"] for e in entries]


@pytest.mark.timeout(60)
def test_failed_writes_are_kept_raised_and_retried(tmp_path: Path, failing: type[FailingSink]) -> None:
    s = Session("r", "w", local_path=tmp_path, flush_interval=3600).open()
    track = s.track("t")
    track.append(step=0)
    s.flush()
    failing.failing.set()
    for step in range(1, 50):
        track.append(step=step)
    with pytest.warns(RuntimeWarning, match="No space left"), pytest.raises(StorageError) as info:
        s.flush()
    assert isinstance(info.value.__cause__, OSError)
    assert "retried" in str(info.value)
    with pytest.raises(StorageError):  # raised again, but warned about only once
        s.flush()
    stats = s.agent_stats()
    assert stats["writeErrors"] == 2
    assert stats["lastError"] is not None
    track.append(step=50)  # appending itself never raises for a sink failure
    failing.failing.clear()
    s.flush()
    assert s.agent_stats()["lastError"] is None
    s.close()
    assert indices_and_steps(s) == list(range(51))


@pytest.mark.timeout(60)
def test_close_raises_when_the_sink_is_still_failing(tmp_path: Path, failing: type[FailingSink]) -> None:
    s = Session("r", "w", local_path=tmp_path, flush_interval=3600).open()
    failing.failing.set()
    s.track("t").append(step=0)
    with pytest.warns(RuntimeWarning), pytest.raises(StorageError):
        s.close()
    assert not s.is_open


def run_to_end(thread: threading.Thread) -> None:
    thread.start()
    thread.join(30)


@pytest.mark.timeout(60)
def test_blocked_caller_gets_the_error_instead_of_waiting_forever(
    tmp_path: Path, failing: type[FailingSink]
) -> None:
    failing.failing.set()
    s = Session("r", "w", local_path=tmp_path, max_queue=200, batch_size=50, flush_interval=0.05).open()
    outcome: list[BaseException] = []

    def produce() -> None:
        try:
            for step in range(10_000):
                s.track("t").append(step=step)
        except BaseException as exc:
            outcome.append(exc)

    producer = threading.Thread(target=produce)
    with pytest.warns(RuntimeWarning):
        run_to_end(producer)
    assert not producer.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], StorageError)
    failing.failing.clear()
    s.close()
    steps = indices_and_steps(s)
    assert steps == list(range(len(steps)))
    assert 150 <= len(steps) <= 201
