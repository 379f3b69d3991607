"""A flush's tracks go to the files as runs (``_disk/runs.py``): one call opens, locks, checks,
appends and replaces ``metadata.json`` track after track, in C without the GIL. What it cannot do
cleanly (another process wrote the track, someone else replaced its metadata, a failing file) it
leaves to the slow way, and nothing is lost, doubled or misnumbered."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from dreamlake._agent import hotpath as _hotpath
from dreamlake._disk import jsonl, runs, session_dir, sweep
from dreamlake._disk.jsonl import TrackLog, encode_lines
from dreamlake._disk.session_dir import SessionDir
from dreamlake._schema.wire import TrackSpec

WRITERS = [runs.py_write_runs] + ([runs.write_runs] if runs.write_runs is not runs.py_write_runs else [])
assert len(WRITERS) == 2 or not _hotpath.COMPILED  # the C one is tested wherever it is built


def stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


def run(
    path: Path, size: int, first: int, n: int, meta: Any = None, fd: int = -1, make: bool = False
) -> runs.Run:
    blob = encode_lines(first, [{"v": first + i} for i in range(n)])
    return fd, str(path), size, blob, meta, str(path.parent) if make else None


@pytest.mark.parametrize("write_runs", WRITERS, ids=lambda f: f.__module__)
def test_runs_append_and_replace_metadata_that_is_still_the_one_seen(tmp_path: Path, write_runs: Any) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (b / "metadata.json").write_text('{"old": true}')
    meta_a = (str(a / "metadata.json"), str(a / ".m.tmp"), b'{"n": 3}', None)  # expected absent
    meta_b = (str(b / "metadata.json"), str(b / ".m.tmp"), b'{"n": 2}', stamp(b / "metadata.json"))
    done = write_runs([run(a / "data.jsonl", 0, 0, 3, meta_a), run(b / "data.jsonl", 0, 0, 2, meta_b)])
    assert [size for size, _ in done] == [
        os.path.getsize(a / "data.jsonl"),
        os.path.getsize(b / "data.jsonl"),
    ]
    assert [s for _, s in done] == [stamp(a / "metadata.json"), stamp(b / "metadata.json")]
    assert json.loads((a / "metadata.json").read_text()) == {"n": 3}
    assert json.loads((b / "metadata.json").read_text()) == {"n": 2}
    assert [json.loads(line)["index"] for line in (a / "data.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert sorted(p.name for p in a.iterdir()) == ["data.jsonl", "metadata.json"]  # no temporary left


@pytest.mark.parametrize("write_runs", WRITERS, ids=lambda f: f.__module__)
def test_a_run_makes_a_new_directory_and_stops_at_one_that_was_there(tmp_path: Path, write_runs: Any) -> None:
    (tmp_path / "old").mkdir()
    done = write_runs(
        [
            run(tmp_path / "new" / "data.jsonl", 0, 0, 2, make=True),
            run(tmp_path / "old" / "data.jsonl", 0, 0, 1, make=True),
        ]
    )
    assert len(done) == 1  # the second directory existed: it may hold a track, counted the slow way
    assert (tmp_path / "new" / "data.jsonl").read_bytes() == encode_lines(0, [{"v": 0}, {"v": 1}])
    assert list((tmp_path / "old").iterdir()) == []


@pytest.mark.parametrize("write_runs", WRITERS, ids=lambda f: f.__module__)
def test_runs_stop_at_a_file_another_writer_changed(tmp_path: Path, write_runs: Any) -> None:
    paths = [tmp_path / f"t{k}.jsonl" for k in range(3)]
    for p in paths:
        p.write_bytes(encode_lines(0, [{"v": 0}]))
    size = os.path.getsize(paths[0])
    with open(paths[1], "ab") as f:  # another process appended since the size we saw
        f.write(encode_lines(1, [{"v": 1}]))
    before = [p.read_bytes() for p in paths]
    done = write_runs([run(p, size, 1, 2) for p in paths])
    assert len(done) == 1  # the first, then a stop: the caller writes the second the slow way
    assert paths[0].read_bytes() == before[0] + encode_lines(1, [{"v": 1}, {"v": 2}])
    assert [p.read_bytes() for p in paths[1:]] == before[1:]


@pytest.mark.parametrize("write_runs", WRITERS, ids=lambda f: f.__module__)
def test_runs_leave_metadata_replaced_by_someone_else_to_the_caller(tmp_path: Path, write_runs: Any) -> None:
    meta = tmp_path / "metadata.json"
    meta.write_text('{"theirs": 1}')
    seen = stamp(meta)
    meta.write_text('{"theirs": 22}')  # replaced since we read it
    os.utime(meta, ns=(seen[1] + 10**9, seen[1] + 10**9))
    done = write_runs(
        [run(tmp_path / "data.jsonl", 0, 0, 1, (str(meta), str(tmp_path / ".m.tmp"), b"{}", seen))]
    )
    assert done == [(os.path.getsize(tmp_path / "data.jsonl"), None)]  # the data went; not the metadata
    assert json.loads(meta.read_text()) == {"theirs": 22}


@pytest.mark.parametrize("write_runs", WRITERS, ids=lambda f: f.__module__)
def test_runs_stop_at_a_file_that_cannot_be_opened_and_keep_a_given_descriptor_open(
    tmp_path: Path, write_runs: Any
) -> None:
    ok = tmp_path / "ok.jsonl"
    fd = os.open(ok, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        done = write_runs(
            [run(ok, 0, 0, 1, fd=fd), run(tmp_path / "missing" / "data.jsonl", 0, 0, 1), run(ok, 0, 0, 1)]
        )
        assert len(done) == 1
        os.fstat(fd)  # still open: the caller's
        assert ok.read_bytes() == encode_lines(0, [{"v": 0}])
    finally:
        os.close(fd)


def test_a_group_write_defers_to_the_slow_way_when_another_writer_appended(tmp_path: Path) -> None:
    d = SessionDir(tmp_path, "ws", {"name": "run"})
    d.open()
    names = [f"t{k}" for k in range(5)]
    assert d.write_tracks([(TrackSpec(n), [{"v": 0}]) for n in names]) == (5, None)
    other = TrackLog(d.directory / "tracks" / "t2")  # another process on one of the tracks
    with other.lock:
        other.append([{"v": "theirs"}])
    d.settle_as_written = True
    assert d.write_tracks([(TrackSpec(n, description="mine"), [{"v": 1}, {"v": 2}]) for n in names]) == (
        5,
        None,
    )
    for n in names:
        lines = [json.loads(x) for x in (d.directory / "tracks" / n / "data.jsonl").read_text().splitlines()]
        assert [x["index"] for x in lines] == list(range(len(lines)))  # gap-free, in either case
        meta = json.loads((d.directory / "tracks" / n / "metadata.json").read_text())
        assert meta["totalDataPoints"] == meta["nextIndex"] == len(lines) == (4 if n == "t2" else 3)
        assert meta["description"] == "mine"
    d.close({})


def test_a_group_write_keeps_what_another_writer_put_in_the_metadata(tmp_path: Path) -> None:
    d = SessionDir(tmp_path, "ws", {"name": "run"})
    d.open()
    d.settle_as_written = True
    assert d.write_tracks([(TrackSpec("a"), [{"v": 0}])]) == (1, None)
    path = d.directory / "tracks" / "a" / "metadata.json"
    theirs = dict(json.loads(path.read_text()), tags=["theirs"])
    tmp = path.with_name(".theirs.tmp")
    tmp.write_text(json.dumps(theirs))
    os.replace(tmp, path)  # another process, as an atomic replace does it: a new inode
    assert d.write_tracks([(TrackSpec("a"), [{"v": 1}])]) == (1, None)
    meta = json.loads(path.read_text())
    assert (meta["tags"], meta["totalDataPoints"]) == (["theirs"], 2)
    d.close({})


def test_a_group_write_into_existing_track_directories_counts_what_they_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = SessionDir(tmp_path, "ws", {"name": "run"})
    first.open()
    assert first.write_tracks([(TrackSpec(n), [{"v": 0}, {"v": 1}]) for n in ("a", "b")]) == (2, None)
    first.close({})
    (first.directory / "tracks" / "b" / ".metadata.json.1.2.tmp").write_text("{")  # a crash's leftover
    monkeypatch.setattr(sweep, "_clock", lambda: time.time() + 2 * sweep.LEFTOVER_AGE)  # it is old
    again = SessionDir(tmp_path, "ws", {"name": "run"})  # a later run of the session
    again.open()
    again.settle_as_written = True
    assert again.write_tracks([(TrackSpec(n), [{"v": 2}]) for n in ("a", "b", "c")]) == (3, None)
    for name, count in (("a", 3), ("b", 3), ("c", 1)):
        track = again.directory / "tracks" / name
        lines = [json.loads(x) for x in (track / "data.jsonl").read_text().splitlines()]
        assert [x["index"] for x in lines] == list(range(count))
        assert json.loads((track / "metadata.json").read_text())["totalDataPoints"] == count
    assert not (again.directory / "tracks" / "b" / ".metadata.json.1.2.tmp").exists()  # swept
    again.close({})


def test_a_failing_track_in_a_group_is_reported_with_how_many_went_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = SessionDir(tmp_path, "ws", {"name": "run"})
    d.open()
    real = session_dir.SessionDir.write_track

    def failing(self: SessionDir, spec: TrackSpec, points: Any, intent: Any = None) -> None:
        if spec.name == "bad":
            raise OSError(28, "No space left on device")
        real(self, spec, points, intent)

    monkeypatch.setattr(session_dir.SessionDir, "write_track", failing)
    (d.directory / "tracks" / "bad").mkdir()  # not made by this session: its size is checked the slow way
    writes = [(TrackSpec(n), [{"v": 0}]) for n in ("a", "b", "bad", "c")]
    done, error = d.write_tracks(writes)
    assert (done, type(error)) == (2, OSError)
    assert not (d.directory / "tracks" / "c" / "data.jsonl").exists()  # nothing after the failure
    assert d.write_tracks(writes[3:]) == (1, None)
    d.close({})


@pytest.mark.parametrize("last", [False, True], ids=["in-line", "in-a-thread"])
def test_a_wide_group_goes_in_chunks_and_a_stop_in_one_loses_nothing(tmp_path: Path, last: bool) -> None:
    # Chunks of RUN_CHUNK runs; in close()'s flush one is written in a thread while the next is
    # prepared: a stop in the one in flight (another writer's track) must leave the prepared one
    # unwritten, not lost.
    d = SessionDir(tmp_path, "ws", {"name": "run"})
    d.open()
    d.settle_as_written = last
    names = [f"t{k}" for k in range(3 * session_dir.RUN_CHUNK + 5)]
    assert d.write_tracks([(TrackSpec(n), [{"v": 0}]) for n in names]) == (len(names), None)
    moved = names[session_dir.RUN_CHUNK + 7]  # in the second chunk
    with TrackLog(d.directory / "tracks" / moved).lock as lock:  # another process appends to it
        lock.append([{"v": "theirs"}])
    assert d.write_tracks([(TrackSpec(n), [{"v": 1}, {"v": 2}]) for n in names]) == (len(names), None)
    d.close({})
    for n in names:
        lines = [json.loads(x) for x in (d.directory / "tracks" / n / "data.jsonl").read_text().splitlines()]
        assert [x["index"] for x in lines] == list(range(4 if n == moved else 3)), n
        assert [x["data"]["v"] for x in lines][-2:] == [1, 2]
        meta = json.loads((d.directory / "tracks" / n / "metadata.json").read_text())
        assert meta["totalDataPoints"] == len(lines)


# The points of a wide flush are read, and freed, in the order they were appended (round robin over
# the tracks), both by the C functions and their Python twins.
INTERLEAVE = [(jsonl.py_interleave, jsonl.py_frame_interleaved, _hotpath.py_release_interleaved)]
if jsonl.interleave is not jsonl.py_interleave:
    INTERLEAVE.append((jsonl.interleave, jsonl.frame_interleaved, _hotpath.release_interleaved))
assert len(INTERLEAVE) == 2 or not _hotpath.COMPILED


@pytest.mark.parametrize("twins", INTERLEAVE, ids=["python", "c"][: len(INTERLEAVE)])
def test_a_wide_flush_encodes_round_robin_and_frames_each_track_back(twins: Any) -> None:
    interleave, frame_interleaved, _ = twins
    assert interleave([[1, 2, 3], [], [4], [5, 6]]) == [1, 4, 5, 2, 6, 3]
    rng = random.Random(7)
    for _ in range(50):
        lists = [
            [{"v": rng.random(), "s": "a\nb", "n": float("nan")} for _ in range(rng.randint(0, 6))]
            for _ in range(rng.randint(0, 8))
        ]
        firsts = [rng.randint(0, 10**6) for _ in lists]
        blobs = frame_interleaved(jsonl.encode_points(interleave(lists)), [len(p) for p in lists], firsts)
        assert blobs == [encode_lines(first, points) for first, points in zip(firsts, lists, strict=True)]
    blob = jsonl.encode_points([{"v": 1}, {"v": 2}])
    with pytest.raises(ValueError, match="one line per item"):
        frame_interleaved(blob, [1, 2], [0, 0])  # a line short
    with pytest.raises(ValueError, match="one line per item"):
        frame_interleaved(blob, [1], [0])  # a line over


@pytest.mark.parametrize("twins", INTERLEAVE, ids=["python", "c"][: len(INTERLEAVE)])
def test_written_points_are_freed_round_robin(twins: Any) -> None:
    freed: list[str] = []

    class Point:
        def __init__(self, name: str) -> None:
            self.name = name

        def __del__(self) -> None:
            freed.append(self.name)

    lists = [[Point(f"{t}{i}") for i in range(n)] for t, n in (("a", 3), ("b", 1), ("c", 2))]
    twins[2](lists)
    assert freed == ["a0", "b0", "c0", "a1", "c1", "a2"]
    assert lists == [[None] * 3, [None], [None] * 2]


def test_a_point_that_cannot_be_encoded_stops_the_group_at_its_track(tmp_path: Path) -> None:
    d = SessionDir(tmp_path, "ws", {"name": "run"})
    d.open()
    writes = [(TrackSpec(n), [{"v": 1}, {"v": 2}]) for n in ("a", "b", "c")]
    writes[1] = (TrackSpec("b"), [{"v": 1}, {"v": object()}])
    done, error = d.write_tracks(writes)
    assert (done, type(error)) == (1, TypeError)
    assert d.read_track("a", 0, 10)["total"] == 2
    assert not (d.directory / "tracks" / "c" / "data.jsonl").exists()
    assert d.write_tracks(writes[2:]) == (1, None)
    d.close({})


def test_settle_replaces_metadata_as_runs_and_leaves_the_rest_to_the_slow_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = SessionDir(tmp_path, "ws", {"name": "run"})
    d.open()
    assert d.write_tracks([(TrackSpec(n), [{"v": 0}, {"v": 1}]) for n in "abc"]) == (3, None)
    tracks = d.directory / "tracks"
    assert not (tracks / "a" / "metadata.json").exists()  # lagging until it matters
    d.settle(["b"])
    theirs = dict(json.loads((tracks / "b" / "metadata.json").read_text()), tags=["theirs"])
    (tracks / "b" / ".theirs.tmp").write_text(json.dumps(theirs))
    os.replace(tracks / "b" / ".theirs.tmp", tracks / "b" / "metadata.json")  # another writer's
    assert d.write_tracks([(TrackSpec("b"), [{"v": 2}])]) == (1, None)
    with TrackLog(tracks / "c").lock as lock:  # another process appends to c
        lock.append([{"v": "theirs"}])
    calls: list[int] = []
    real = session_dir.write_runs

    def spy(batch: list[runs.Run]) -> list[runs.Written]:
        calls.append(len(batch))
        return real(batch)

    monkeypatch.setattr(session_dir, "write_runs", spy)
    d.settle()
    # one call for the three: a's metadata replaced there; b's kept by the stamp check and merged
    # the slow way; c's run stopped at the size another process changed, and c was recounted
    assert calls == [3]
    counts = {n: json.loads((tracks / n / "metadata.json").read_text())["totalDataPoints"] for n in "abc"}
    assert counts == {"a": 2, "b": 3, "c": 3}
    assert json.loads((tracks / "b" / "metadata.json").read_text())["tags"] == ["theirs"]
    d.close({})
