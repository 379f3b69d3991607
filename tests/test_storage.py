"""Storage invariants of one track's data.jsonl (DESIGN section 3), on the TrackLog directly."""

import json
import math
import os
import threading
from pathlib import Path

import pytest

from dreamlake._disk.jsonl import TrackLog


def lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()]


def append(log: TrackLog, points: list[dict]) -> tuple[int, int]:  # type: ignore[type-arg]
    with log.lock:
        return log.append(points)


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    track = TrackLog(tmp_path)
    yield track
    track.close()


def test_indices_are_contiguous_across_appends(log: TrackLog) -> None:
    assert append(log, [{"v": 0}, {"v": 1}]) == (0, 2)
    assert append(log, [{"v": 2}]) == (2, 3)
    assert [entry["index"] for entry in lines(log.path)] == [0, 1, 2]
    assert lines(log.path)[2] == {"index": 2, "data": {"v": 2}}


def test_nonfinite_floats_are_strict_json_and_read_back(log: TrackLog) -> None:
    append(log, [{"a": math.nan, "b": None, "c": [math.inf]}])
    raw = log.path.read_text()
    assert "NaN" not in raw.replace('"NaN"', "")  # only the tagged string form
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    (entry,), _ = log.read(0, 10)
    assert math.isnan(entry["data"]["a"])
    assert entry["data"]["b"] is None
    assert entry["data"]["c"] == [math.inf]


@pytest.mark.parametrize("torn", [b'{"index": 3, "da', b'{"index":3,"data":{"v":3}}', b"garbage\n"])
def test_torn_tail_is_repaired_before_the_next_write(log: TrackLog, torn: bytes) -> None:
    append(log, [{"v": i} for i in range(3)])
    with open(log.path, "ab") as f:
        f.write(torn)  # a crash mid-write: partial line, or a full line without its newline
    other = TrackLog(log.directory)  # a new process would start like this
    try:
        assert append(other, [{"v": "new"}]) == (3, 4)
    finally:
        other.close()
    entries = lines(log.path)
    assert [e["index"] for e in entries] == [0, 1, 2, 3]
    assert entries[3]["data"] == {"v": "new"}


def test_read_repairs_a_torn_tail_and_never_returns_it(log: TrackLog) -> None:
    append(log, [{"v": i} for i in range(5)])
    with open(log.path, "ab") as f:
        f.write(b'{"index": 5, "data": {"v"')
    fresh = TrackLog(log.directory)
    try:
        entries, count = fresh.read(0, 100)
    finally:
        fresh.close()
    assert count == 5
    assert [e["index"] for e in entries] == [0, 1, 2, 3, 4]
    assert log.path.read_bytes().endswith(b"}\n")


def test_reads_seek_to_any_range(log: TrackLog) -> None:
    # Uneven line lengths defeat pure interpolation; bisection must still find every index.
    points = [{"v": i, "pad": "x" * (i % 97) * (50 if i > 15_000 else 1)} for i in range(20_000)]
    append(log, points)
    for start in [0, 1, 2, 99, 5_000, 14_999, 15_001, 19_900, 19_999]:
        entries, count = log.read(start, 50)
        assert count == 20_000
        assert [e["index"] for e in entries] == list(range(start, min(start + 50, 20_000)))
        assert entries[0]["data"] == points[start]
    assert log.read(20_000, 10) == ([], 20_000)


def test_reads_written_by_another_writer_format(tmp_path: Path) -> None:
    # dreamlake 0.2.1 wrote with json.dumps: spaces and an extra createdAt key.
    with open(tmp_path / "data.jsonl", "w") as f:
        for i in range(3000):
            f.write(
                json.dumps({"index": i, "data": {"value": i}, "createdAt": "2024-01-01T00:00:00Z"}) + "\n"
            )
    log = TrackLog(tmp_path)
    try:
        entries, count = log.read(2500, 2)
        assert count == 3000
        assert [e["data"]["value"] for e in entries] == [2500, 2501]
        assert append(log, [{"value": "next"}]) == (3000, 3001)
    finally:
        log.close()


def test_failed_write_leaves_no_partial_batch(log: TrackLog, monkeypatch: pytest.MonkeyPatch) -> None:
    append(log, [{"v": 0}])
    size = log.path.stat().st_size
    inode = log.path.stat().st_ino
    real_write = os.write

    def half_then_fail(fd: int, data: bytes) -> int:
        if os.fstat(fd).st_ino == inode:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        append(log, [{"v": i} for i in range(100)])
    monkeypatch.undo()
    assert log.path.stat().st_size == size
    assert append(log, [{"v": 1}]) == (1, 2)


def test_threads_with_separate_handles_get_unique_contiguous_indices(tmp_path: Path) -> None:
    def writer(w: int) -> None:
        log = TrackLog(tmp_path)
        try:
            for batch in range(20):
                append(log, [{"w": w, "seq": batch * 10 + k} for k in range(10)])
        finally:
            log.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = lines(tmp_path / "data.jsonl")
    assert [e["index"] for e in entries] == list(range(6 * 200))
    for w in range(6):
        assert [e["data"]["seq"] for e in entries if e["data"]["w"] == w] == list(range(200))
