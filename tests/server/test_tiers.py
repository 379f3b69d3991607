"""The contracts of the hot and cold tiers, one suite run against every implementation.

An implementation joins by appending to ``HOT_TIERS`` or ``COLD_TIERS`` a function that takes the
fixture request (to reach the services it needs) and returns a factory: that gets a directory and
returns an unstarted tier; called again with the same directory it must reach the same store (the
restart tests rely on that). MongoDB and S3 are the real services of ``conftest.py``; each test
gets its own database and key prefix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import math
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from dreamlake.server.cold.base import ColdTier
from dreamlake.server.cold.directory import DirectoryColdTier
from dreamlake.server.hot.base import HotTier, Ingest, IngestResult, Token, TrackWrite
from dreamlake.server.hot.sqlite import SQLiteHotTier

from .conftest import with_database

HotFactory = Callable[[Path], HotTier]
ColdFactory = Callable[[Path], ColdTier]


def _name(directory: Path) -> str:
    """A database name or key prefix that is the same for one directory and unique across tests."""
    return "dl" + hashlib.sha1(str(directory).encode()).hexdigest()[:20]


def _sqlite(request: pytest.FixtureRequest) -> HotFactory:
    return lambda d: SQLiteHotTier(d / "hot.sqlite3")


def _mongo(request: pytest.FixtureRequest) -> HotFactory:
    from dreamlake.server.hot.mongo import MongoHotTier

    url = request.getfixturevalue("mongo_url")
    # chunk_size=1: a track is marked for the archiver as soon as it holds a point, so
    # tracks_to_archive answers exactly for every chunk size the tests ask about.
    return lambda d: MongoHotTier(with_database(url, _name(d)), chunk_size=1)


def _directory(request: pytest.FixtureRequest) -> ColdFactory:
    return lambda d: DirectoryColdTier(d / "cold")


def _s3(request: pytest.FixtureRequest) -> ColdFactory:
    from dreamlake.server.cold.s3 import S3ColdTier

    from ._services import BUCKET

    request.getfixturevalue("s3")  # started, and its AWS_* variables set
    return lambda d: S3ColdTier(f"s3://{BUCKET}/{_name(d)}")


HOT_TIERS = [pytest.param(_sqlite, id="sqlite"), pytest.param(_mongo, id="mongodb")]
COLD_TIERS = [pytest.param(_directory, id="directory"), pytest.param(_s3, id="s3")]

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

NOW = "2024-05-01T12:00:00Z"


@pytest.fixture(params=HOT_TIERS)
def hot_factory(request: pytest.FixtureRequest) -> HotFactory:
    factory: HotFactory = request.param(request)
    return factory


@pytest.fixture(params=COLD_TIERS)
def cold_factory(request: pytest.FixtureRequest) -> ColdFactory:
    factory: ColdFactory = request.param(request)
    return factory


@pytest_asyncio.fixture
async def hot(hot_factory: HotFactory, tmp_path: Path) -> AsyncIterator[HotTier]:
    tier = hot_factory(tmp_path)
    await tier.start()
    yield tier
    await tier.stop()


@pytest_asyncio.fixture
async def cold(cold_factory: ColdFactory, tmp_path: Path) -> AsyncIterator[ColdTier]:
    tier = cold_factory(tmp_path)
    await tier.start()
    yield tier
    await tier.stop()


async def new_session(hot: HotTier, name: str = "run", workspace: str = "ws") -> str:
    record = await hot.upsert_session(workspace, name, {}, create=True)
    assert record is not None
    return record.id


def points(name: str, *counts: int, **fields: Any) -> TrackWrite:
    """A TrackWrite whose blob ``i`` is ``count`` bytes of value ``i``, so batches are recognisable."""
    return TrackWrite(name, [(count, bytes([i]) * count) for i, count in enumerate(counts)], **fields)


def log(message: str, **extra: Any) -> dict[str, Any]:
    return {"timestamp": NOW, "level": "info", "message": message, **extra}


# -- hot tier ------------------------------------------------------------------------------------


async def test_start_twice_and_a_second_instance_keep_the_data(hot: HotTier, hot_factory: HotFactory,
                                                               tmp_path: Path) -> None:
    sid = await new_session(hot)
    await hot.ingest(sid, None, Ingest(tracks=[points("loss", 2)]))
    await hot.start()  # again, on the same instance
    other = hot_factory(tmp_path)
    await other.start()  # and on a second one: creating what exists already is harmless
    try:
        track = await other.get_track(sid, "loss")
        assert track is not None
        assert track.total == 2
    finally:
        await other.stop()


async def test_session_upsert(hot: HotTier) -> None:
    created = await hot.upsert_session("ws", "run", {"description": "d", "tags": ["a"], "folder": None}, True)
    assert created is not None
    assert (created.workspace, created.name, created.fields["description"]) == ("ws", "run", "d")
    assert created.fields["tags"] == ["a"]
    assert created.fields.get("folder") is None
    assert await hot.upsert_session("ws", "run", {}, create=False) == created
    assert await hot.get_session(created.id) == created

    assert await hot.upsert_session("ws", "missing", {"description": "x"}, create=False) is None
    assert await hot.upsert_session("ws", "missing", {}, create=False) is None  # nothing was created
    elsewhere = await hot.upsert_session("ws2", "run", {}, create=True)
    assert elsewhere is not None
    assert elsewhere.id != created.id

    changes = {"description": None, "tags": ["b"], "metadata": {"lr": math.nan}, "writeProtected": True}
    updated = await hot.upsert_session("ws", "run", changes, create=True)
    assert updated is not None
    assert (updated.id, updated.created_at) == (created.id, created.created_at)
    assert updated.fields["description"] == "d"  # None keeps what is stored
    assert updated.fields["tags"] == ["b"]
    assert updated.fields["writeProtected"] is True
    assert math.isnan(updated.fields["metadata"]["lr"])

    looked_up = await hot.upsert_session("ws", "run", {"description": "changed"}, create=False)
    assert looked_up is not None
    assert looked_up.fields["description"] == "d"  # create=False changes nothing
    stored = await hot.get_session(created.id)
    assert stored is not None
    assert stored.fields["description"] == "d"
    assert math.isnan(stored.fields["metadata"]["lr"])
    assert await hot.get_session("no-such-id") is None


async def test_tokens(hot: HotTier) -> None:
    write = Token("hash-1", ("ws", "ws2"), False, NOW)
    read = Token("hash-2", ("ws",), True, NOW)
    await hot.add_token(write)
    await hot.add_token(read)
    assert await hot.find_token("hash-1") == write
    assert await hot.find_token("hash-2") == read
    assert await hot.find_token("hash-3") is None


async def test_ingest_numbers_points_per_track_across_ingests(hot: HotTier) -> None:
    sid = await new_session(hot)
    first = await hot.ingest(sid, None, Ingest(tracks=[points("loss", 3, 2), points("acc", 4)]))
    loss = await hot.get_track(sid, "loss")
    acc = await hot.get_track(sid, "acc")
    assert loss is not None
    assert acc is not None
    assert first.tracks == [(loss.id, 0, 5), (acc.id, 0, 4)]
    assert (first.repeat, first.parameters_version) == (False, None)

    second = await hot.ingest(sid, None, Ingest([points("loss", 1), points("acc", 2), points("loss", 4)]))
    assert second.tracks == [(loss.id, 5, 6), (acc.id, 4, 6), (loss.id, 6, 10)]

    loss = await hot.get_track(sid, "loss")
    assert loss is not None
    assert (loss.total, loss.chunked) == (10, 0)
    assert loss.first_data_at is not None
    assert loss.last_data_at is not None
    batches = await hot.read_batches(loss.id, 0, 10)
    assert [(b.start, b.count, b.blob) for b in batches] == [
        (0, 3, b"\0" * 3), (3, 2, b"\1" * 2), (5, 1, b"\0"), (6, 4, b"\0" * 4),
    ]
    assert all(isinstance(b.created_at, str) for b in batches)

    other = await new_session(hot, "other")  # numbering is per track, so per session too
    third = await hot.ingest(other, None, Ingest(tracks=[points("loss", 2)]))
    assert third.tracks[0][1:] == (0, 2)
    assert third.tracks[0][0] != loss.id


async def test_track_fields_none_keeps_and_no_blobs_only_creates(hot: HotTier) -> None:
    sid = await new_session(hot)
    described = TrackWrite("b", [], description="B", tags=["t"], metadata={"m": math.inf})
    result = await hot.ingest(sid, None, Ingest([described, TrackWrite("a", [])]))
    b = await hot.get_track(sid, "b")
    assert b is not None
    assert result.tracks == [(b.id, 0, 0), (result.tracks[1][0], 0, 0)]
    assert (b.total, b.description, b.tags, b.metadata) == (0, "B", ["t"], {"m": math.inf})
    assert b.first_data_at is None
    assert b.last_data_at is None

    await hot.ingest(sid, None, Ingest(tracks=[points("b", 2)]))
    b = await hot.get_track(sid, "b")
    assert b is not None
    assert (b.total, b.description, b.tags, b.metadata) == (2, "B", ["t"], {"m": math.inf})

    await hot.ingest(sid, None, Ingest(tracks=[TrackWrite("b", [], description="B2")]))
    b = await hot.get_track(sid, "b")
    assert b is not None
    assert (b.total, b.description, b.tags) == (2, "B2", ["t"])
    assert [t.name for t in await hot.list_tracks(sid)] == ["a", "b"]
    assert await hot.get_track(sid, "c") is None


async def test_log_numbering(hot: HotTier) -> None:
    sid = await new_session(hot)
    other = await new_session(hot, "other")
    first = await hot.ingest(sid, None, Ingest(logs=[log("a"), log("b", metadata={"x": math.nan}), log("c")]))
    assert (first.log_start, first.log_end) == (0, 3)
    assert (await hot.ingest(other, None, Ingest(logs=[log("z")]))).log_start == 0
    second = await hot.ingest(sid, None, Ingest(logs=[log("d"), log("e")]))
    assert (second.log_start, second.log_end) == (3, 5)
    empty = await hot.ingest(sid, None, Ingest(tracks=[points("t", 1)]))
    assert (empty.log_start, empty.log_end) == (5, 5)

    entries = await hot.read_logs(sid, 1, 3)
    assert [e["sequenceNumber"] for e in entries] == [1, 2, 3]
    assert [e["message"] for e in entries] == ["b", "c", "d"]
    assert (entries[0]["timestamp"], entries[0]["level"]) == (NOW, "info")
    assert math.isnan(entries[0]["metadata"]["x"])
    assert "metadata" not in entries[1]
    assert [e["message"] for e in await hot.read_logs(sid, 0, 100)] == ["a", "b", "c", "d", "e"]
    assert await hot.read_logs(sid, 5, 10) == []


async def test_parameters_merge_version_and_nonfinite(hot: HotTier) -> None:
    sid = await new_session(hot)
    assert await hot.get_parameters(sid) is None
    first = await hot.ingest(sid, None, Ingest(parameters=[{"a": 1, "b.c": 2}, {"a": 3}]))
    assert first.parameters_version == 2
    stored = await hot.get_parameters(sid)
    assert stored is not None
    assert (stored["version"], stored["data"]) == (2, {"a": 3, "b.c": 2})
    assert isinstance(stored["createdAt"], str)
    assert isinstance(stored["updatedAt"], str)

    delta = {"x": math.nan, "y": math.inf, "z": -math.inf, "b": 5}
    second = await hot.ingest(sid, None, Ingest(parameters=[delta]))
    assert second.parameters_version == 3
    stored = await hot.get_parameters(sid)
    assert stored is not None
    data = stored["data"]
    assert set(data) == {"a", "b", "x", "y", "z"}  # "b.c" gave way to the later value "b"
    assert math.isnan(data["x"])
    assert (data["y"], data["z"], data["b"]) == (math.inf, -math.inf, 5)

    assert (await hot.ingest(sid, None, Ingest(logs=[log("m")]))).parameters_version is None
    stored = await hot.get_parameters(sid)
    assert stored is not None
    assert stored["version"] == 3


async def test_replay_returns_the_first_result_and_stores_nothing(hot: HotTier) -> None:
    sid = await new_session(hot)
    first = await hot.ingest(sid, "key-1", Ingest([points("loss", 3)], [log("a")], [{"p": 1}]))
    assert first.repeat is False
    again = await hot.ingest(sid, "key-1", Ingest([points("loss", 5), points("new", 1)], [log("b"), log("c")],
                                                  [{"p": 2}]))
    assert again == dataclasses.replace(first, repeat=True)

    loss = await hot.get_track(sid, "loss")
    assert loss is not None
    assert loss.total == 3
    assert len(await hot.read_batches(loss.id, 0, 100)) == 1
    assert await hot.get_track(sid, "new") is None
    assert [e["message"] for e in await hot.read_logs(sid, 0, 10)] == ["a"]
    params = await hot.get_parameters(sid)
    assert params is not None
    assert (params["version"], params["data"]) == (1, {"p": 1})

    other = await new_session(hot, "other")  # keys are per session
    assert (await hot.ingest(other, "key-1", Ingest([points("loss", 1)]))).repeat is False
    unkeyed = [await hot.ingest(sid, None, Ingest([points("loss", 1)])) for _ in range(2)]
    assert [r.tracks[0][1:] for r in unkeyed] == [(3, 4), (4, 5)]  # no key: each one is stored


@pytest.mark.parametrize("bad", [(1, "not bytes"), (0, b""), (-1, b"x")], ids=["str", "zero", "negative"])
async def test_a_failing_ingest_stores_nothing(hot: HotTier, bad: tuple[int, Any]) -> None:
    sid = await new_session(hot)
    before = await hot.ingest(sid, None, Ingest([points("kept", 2)], [log("before")]))
    failing = Ingest(
        tracks=[points("kept", 3), points("fresh", 1), TrackWrite("bad", [(1, b"x"), bad])],
        logs=[log("lost")],
        parameters=[{"lost": 1}],
    )
    with pytest.raises((TypeError, ValueError)):
        await hot.ingest(sid, "key", failing)

    kept = await hot.get_track(sid, "kept")
    assert kept is not None
    assert kept.total == 2
    assert len(await hot.read_batches(kept.id, 0, 100)) == 1
    assert await hot.get_track(sid, "fresh") is None
    assert await hot.get_track(sid, "bad") is None
    assert [e["message"] for e in await hot.read_logs(sid, 0, 10)] == ["before"]
    assert await hot.get_parameters(sid) is None

    retry = await hot.ingest(sid, "key", Ingest([points("kept", 3)], [log("after")]))
    assert retry.repeat is False  # the key was not stored either
    assert retry.tracks == [(before.tracks[0][0], 2, 5)]
    assert (retry.log_start, retry.log_end) == (1, 2)


async def test_ingest_into_an_unknown_session_fails(hot: HotTier) -> None:
    with pytest.raises(KeyError):
        await hot.ingest("no-such-session", None, Ingest([points("loss", 1)]))


async def test_concurrent_ingests_number_gap_free(hot: HotTier) -> None:
    sid = await new_session(hot)
    n = 20
    ingests = [Ingest([TrackWrite("loss", [(i + 1, bytes([i]) * (i + 1))])], [log(str(i))]) for i in range(n)]
    results: list[IngestResult] = await asyncio.gather(
        *(hot.ingest(sid, f"k{i}", ingest) for i, ingest in enumerate(ingests))
    )
    assert len({r.tracks[0][0] for r in results}) == 1  # one track, created once
    spans = sorted((r.tracks[0][1], r.tracks[0][2]) for r in results)
    assert spans[0][0] == 0
    assert all(end == next_start for (_, end), (next_start, _) in itertools.pairwise(spans))
    assert all(r.tracks[0][2] - r.tracks[0][1] == i + 1 for i, r in enumerate(results))
    total = n * (n + 1) // 2
    track = await hot.get_track(sid, "loss")
    assert track is not None
    assert track.total == spans[-1][1] == total

    by_start = {r.tracks[0][1]: i for i, r in enumerate(results)}
    batches = await hot.read_batches(track.id, 0, total)
    assert [b.start for b in batches] == [start for start, _ in spans]
    assert all(b.blob == bytes([by_start[b.start]]) * b.count for b in batches)

    assert sorted(r.log_start for r in results) == list(range(n))
    assert all(r.log_end == r.log_start + 1 for r in results)
    entries = await hot.read_logs(sid, 0, 100)
    assert [e["sequenceNumber"] for e in entries] == list(range(n))
    assert all(e["message"] == str(i) for i, r in enumerate(results) for e in entries[r.log_start:r.log_end])


async def test_two_instances_on_one_store_number_gap_free(hot: HotTier, hot_factory: HotFactory,
                                                         tmp_path: Path) -> None:
    """Two servers sharing the hot tier: the engine, not a lock in one process, orders the writes."""
    sid = await new_session(hot)
    other = hot_factory(tmp_path)
    await other.start()
    try:
        tiers = [hot, other] * 10
        results = await asyncio.gather(
            *(tier.ingest(sid, None, Ingest([points("loss", 2)], [log("m")])) for tier in tiers)
        )
    finally:
        await other.stop()
    assert sorted(r.tracks[0][1] for r in results) == list(range(0, 40, 2))
    assert sorted(r.log_start for r in results) == list(range(20))
    track = await hot.get_track(sid, "loss")
    assert track is not None
    assert track.total == 40


async def test_read_batches_ranges(hot: HotTier) -> None:
    sid = await new_session(hot)
    result = await hot.ingest(sid, None, Ingest([points("t", 3, 2, 5)]))  # batches at 0, 3 and 5
    tid = result.tracks[0][0]

    async def starts(start: int, end: int) -> list[int]:
        return [b.start for b in await hot.read_batches(tid, start, end)]

    assert await starts(0, 10) == [0, 3, 5]
    assert await starts(0, 1) == [0]
    assert await starts(2, 4) == [0, 3]
    assert await starts(3, 5) == [3]
    assert await starts(4, 6) == [3, 5]
    assert await starts(9, 100) == [5]
    assert await starts(10, 20) == []
    assert await starts(5, 5) == []
    assert await starts(6, 2) == []
    assert await hot.read_batches("no-such-track", 0, 10) == []


async def test_chunk_archived(hot: HotTier) -> None:
    sid = await new_session(hot)
    tid = (await hot.ingest(sid, None, Ingest([points("t", 3, 3, 3)]))).tracks[0][0]  # 0-2, 3-5, 6-8

    async def state() -> tuple[int, list[int]]:
        track = await hot.get_track(sid, "t")
        assert track is not None
        return track.chunked, [b.start for b in await hot.read_batches(tid, 0, 100)]

    assert await hot.chunk_archived(tid, 1, 4) is False  # not the next chunk
    assert await state() == (0, [0, 3, 6])
    assert await hot.chunk_archived(tid, 0, 4) is True
    assert await state() == (4, [3, 6])  # the batch 3-5 straddles 4: kept
    assert await hot.chunk_archived(tid, 0, 4) is False  # recorded already
    assert await state() == (4, [3, 6])
    assert await hot.chunk_archived(tid, 1, 4) is True
    assert await state() == (8, [6])  # 3-5 is now wholly archived; 6-8 straddles 8
    assert await hot.chunk_archived(tid, 2, 4) is False  # only 9 points: chunk 2 is not full
    assert await state() == (8, [6])
    assert await hot.chunk_archived("no-such-track", 0, 4) is False

    await hot.ingest(sid, None, Ingest([points("t", 3)]))  # 9-11
    assert await hot.chunk_archived(tid, 2, 4) is True
    assert await state() == (12, [])


async def test_tracks_to_archive(hot: HotTier) -> None:
    sid = await new_session(hot)
    await hot.ingest(sid, None, Ingest([points("a", 5), points("b", 6, 4), points("c", 12)]))
    assert sorted(t.name for t in await hot.tracks_to_archive(10, 10)) == ["b", "c"]
    assert len(await hot.tracks_to_archive(10, 1)) == 1
    c = await hot.get_track(sid, "c")
    assert c is not None
    assert await hot.chunk_archived(c.id, 0, 10) is True
    assert [t.name for t in await hot.tracks_to_archive(10, 10)] == ["b"]
    assert [(t.total, t.chunked) for t in await hot.tracks_to_archive(5, 10) if t.name == "a"] == [(5, 0)]


def file_meta(file_id: str, filename: str, path: str = "/models", **extra: Any) -> dict[str, Any]:
    return {"id": file_id, "path": path, "filename": filename, "deletedAt": None, "sizeBytes": 1, **extra}


async def test_files(hot: HotTier) -> None:
    sid = await new_session(hot)
    other = await new_session(hot, "other")
    first = file_meta("f1", "a.pt", metadata={"score": math.nan})
    assert await hot.put_file(sid, first) is None
    assert await hot.put_file(sid, file_meta("f2", "b.pt")) is None
    assert await hot.put_file(sid, file_meta("f5", "a.pt", path="/other")) is None  # another path
    assert await hot.put_file(other, file_meta("o1", "a.pt")) is None  # another session

    replaced = await hot.put_file(sid, file_meta("f3", "a.pt"))
    assert replaced is not None
    assert replaced["id"] == "f1"
    assert math.isnan(replaced["metadata"]["score"])
    files = await hot.list_files(sid)
    assert sorted(f["id"] for f in files) == ["f2", "f3", "f5"]

    deleted = await hot.update_file(sid, "f2", {"deletedAt": NOW, "description": "gone"})
    assert deleted == {**file_meta("f2", "b.pt"), "deletedAt": NOW, "description": "gone"}
    assert await hot.put_file(sid, file_meta("f4", "b.pt")) is None  # a deleted entry is not replaced
    files = await hot.list_files(sid)
    assert sorted(f["id"] for f in files) == ["f2", "f3", "f4", "f5"]
    assert next(f for f in files if f["id"] == "f2") == deleted

    assert await hot.update_file(sid, "missing", {"description": "x"}) is None
    assert await hot.update_file(other, "f3", {"description": "x"}) is None  # not this session's file
    assert [f["id"] for f in await hot.list_files(other)] == ["o1"]


async def test_a_second_instance_sees_everything(hot_factory: HotFactory, tmp_path: Path) -> None:
    first = hot_factory(tmp_path)
    await first.start()
    try:
        sid = await new_session(first)
        await first.add_token(Token("h", ("ws",), False, NOW))
        written = await first.ingest(sid, "k", Ingest([points("loss", 2, 3)], [log("a")], [{"p": 1}]))
        await first.put_file(sid, file_meta("f1", "a.pt"))
    finally:
        await first.stop()

    second = hot_factory(tmp_path)
    await second.start()
    try:
        session = await second.get_session(sid)
        assert session is not None
        assert session.name == "run"
        assert await second.find_token("h") == Token("h", ("ws",), False, NOW)
        track = await second.get_track(sid, "loss")
        assert track is not None
        assert track.total == 5
        assert [b.count for b in await second.read_batches(track.id, 0, 5)] == [2, 3]
        assert [e["message"] for e in await second.read_logs(sid, 0, 10)] == ["a"]
        assert (await second.get_parameters(sid) or {}).get("data") == {"p": 1}
        assert [f["id"] for f in await second.list_files(sid)] == ["f1"]
        assert await second.ingest(sid, "k", Ingest()) == dataclasses.replace(written, repeat=True)
        more = await second.ingest(sid, None, Ingest([points("loss", 1)], [log("b")], [{"p": 2}]))
        assert (more.tracks[0][1:], more.log_start, more.parameters_version) == ((5, 6), 1, 2)
    finally:
        await second.stop()


# -- cold tier -----------------------------------------------------------------------------------


async def test_put_if_absent(cold: ColdTier) -> None:
    assert await cold.put("chunks/t/0", b"first") is True
    assert await cold.put("chunks/t/0", b"second") is False
    assert await cold.get("chunks/t/0") == b"first"


async def test_racing_puts_store_one_object(cold: ColdTier) -> None:
    payloads = [bytes([i]) * 1000 for i in range(10)]
    stored = await asyncio.gather(*(cold.put("race", p) for p in payloads))
    assert stored.count(True) == 1
    assert await cold.get("race") == payloads[stored.index(True)]
    assert await cold.list("") == ["race"]


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_put_stream_and_stream(cold: ColdTier) -> None:
    data = random.Random(0).randbytes(5 << 20)
    assert await cold.put_stream("files/s/f1", pieces(data, 64 << 10)) == len(data)
    assert await cold.get("files/s/f1") == data
    read = [piece async for piece in cold.stream("files/s/f1")]
    assert len(read) > 1  # in pieces, not whole
    assert b"".join(read) == data

    with pytest.raises(FileExistsError):
        await cold.put_stream("files/s/f1", pieces(b"other", 2))
    assert await cold.get("files/s/f1") == data
    assert await cold.put_stream("files/s/empty", pieces(b"", 1)) == 0
    assert await cold.get("files/s/empty") == b""


async def test_a_failed_put_stream_stores_nothing(cold: ColdTier) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (64 << 10)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await cold.put_stream("files/s/broken", broken())
    with pytest.raises(KeyError):
        await cold.get("files/s/broken")
    assert await cold.list("") == []
    assert await cold.put_stream("files/s/broken", pieces(b"whole", 2)) == 5  # the key is still free


async def test_missing_keys(cold: ColdTier) -> None:
    await cold.put("a/b", b"x")
    for key in ("missing", "a/missing", "a"):
        with pytest.raises(KeyError):
            await cold.get(key)
        with pytest.raises(KeyError):
            await anext(cold.stream(key))


async def test_list_and_delete(cold: ColdTier) -> None:
    keys = ["chunks/t1/0", "chunks/t1/1", "chunks/t1/10", "chunks/t2/0", "files/s/f"]
    for key in reversed(keys):
        assert await cold.put(key, key.encode()) is True
    assert await cold.list("") == keys
    assert await cold.list("chunks/") == keys[:4]
    assert await cold.list("chunks/t1/") == keys[:3]
    assert await cold.list("chunks/t1/1") == ["chunks/t1/1", "chunks/t1/10"]
    assert await cold.list("chunks/t") == keys[:4]
    assert await cold.list("nothing/") == []

    await cold.delete("chunks/t1/1")
    await cold.delete("chunks/t1/1")  # missing: not an error
    await cold.delete("never/there")
    assert await cold.list("chunks/t1/") == ["chunks/t1/0", "chunks/t1/10"]
    with pytest.raises(KeyError):
        await cold.get("chunks/t1/1")
    assert await cold.put("chunks/t1/1", b"again") is True
    assert await cold.get("chunks/t1/1") == b"again"


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "..", "../x", "a/../b", ".", "a/./b", "a\0b"])
async def test_bad_keys_are_refused(cold: ColdTier, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        await cold.put(key, b"x")
    with pytest.raises(ValueError, match="key"):
        await cold.put_stream(key, pieces(b"x", 1))
    with pytest.raises(ValueError, match="key"):
        await cold.get(key)
    with pytest.raises(ValueError, match="key"):
        await anext(cold.stream(key))
    with pytest.raises(ValueError, match="key"):
        await cold.delete(key)
    assert await cold.list("") == []


async def test_cold_restart(cold: ColdTier, cold_factory: ColdFactory, tmp_path: Path) -> None:
    await cold.put("chunks/t/0", b"data")
    await cold.start()  # again
    second = cold_factory(tmp_path)
    await second.start()
    try:
        assert await second.get("chunks/t/0") == b"data"
        assert await second.put("chunks/t/0", b"other") is False
    finally:
        await second.stop()


async def test_directory_tier_leaves_no_temporary_files(tmp_path: Path) -> None:
    cold = DirectoryColdTier(tmp_path / "cold")
    await cold.start()

    async def broken() -> AsyncIterator[bytes]:
        yield b"x"
        raise ConnectionResetError

    await cold.put("a/b", b"1")
    await cold.put("a/b", b"2")
    await cold.put_stream("a/c", pieces(b"3", 1))
    with pytest.raises(FileExistsError):
        await cold.put_stream("a/c", pieces(b"4", 1))
    with pytest.raises(ConnectionResetError):
        await cold.put_stream("a/d", broken())
    assert sorted(p.relative_to(cold.root).as_posix() for p in cold.root.rglob("*") if p.is_file()) == [
        "a/b", "a/c",
    ]
