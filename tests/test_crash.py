"""A process killed with SIGKILL mid-logging leaves a track that the next run can read and extend.

Whatever was flushed before the kill is on disk; a torn last line (a write cut short) is cut off
before the next read or write, so indices stay contiguous and new points get the next ones.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from dreamlake import Session

from ._subproc import (
    SESSION,
    WORKSPACE,
    Child,
    block,
    check_steps,
    make_script,
    read_metadata,
    read_points,
    track_dir,
)

pytestmark = pytest.mark.timeout(120)

HEAVY_LOGGING = """
with Session(NAME, WS, local_path=ROOT, batch_size=BATCH) as s:
    t = s.track("loss")
    i = 0
    while True:
        t.append(step=i, value=i * 0.25, note="x" * (i % 13))
        i += 1
        if i % 10_000 == 0:
            s.flush()
            print(i, flush=True)  # everything up to i is on disk
"""


def read_all(session: Session, track: str) -> list[dict[str, object]]:
    """Every point of ``track`` through the API, in pages."""
    entries: list[dict[str, object]] = []
    while True:
        page = session.track(track).read(start_index=len(entries), limit=25_000)
        entries.extend(page["data"])
        if not page["hasMore"]:
            return entries


@pytest.mark.parametrize(
    ("batch_size", "kill_after", "delay"),
    [(2000, 50_000, 0.0), (2000, 50_000, 0.007), (20_000, 60_000, 0.03)],
    ids=["right-after-a-flush", "during-background-writes", "default-batch-later"],
)
def test_sigkill_during_heavy_logging(tmp_path: Path, batch_size: int, kill_after: int, delay: float) -> None:
    script = make_script(
        block(HEAVY_LOGGING), ROOT=str(tmp_path), NAME=SESSION, WS=WORKSPACE, BATCH=batch_size
    )
    with Child(script) as child:
        child.expect(lambda line: int(line) >= kill_after, timeout=60)
        if delay:
            time.sleep(delay)  # not a wait for an effect: it only moves the moment of the kill
        child.signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    flushed = max(int(line) for line in child.lines)  # the child may have printed more before dying

    # A new run reads it through the API: the torn tail (if any) is repaired on this first read.
    with Session(SESSION, WORKSPACE, local_path=tmp_path) as s:
        entries = read_all(s, "loss")
        count = len(entries)
        assert count >= flushed
        assert [e["index"] for e in entries] == list(range(count))
        assert all(e["data"]["step"] == e["index"] for e in entries)
        assert s.track("loss").stats()["totalDataPoints"] == count
        new = s.track("loss")
        for k in range(500):
            new.append(step=count + k, resumed=True)
        tail = new.read(start_index=count - 1, limit=10)["data"]
        assert [e["index"] for e in tail] == list(range(count - 1, count + 9))

    points = read_points(tmp_path, "loss")  # plain reading: every line parses, indices contiguous
    assert len(points) == count + 500
    check_steps(points)
    assert all("resumed" not in p for p in points[:count])
    assert all(p["resumed"] for p in points[count:])
    assert read_metadata(tmp_path, "loss")["totalDataPoints"] == count + 500


@pytest.mark.parametrize(
    "torn",
    [b'{"index": 6, "da', b'{"index": 6, "data": {"step": 6}}', b"\x00\x00\x00\x00", b"garbage\n"],
    ids=["partial-line", "no-newline", "zero-bytes", "unparsable-line"],
)
@pytest.mark.parametrize("first_use", ["read", "append", "stats"])
def test_torn_tail_is_repaired(tmp_path: Path, torn: bytes, first_use: str) -> None:
    with Session(SESSION, WORKSPACE, local_path=tmp_path) as s:
        t = s.track("loss")
        for i in range(6):
            t.append(step=i)
    data = track_dir(tmp_path, "loss") / "data.jsonl"
    intact = data.read_bytes()
    with data.open("ab") as f:
        f.write(torn)  # what a crash in the middle of a write leaves behind

    with Session(SESSION, WORKSPACE, local_path=tmp_path) as s:
        t = s.track("loss")
        if first_use == "read":
            page = t.read(start_index=0, limit=100)
            assert [e["data"] for e in page["data"]] == [{"step": i} for i in range(6)]
            assert page["hasMore"] is False
            assert data.read_bytes() == intact  # repaired by the read itself
        elif first_use == "stats":
            assert t.stats()["totalDataPoints"] == 6
            assert data.read_bytes() == intact
        for i in range(6, 9):
            t.append(step=i)
        assert t.read(start_index=5, limit=10)["data"] == [
            {"index": i, "data": {"step": i}} for i in range(5, 9)
        ]

    points = read_points(tmp_path, "loss")
    assert points == [{"step": i} for i in range(9)]
    assert read_metadata(tmp_path, "loss")["totalDataPoints"] == 9
    assert json.loads(data.read_bytes().splitlines()[6]) == {"index": 6, "data": {"step": 6}}
