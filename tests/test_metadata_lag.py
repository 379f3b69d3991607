"""A track's metadata.json may lag its data while the session writes (a file replace per track per
flush made wide sessions slow), and is in step whenever it matters: an explicit flush(), a read, the
track's stats, a listing, close(), and at most ``METADATA_INTERVAL`` seconds after a write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import dreamlake._disk.session_dir as session_dir
from dreamlake import Session, StorageError
from dreamlake._disk.session_dir import SessionDir
from dreamlake._schema.wire import TrackSpec


def meta(root: Path, track: str) -> Any:
    """The track's metadata.json, or None if it was never written."""
    path = root / "ws" / "run" / "tracks" / track / "metadata.json"
    return json.loads(path.read_text()) if path.exists() else None


def lines(root: Path, track: str) -> int:
    return (root / "ws" / "run" / "tracks" / track / "data.jsonl").read_text().count("\n")


@pytest.fixture
def sdir(tmp_path: Path) -> Any:
    d = SessionDir(tmp_path, "ws", {"name": "run"})
    d.open()
    yield d
    d.close({})


def test_writes_leave_metadata_behind_until_it_matters(tmp_path: Path, sdir: SessionDir) -> None:
    for k in range(3):
        sdir.write_track(TrackSpec("a"), [{"v": k}])
        sdir.write_track(TrackSpec("b"), [{"v": k}])
    assert lines(tmp_path, "a") == 3
    assert meta(tmp_path, "a") is None  # not replaced at every write
    assert sdir.read_track("a", 0, 10)["total"] == 3  # reads come from data.jsonl
    assert meta(tmp_path, "a")["totalDataPoints"] == 3  # a read settles it
    assert meta(tmp_path, "b") is None  # and only it
    sdir.settle(("b",))
    assert meta(tmp_path, "b")["nextIndex"] == 3


def test_stats_and_listing_are_in_step(tmp_path: Path, sdir: SessionDir) -> None:
    sdir.write_track(TrackSpec("a", description="loss"), [{"v": 1}, {"v": 2}])
    sdir.write_track(TrackSpec("b"), [{"v": 1}])
    stats = sdir.track_stats("a")
    assert (stats["totalDataPoints"], stats["description"]) == (2, "loss")
    assert stats["firstDataAt"] is not None
    assert [(t["name"], t["totalDataPoints"]) for t in sdir.list_tracks()] == [("a", 2), ("b", 1)]
    assert meta(tmp_path, "b")["totalDataPoints"] == 1


def test_a_track_declared_without_points_is_listed_at_once(tmp_path: Path, sdir: SessionDir) -> None:
    sdir.write_track(TrackSpec("empty", description="later"), [])
    assert meta(tmp_path, "empty")["totalDataPoints"] == 0


def test_the_interval_bounds_the_lag(
    tmp_path: Path, sdir: SessionDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdir.write_track(TrackSpec("a"), [{"v": 0}])
    assert meta(tmp_path, "a") is None
    monkeypatch.setattr(session_dir, "METADATA_INTERVAL", 0.0)  # the interval has passed
    sdir.write_track(TrackSpec("a"), [{"v": 1}])
    assert meta(tmp_path, "a")["totalDataPoints"] == 2


def test_flush_and_close_bring_metadata_in_step(tmp_path: Path) -> None:
    s = Session("run", "ws", local_path=tmp_path, flush_interval=3600).open()
    tracks = [s.track(f"t{k}") for k in range(50)]
    for step in range(4):
        for t in tracks:
            t.append(step=step)
    s.flush()
    assert {meta(tmp_path, f"t{k}")["totalDataPoints"] for k in range(50)} == {4}
    tracks[0].append(step=4)
    s.close()
    assert meta(tmp_path, "t0")["totalDataPoints"] == 5


def test_a_failing_metadata_write_stores_no_point_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, real_temporary = session_dir.write_json_atomic, session_dir.temporary_beside
    failing = {"on": False}
    blocker = tmp_path / "blocker"  # a directory where a flush's temporary metadata file would go
    blocker.mkdir()

    def write(path: str | Path, obj: Any, fsync: bool = False) -> Any:
        if failing["on"] and Path(path).name == "metadata.json":
            raise OSError(28, "No space left on device")
        return real(path, obj, fsync)

    def temporary(path: str) -> str:
        return str(blocker) if failing["on"] else real_temporary(path)

    monkeypatch.setattr(session_dir, "write_json_atomic", write)
    monkeypatch.setattr(session_dir, "temporary_beside", temporary)
    monkeypatch.setattr(session_dir, "METADATA_INTERVAL", 0.0)  # every write tries the metadata
    s = Session("run", "ws", local_path=tmp_path, flush_interval=3600).open()
    t = s.track("loss")
    t.append(step=0)
    s.flush()
    failing["on"] = True
    for step in range(1, 10):
        t.append(step=step)
    with pytest.raises(StorageError, match="the disk is full") as raised:
        s.flush()
    assert "The points are stored" in str(raised.value)
    assert lines(tmp_path, "loss") == 10  # stored once, not given back and written again
    assert meta(tmp_path, "loss")["totalDataPoints"] == 1  # the old one, whole
    failing["on"] = False
    s.flush()
    assert meta(tmp_path, "loss")["totalDataPoints"] == 10
    s.close()
    assert lines(tmp_path, "loss") == 10


def test_close_writes_the_metadata_with_each_tracks_last_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The flush of close() replaces a track's metadata.json under the lock its write holds, so
    # close takes each track's lock once, not once to write and once more to settle.
    locks: list[str] = []
    lock_class = type(session_dir.TrackLog(tmp_path).lock)
    real_enter, real_runs = lock_class.__enter__, session_dir.write_runs

    def counting_enter(self: Any) -> Any:
        locks.append(self.path.parent.name)
        return real_enter(self)

    def counting_runs(runs: list[Any]) -> Any:  # a run takes its track's lock too (in C)
        done = real_runs(runs)
        locks.extend(Path(run[1]).parent.name for run in runs[: len(done)])
        return done

    s = Session("run", "ws", local_path=tmp_path, flush_interval=3600).open()
    tracks = [s.track(f"t{k}") for k in range(20)]
    for step in range(3):
        for t in tracks:
            t.append(step=step)
    monkeypatch.setattr(lock_class, "__enter__", counting_enter)
    monkeypatch.setattr(session_dir, "write_runs", counting_runs)
    s.close()
    assert sorted(locks) == sorted(f"t{k}" for k in range(20))
    for k in range(20):
        assert meta(tmp_path, f"t{k}")["totalDataPoints"] == lines(tmp_path, f"t{k}") == 3


def test_the_last_writes_bring_the_metadata_in_step_as_they_write(sdir: SessionDir) -> None:
    sdir.write_track(TrackSpec("a"), [{"v": 0}])
    assert meta(sdir.directory.parent.parent, "a") is None  # lags, as any write but the last
    sdir.settle_as_written = True
    sdir.write_track(TrackSpec("a"), [{"v": 1}])
    assert meta(sdir.directory.parent.parent, "a")["totalDataPoints"] == 2
