"""``dreamlake.testing``: capture a program's logging in memory; storage that stalls or fails."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from dreamlake import Session, StorageError
from dreamlake.testing import capture, failing, stalled


def train(root: Path) -> None:
    """A program under test: it opens its own session."""
    with Session("run-1", "project", local_path=root) as s:
        s.parameters().set(model={"lr": 0.1})
        loss = s.track("train/loss")
        for step in range(100):
            loss.append(loss=1.0 / (step + 1), step=step)
        s.log("done", epochs=1)
        assert loss.read(start_index=98, limit=5)["data"] == [
            {"index": 98, "data": {"loss": 1.0 / 99, "step": 98}},
            {"index": 99, "data": {"loss": 1.0 / 100, "step": 99}},
        ]
        assert s.parameters().get() == {"model.lr": 0.1}


def test_capture_keeps_everything_in_memory(tmp_path: Path) -> None:
    with capture() as logged:
        train(tmp_path)
    points = logged.points("project", "run-1", "train/loss")
    assert [p["step"] for p in points] == list(range(100))
    assert logged.parameters("project", "run-1") == {"model.lr": 0.1}
    (entry,) = logged.logs("project", "run-1")
    assert (entry["sequenceNumber"], entry["message"], entry["metadata"]) == (0, "done", {"epochs": 1})
    assert list(tmp_path.iterdir()) == []  # nothing on disk
    with pytest.raises(KeyError):
        logged.points("project", "other-run", "x")


def test_storage_back_to_normal_after_capture(tmp_path: Path) -> None:
    with capture():
        pass
    train(tmp_path)
    assert (tmp_path / "project" / "run-1" / "tracks" / "train%2Floss" / "data.jsonl").exists()


def test_failing_storage_keeps_points_and_raises_until_healed(tmp_path: Path) -> None:
    with failing() as healed:
        s = Session("f", "ws", local_path=tmp_path).open()
        for i in range(10):
            s.track("t").append(i=i)
        with pytest.warns(RuntimeWarning, match="No space"), pytest.raises(StorageError, match="No space"):
            s.flush()
        healed.set()
        s.flush()
        assert [p["data"]["i"] for p in s.track("t").read()["data"]] == list(range(10))
        s.close()


def test_stalled_storage_fills_the_queue_and_on_full_applies(tmp_path: Path) -> None:
    with stalled() as release:
        s = Session(
            "st", "ws", local_path=tmp_path, max_queue=100, batch_size=50, on_full="drop_newest"
        ).open()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for i in range(1000):
                s.track("t").append(i=i)
        assert s.agent_stats()["dropped"] >= 900
        assert any("dropped" in str(w.message) for w in seen)
        release.set()
        s.close()
    lines = (tmp_path / "ws" / "st" / "tracks" / "t" / "data.jsonl").read_text().splitlines()
    assert len(lines) == 1000 - s.agent_stats()["dropped"]
