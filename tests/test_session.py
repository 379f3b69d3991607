"""The Session/Track API: shapes compatible with dreamlake 0.2.x, lifecycle and errors."""

import json
import math
from pathlib import Path
from typing import Any

import pytest

from dreamlake import (
    ConfigError,
    InvalidValueError,
    Session,
    SessionClosedError,
    StorageError,
    dreamlake_session,
)


def data_lines(session: Session, track: str) -> list[dict[str, Any]]:
    path = session.path / "tracks" / track / "data.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_seed_example_round_trip(tmp_path: Path) -> None:
    with Session(name="my-experiment", workspace="project", local_path=tmp_path) as session:
        for i in range(100):
            session.track("loss").append(value=1.0 / (i + 1), step=i)
        result = session.track("loss").read(start_index=0, limit=10)
    assert [p["index"] for p in result["data"]] == list(range(10))
    assert result["data"][3]["data"] == {"value": 0.25, "step": 3}
    assert (result["startIndex"], result["endIndex"], result["total"], result["hasMore"]) == (0, 9, 10, True)
    assert len(data_lines(session, "loss")) == 100


def test_read_sees_every_append_before_it_without_flush(tmp_path: Path) -> None:
    # Large batch and interval: nothing would be written yet if read() did not flush first.
    with Session("r", "w", local_path=tmp_path, batch_size=100_000, flush_interval=3600) as s:
        track = s.track("loss")
        for i in range(2500):
            track.append(step=i)
        tail = track.read(start_index=2490, limit=100)
        assert [p["data"]["step"] for p in tail["data"]] == list(range(2490, 2500))
        assert tail["hasMore"] is False
        assert tail["total"] == 10
        assert track.stats()["totalDataPoints"] == 2500
        empty = track.read(start_index=5000)
        assert (empty["data"], empty["total"], empty["endIndex"], empty["hasMore"]) == ([], 0, 4999, False)


def test_stats_shape(tmp_path: Path) -> None:
    with Session("r", "w", local_path=tmp_path) as s:
        track = s.track("acc", description="validation accuracy", tags=["val"], metadata={"unit": "%"})
        track.append(value=0.9)
        stats = track.stats()
    assert set(stats) == {
        "trackId",
        "name",
        "description",
        "tags",
        "metadata",
        "totalDataPoints",
        "bufferedDataPoints",
        "chunkedDataPoints",
        "totalChunks",
        "chunkSize",
        "firstDataAt",
        "lastDataAt",
        "createdAt",
        "updatedAt",
    }
    assert stats["name"] == "acc"
    assert stats["description"] == "validation accuracy"
    assert stats["tags"] == ["val"]
    assert stats["metadata"] == {"unit": "%"}
    assert stats["totalDataPoints"] == 1
    assert stats["firstDataAt"].endswith("Z")
    meta = json.loads((s.path / "tracks" / "acc" / "metadata.json").read_text())
    assert meta["totalDataPoints"] == meta["nextIndex"] == 1


def test_a_track_without_points_exists_with_zero_points(tmp_path: Path) -> None:
    with Session("r", "w", local_path=tmp_path) as s:
        stats = s.track("never", description="empty").stats()
    assert stats["totalDataPoints"] == 0
    assert stats["firstDataAt"] is None
    assert stats["description"] == "empty"


def test_listing_tracks_both_spellings(tmp_path: Path) -> None:
    with Session("r", "w", local_path=tmp_path) as s:
        s.track("b").append(v=1)
        s.track("a").append_batch([{"v": 1}, {"v": 2}])
        s.track("described", description="no points yet")
        listed = s.track("a").list_all()
        assert listed == s.tracks()
    by_name = {t["name"]: t for t in listed}
    assert sorted(by_name) == ["a", "b", "described"]
    assert by_name["a"]["totalDataPoints"] == 2
    assert by_name["described"]["totalDataPoints"] == 0
    assert by_name["described"]["description"] == "no points yet"


def test_append_batch(tmp_path: Path) -> None:
    with Session("r", "w", local_path=tmp_path) as s:
        result = s.track("loss").append_batch([{"value": 0.5, "step": 1}, {"value": 0.45, "step": 2}])
        assert result["count"] == 2
        with pytest.raises(ValueError, match="at least one"):
            s.track("loss").append_batch([])
        with pytest.raises(TypeError, match="point 1"):
            s.track("loss").append_batch([{"ok": 1}, {"bad": object()}])
        with pytest.raises(TypeError):
            s.track("loss").append_batch({"value": 1})  # type: ignore[arg-type]
    # The rejected batch queued nothing, not even its valid first point.
    assert [line["data"] for line in data_lines(s, "loss")] == [
        {"value": 0.5, "step": 1},
        {"value": 0.45, "step": 2},
    ]


def test_bad_value_raises_at_the_call_and_loses_nothing(tmp_path: Path) -> None:
    with Session("r", "w", local_path=tmp_path) as s:
        track = s.track("m")
        track.append(i=0)
        with pytest.raises(InvalidValueError, match="'model'"):
            track.append(i=1, model=object())
        track.append(i=2, when=math.inf)
    assert [line["data"]["i"] for line in data_lines(s, "m")] == [0, 2]


def test_lifecycle_and_closed_errors(tmp_path: Path) -> None:
    s = Session("r", "w", local_path=tmp_path)
    assert not s.is_open
    with pytest.raises(SessionClosedError):
        s.track("x")
    s.open()
    assert s.is_open
    assert s.open() is s
    track = s.track("x")
    track.append(v=1)
    s.close()
    s.close()  # idempotent
    assert not s.is_open
    for call in (lambda: track.append(v=2), track.read, track.stats, s.flush, lambda: s.track("y"), s.open):
        with pytest.raises(SessionClosedError):
            call()
    assert len(data_lines(s, "x")) == 1


def test_layout_exists_from_open(tmp_path: Path) -> None:
    with Session(
        "r", "w", local_path=tmp_path, description="d", tags=["t"], folder="/f", metadata={"k": 1}
    ) as s:
        for sub in ("logs", "tracks", "files"):
            assert (s.path / sub).is_dir()
        info = json.loads((s.path / "session.json").read_text())
    assert info["name"] == "r"
    assert info["workspace"] == "w"
    assert info["description"] == "d"
    assert info["tags"] == ["t"]
    assert info["folder"] == "/f"
    assert info["metadata"] == {"k": 1}
    assert info["created_at"].endswith("Z")
    closed = json.loads((s.path / "session.json").read_text())
    assert closed["agent"]["written"] == 0
    assert closed["agent"]["dropped"] == 0


def test_reopening_a_session_directory_keeps_created_at_and_appends(tmp_path: Path) -> None:
    with Session("r", "w", local_path=tmp_path, description="first") as s:
        s.track("loss").append(v=0)
    created = json.loads((s.path / "session.json").read_text())["created_at"]
    with Session("r", "w", local_path=tmp_path) as s2:
        s2.track("loss").append(v=1)
    info = json.loads((s2.path / "session.json").read_text())
    assert info["created_at"] == created
    assert info["description"] == "first"
    assert [line["index"] for line in data_lines(s2, "loss")] == [0, 1]


def test_decorator_passes_the_open_session(tmp_path: Path) -> None:
    @dreamlake_session(name="dec", workspace="w", local_path=tmp_path)
    def train(epochs: int, session: Session) -> str:
        assert session.is_open
        for epoch in range(epochs):
            session.track("epoch").append(epoch=epoch)
        return "done"

    assert train(3) == "done"
    assert len((tmp_path / "w" / "dec" / "tracks" / "epoch" / "data.jsonl").read_text().splitlines()) == 3


def test_default_local_path_from_environment_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path / "env"))
    assert Session("r", "w").path == tmp_path / "env" / "w" / "r"
    monkeypatch.delenv("DREAMLAKE_LOCAL_PATH")
    monkeypatch.chdir(tmp_path)
    with Session("r", "w") as s:
        s.track("t").append(v=1)
    assert (tmp_path / ".dreamlake" / "w" / "r" / "tracks" / "t" / "data.jsonl").exists()


def test_remote_mode_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="remote"):
        Session("r", "w", remote="http://127.0.0.1:1")


def test_track_handle_is_cached_and_fields_update(tmp_path: Path) -> None:
    with Session("r", "w", local_path=tmp_path) as s:
        assert s.track("t") is s.track("t")
        s.track("t").append(v=1)
        s.track("t", description="later")
        assert s.track("t").stats()["description"] == "later"


def test_agent_stats_count_what_was_written(tmp_path: Path) -> None:
    with Session("r", "w", local_path=tmp_path) as s:
        for i in range(1000):
            s.track("t").append(i=i)
        s.flush()
        stats = s.agent_stats()
    assert stats["written"] == 1000
    assert stats["queued"] == 0
    assert stats["dropped"] == 0


def test_unusable_storage_fails_open_with_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    session = Session("r", "w", local_path=blocker)
    with pytest.raises(StorageError, match="cannot open"):
        session.open()
    assert not session.is_open
