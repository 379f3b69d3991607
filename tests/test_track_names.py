"""Track names with '/' and other characters, end to end through a local ``Session``: they round-trip
through append, read, stats and listing, and are stored flat under ``tracks/`` with a reversible
escape (see ``dreamlake._schema.names``), never anywhere else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dreamlake import AsyncSession, InvalidNameError, Session
from dreamlake._disk.session_dir import SessionDir
from dreamlake._schema.names import track_dirname
from dreamlake._schema.wire import TrackSpec

WS, RUN = "ws", "run"
NAMES = [
    "loss",
    "train/loss",
    "val/acc",
    "a/b",
    "a%2Fb",
    "a%b",
    "a/../b",
    "../../outside",
    ".hidden",
    "ünï/cödé 损失 😀",
    "val loss",
    "q?x=1#frag",
]
# What a track directory holds (the lock file sits beside data.jsonl).
TRACK_FILES = {"data.jsonl", "metadata.json"}


def entries_outside_the_session(root: Path) -> list[str]:
    """Every path under ``root`` that is neither the session's directory, nor under it, nor one of
    its parents."""
    session = root / WS / RUN
    allowed = {root / WS, session, root / ".spool"}  # the spools' directory; empty after close()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path not in allowed and session not in path.parents:
                out.append(str(path.relative_to(root)))
    return out


def test_names_round_trip_through_append_read_stats_and_listing(tmp_path: Path) -> None:
    with Session(RUN, WS, local_path=tmp_path) as s:
        for i, name in enumerate(NAMES):
            track = s.track(name, description=f"track {i}")
            assert track.name == name
            track.append(i=i, step=0)
            track.append_batch([{"i": i, "step": 1}, {"i": i, "step": 2}])
        for i, name in enumerate(NAMES):
            track = s.track(name)
            points = track.read(start_index=0, limit=10)["data"]
            assert [p["data"] for p in points] == [{"i": i, "step": k} for k in range(3)]
            stats = track.stats()
            assert (stats["name"], stats["trackId"]) == (name, f"local-track-{name}")
            assert stats["totalDataPoints"] == 3
            assert stats["description"] == f"track {i}"
        listed = s.tracks()
        assert listed == s.track("loss").list_all()
    by_name = {t["name"]: t for t in listed}
    assert sorted(by_name) == sorted(NAMES)
    assert all(t["totalDataPoints"] == 3 for t in listed)
    assert {t["trackId"] for t in listed} == {f"local-track-{name}" for name in NAMES}


def test_only_escaped_directories_are_written_under_tracks(tmp_path: Path) -> None:
    with Session(RUN, WS, local_path=tmp_path) as s:
        for name in NAMES:
            s.track(name).append(v=1)
    tracks = s.path / "tracks"
    assert sorted(p.name for p in tracks.iterdir()) == sorted(track_dirname(n) for n in NAMES)
    for name in NAMES:
        directory = tracks / track_dirname(name)
        assert {p.name for p in directory.iterdir()} <= TRACK_FILES
        assert all(p.is_file() for p in directory.iterdir())
        meta = json.loads((directory / "metadata.json").read_text())
        assert (meta["name"], meta["trackId"]) == (name, f"local-track-{name}")
    # Plain names keep the 0.2.x layout; nothing is hidden.
    assert (tracks / "loss" / "data.jsonl").is_file()
    assert (tracks / "train%2Floss" / "data.jsonl").is_file()
    assert (tracks / "%2Ehidden").is_dir()
    assert not any(p.name.startswith(".") for p in tracks.iterdir())
    assert entries_outside_the_session(tmp_path) == []
    assert {p.name for p in s.path.iterdir()} <= {
        "session.json",
        "parameters.json",
        ".parameters.lock",
        "logs",
        "tracks",
        "files",
    }


def test_slash_and_its_escape_are_two_tracks(tmp_path: Path) -> None:
    with Session(RUN, WS, local_path=tmp_path) as s:
        s.track("a/b").append(which="slash")
        s.track("a%2Fb").append_batch([{"which": "percent"}, {"which": "percent"}])
        assert [p["data"] for p in s.track("a/b").read()["data"]] == [{"which": "slash"}]
        assert s.track("a/b").stats()["totalDataPoints"] == 1
        assert s.track("a%2Fb").stats()["totalDataPoints"] == 2
    assert sorted(p.name for p in (s.path / "tracks").iterdir()) == ["a%252Fb", "a%2Fb"]


def test_a_new_session_reads_the_names_back_from_disk(tmp_path: Path) -> None:
    with Session(RUN, WS, local_path=tmp_path) as s:
        for i, name in enumerate(NAMES):
            s.track(name).append(i=i)
    with Session(RUN, WS, local_path=tmp_path) as s:
        assert sorted(t["name"] for t in s.tracks()) == sorted(NAMES)
        for i, name in enumerate(NAMES):
            s.track(name).append(i=i + 100)
            assert [p["data"]["i"] for p in s.track(name).read()["data"]] == [i, i + 100]


@pytest.mark.parametrize(
    "bad",
    ["", "   ", ".", "..", "nul\x00", "a\\b", "line\nbreak", "x" * 256, "/" * 86, 3],
)
def test_refused_names_queue_and_write_nothing(tmp_path: Path, bad: object) -> None:
    with Session(RUN, WS, local_path=tmp_path) as s:
        with pytest.raises(InvalidNameError, match="track name"):
            s.track(bad)  # type: ignore[arg-type]
        s.flush()
        assert s.agent_stats()["queued"] == 0
        assert s.tracks() == []
    assert list((s.path / "tracks").iterdir()) == []
    assert s.agent_stats()["written"] == 0
    assert entries_outside_the_session(tmp_path) == []


@pytest.mark.parametrize("bad", ["..", ".", "", "a\\b", "nul\x00"])
def test_the_session_directory_checks_names_itself(tmp_path: Path, bad: str) -> None:
    # Whoever calls it (the session checks first), a name never leads outside tracks/.
    directory = SessionDir(tmp_path, WS, {"name": RUN})
    directory.open()
    with pytest.raises(InvalidNameError):
        directory.write_track(TrackSpec(bad), [{"v": 1}])
    with pytest.raises(InvalidNameError):
        directory.read_track(bad, 0, 10)
    directory.close({})
    assert list((directory.directory / "tracks").iterdir()) == []
    assert entries_outside_the_session(tmp_path) == []


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_async_session_takes_the_same_names(tmp_path: Path) -> None:
    async with AsyncSession(RUN, WS, local_path=tmp_path) as s:
        await s.track("train/loss").append(v=1.0)
        with pytest.raises(InvalidNameError):
            s.track("..")
        assert (await s.track("train/loss").stats())["name"] == "train/loss"
        assert [t["name"] for t in await s.tracks()] == ["train/loss"]
    assert [p.name for p in (s.path / "tracks").iterdir()] == ["train%2Floss"]


def test_a_track_named_like_the_log_buffer_is_a_track(tmp_path: Path) -> None:
    with Session(RUN, WS, local_path=tmp_path) as s:
        s.track(".logs").append(v=1)
        s.log("a log entry")
        assert s.track(".logs").read()["data"] == [{"index": 0, "data": {"v": 1}}]
    logs = (tmp_path / WS / RUN / "logs" / "logs.jsonl").read_text().splitlines()
    assert len(logs) == 1
    assert "a log entry" in logs[0]
