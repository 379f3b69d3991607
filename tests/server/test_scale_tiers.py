"""MongoDB + S3 tier behaviour beyond the shared contract: a request cut short and retried, large
blobs, two archivers on one store (a conditional-create conflict, one killed mid-archive), and
start-up errors. In process, against the real services of ``conftest.py``."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import pytest_asyncio
from pymongo.errors import AutoReconnect

from dreamlake.server.archiver import Archiver
from dreamlake.server.cold.s3 import PART_BYTES, S3ColdTier
from dreamlake.server.errors import TierUnavailableError
from dreamlake.server.hot import mongo_numbered
from dreamlake.server.hot.base import Ingest, TrackWrite
from dreamlake.server.hot.mongo import MongoHotTier
from dreamlake.server.points import PointReader, build_chunk, chunk_key, to_blobs

from ._services import BUCKET, SeaweedS3, environment, free_ports
from .conftest import ScaleStore

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

SIZE = 100  # points per chunk
_names = itertools.count()


@pytest_asyncio.fixture
async def tiers(scale: ScaleStore) -> AsyncIterator[tuple[MongoHotTier, S3ColdTier]]:
    hot_url, cold_url = scale.fresh()
    hot, cold = MongoHotTier(hot_url, SIZE), S3ColdTier(cold_url)
    await hot.start()
    await cold.start()
    yield hot, cold
    await cold.stop()
    await hot.stop()


def track(name: str, first: int, count: int) -> TrackWrite:
    return TrackWrite(name, to_blobs([{"i": i} for i in range(first, first + count)]))


async def all_points(reader: PointReader, hot: MongoHotTier, sid: str, name: str) -> list[int]:
    record = await hot.get_track(sid, name)
    assert record is not None
    return [p["data"]["i"] for p in await reader.read(record, 0, record.total)]


async def test_a_request_cut_short_is_completed_by_its_retry_not_doubled(
    tiers: tuple[MongoHotTier, S3ColdTier], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the points are stored but before the request finished (the
    parameters write fails): the retry, with the same key, stores only what is missing, even once
    the archiver has moved those points to the cold tier meanwhile."""
    hot, cold = tiers
    sid = (await hot.upsert_session("ws", "cut", {}, True)).id  # type: ignore[union-attr]
    await hot.ingest(sid, "k0", Ingest([track("t", 0, 60)]))
    entry = {"timestamp": "t", "level": "info", "message": "m"}
    request = Ingest([track("t", 60, 90), track("u", 0, 5)], [entry], [{"p": 1}])
    real = hot._merge_parameters

    async def drop(*args: Any) -> int:
        raise AutoReconnect("connection closed")

    monkeypatch.setattr(hot, "_merge_parameters", drop)
    with pytest.raises(TierUnavailableError, match="unreachable"):
        await hot.ingest(sid, "k1", request)
    stored = await hot.get_track(sid, "t")
    assert stored is not None
    assert stored.total == 150  # visible before the retry: each part is one atomic write

    archiver = Archiver(hot, cold, SIZE, 0.1, 10**6)
    assert await archiver.archive_once() == 1  # chunk 0 holds points of the unfinished request
    monkeypatch.setattr(hot, "_merge_parameters", real)
    retried = await hot.ingest(sid, "k1", request)
    assert (retried.tracks[0][1:], retried.tracks[1][1:]) == ((60, 150), (0, 5))
    assert (retried.log_start, retried.log_end, retried.parameters_version) == (0, 1, 1)
    assert (await hot.ingest(sid, "k1", request)).repeat is True
    assert await all_points(PointReader(hot, cold, SIZE), hot, sid, "t") == list(range(150))
    assert [e["message"] for e in await hot.read_logs(sid, 0, 10)] == ["m"]

    # Once it finished, the next archiving step drops its documents like any other.
    await hot.ingest(sid, "k2", Ingest([track("t", 150, 50)]))
    assert await archiver.archive_once() == 1
    assert await hot._batches.docs.count_documents({"o": stored.id, "e": {"$lt": 201}}) == 0


async def test_large_writes_go_to_parts_and_leave_with_their_batches(
    tiers: tuple[MongoHotTier, S3ColdTier], monkeypatch: pytest.MonkeyPatch
) -> None:
    hot, cold = tiers
    monkeypatch.setattr(mongo_numbered, "INLINE_BYTES", 500)  # so a few hundred points need parts
    sid = (await hot.upsert_session("ws", "big", {}, True)).id  # type: ignore[union-attr]
    write = TrackWrite("t", [to_blobs([{"i": i} for i in range(j, j + 10)])[0] for j in range(0, 250, 10)])
    await hot.ingest(sid, "k", Ingest([write]))
    tid = (await hot.get_track(sid, "t")).id  # type: ignore[union-attr]
    parts = hot._batches._parts
    assert await parts.count_documents({}) > 1
    reader = PointReader(hot, cold, SIZE)
    archiver = Archiver(hot, cold, SIZE, 0.1, 10**6)
    assert await all_points(reader, hot, sid, "t") == list(range(250))
    assert await archiver.archive_once() == 2
    assert await all_points(reader, hot, sid, "t") == list(range(250))  # 0-199 cold, the rest hot
    await hot.ingest(sid, None, Ingest([track("t", 250, 50)]))
    assert await archiver.archive_once() == 1
    assert await parts.count_documents({}) == 0  # the large write is wholly archived: parts gone
    assert await all_points(reader, hot, sid, "t") == list(range(300))
    assert sorted(await cold.list(f"chunks/{tid}/")) == [chunk_key(tid, k) for k in range(3)]


async def test_racing_archivers_write_each_chunk_once(tiers: tuple[MongoHotTier, S3ColdTier]) -> None:
    """Two servers' archivers on one track at once (leases bypassed): the conditional create lets one
    store each chunk (the other sees ``AlreadyExistsError``); the conditional update of ``chunked``
    lets one record it; reads see every point once."""
    hot, cold = tiers
    sid = (await hot.upsert_session("ws", "race", {}, True)).id  # type: ignore[union-attr]
    for first in range(0, 1000, 125):
        await hot.ingest(sid, None, Ingest([track("t", first, 125)]))
    record = await hot.get_track(sid, "t")
    assert record is not None
    first, second = (Archiver(hot, cold, SIZE, 0.1, 10**6) for _ in range(2))
    done = await asyncio.gather(first._archive(record), second._archive(record))
    assert sorted(done) == [0, 10]  # one recorded all ten chunks; the other's record was refused
    keys = await cold.list(f"chunks/{record.id}/")
    assert keys == [chunk_key(record.id, k) for k in range(10)]
    assert await cold.put(keys[0], b"another copy") is False  # the object stays the first one
    assert await all_points(PointReader(hot, cold, SIZE), hot, sid, "t") == list(range(1000))


async def test_a_server_killed_mid_archive_leaves_work_another_finishes(
    tiers: tuple[MongoHotTier, S3ColdTier],
) -> None:
    """Server A took the lease and wrote chunk 0 to S3, then died before recording it. Server B
    waits for the lease to expire, then archives everything, chunk 0 included (its put meets A's
    object: same points, kept)."""
    hot, cold = tiers
    sid = (await hot.upsert_session("ws", "dead", {}, True)).id  # type: ignore[union-attr]
    await hot.ingest(sid, None, Ingest([track("t", 0, 350)]))
    record = await hot.get_track(sid, "t")
    assert record is not None
    dead = Archiver(hot, cold, SIZE, 0.1, 10**6, lease=1.0)
    assert await hot.lease_track(record.id, dead.owner, 1.0)
    batches = await hot.read_batches(record.id, 0, SIZE)
    chunk = build_chunk(0, SIZE, batches)
    assert chunk is not None
    assert await cold.put(chunk_key(record.id, 0), chunk) is True  # ...and then A is killed

    survivor = Archiver(hot, cold, SIZE, 0.1, 10**6, lease=1.0)
    assert await survivor.archive_once() == 0  # A's lease holds
    with anyio.fail_after(10):
        while await survivor.archive_once() == 0:  # noqa: ASYNC110 - the lease expires in the hot tier
            await anyio.sleep(0.2)
    record = await hot.get_track(sid, "t")
    assert record is not None
    assert record.chunked == 300
    assert await cold.list(f"chunks/{record.id}/") == [chunk_key(record.id, k) for k in range(3)]
    assert await all_points(PointReader(hot, cold, SIZE), hot, sid, "t") == list(range(350))


async def test_large_streams_are_multipart_and_a_broken_one_stores_nothing(
    tiers: tuple[MongoHotTier, S3ColdTier],
) -> None:
    _, cold = tiers
    data = random.Random(1).randbytes(PART_BYTES * 2 + 12345)

    async def pieces(fail: bool) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]
            if fail and i > PART_BYTES:
                raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await cold.put_stream("files/s/big", pieces(fail=True))
    with pytest.raises(KeyError):
        await cold.get("files/s/big")
    assert await cold.put_stream("files/s/big", pieces(fail=False)) == len(data)
    assert await cold.get("files/s/big") == data
    with pytest.raises(FileExistsError):
        await cold.put_stream("files/s/big", pieces(fail=False))


async def test_wrong_s3_secret_or_missing_bucket_is_a_clear_start_up_error(s3: SeaweedS3) -> None:
    with environment(s3.env(secret="not-the-secret")):
        with pytest.raises(TierUnavailableError, match="refused the credentials"):
            await S3ColdTier(f"s3://{BUCKET}/x").start()
    with pytest.raises(TierUnavailableError, match="does not exist"):
        await S3ColdTier("s3://no-such-bucket-here/x").start()


async def test_unreachable_mongodb_is_a_clear_start_up_error() -> None:
    url = f"mongodb://127.0.0.1:{free_ports(1)[0]}/x?serverSelectionTimeoutMS=500"
    tier = MongoHotTier(url, SIZE)
    with pytest.raises(TierUnavailableError, match=r"cannot reach MongoDB at 127\.0\.0\.1"):
        await tier.start()
    await tier.stop()


async def test_mongo_url_names_the_database() -> None:
    assert MongoHotTier("mongodb://h:1/mine?w=1", SIZE)._db_name == "mine"
    assert MongoHotTier("mongodb://h:1", SIZE)._db_name == "dreamlake"
