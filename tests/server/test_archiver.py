"""The archiver against the real embedded tiers: chunk boundaries, and the back-pressure that keeps the
hot tier bounded when archiving cannot keep up (a cold tier that fails: an error path)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import pytest_asyncio

from dreamlake.server.archiver import Archiver
from dreamlake.server.cold.directory import DirectoryColdTier
from dreamlake.server.hot.base import Ingest, TrackWrite
from dreamlake.server.hot.sqlite import SQLiteHotTier
from dreamlake.server.points import PointReader, to_blobs

pytestmark = pytest.mark.asyncio
SIZE = 100


class BrokenCold(DirectoryColdTier):
    """A cold tier whose writes fail (an object store that is down)."""

    async def put(self, key: str, data: bytes) -> bool:
        raise OSError("the object store is down")


@pytest_asyncio.fixture
async def hot(tmp_path: Path) -> AsyncIterator[SQLiteHotTier]:
    tier = SQLiteHotTier(tmp_path / "hot.sqlite3")
    await tier.start()
    yield tier
    await tier.stop()


async def fill(hot: SQLiteHotTier, points: int, batch: int) -> str:
    session = await hot.upsert_session("ws", "s", {}, create=True)
    assert session is not None
    for start in range(0, points, batch):
        chunk = [
            {"i": i, "nan": float("nan") if i % 7 == 0 else 0.5}
            for i in range(start, min(start + batch, points))
        ]
        await hot.ingest(session.id, None, Ingest([TrackWrite("t", to_blobs(chunk))]))
    return session.id


async def archive_all(archiver: Archiver) -> int:
    """Passes until nothing is left; the number of chunks archived."""
    total = 0
    while done := await archiver.archive_once():
        total += done
    await archiver.archive_once()  # a last pass refreshes the backlog
    return total


async def test_chunks_are_cut_at_exact_boundaries(hot: SQLiteHotTier, tmp_path: Path) -> None:
    cold = DirectoryColdTier(tmp_path / "cold")
    await cold.start()
    sid = await fill(hot, 1050, 33)  # batches straddle every boundary
    archiver = Archiver(hot, cold, SIZE, 0.1, max_buffered=10 * SIZE)
    assert await archive_all(archiver) == 10
    track = await hot.get_track(sid, "t")
    assert track is not None
    assert (track.total, track.chunked) == (1050, 1000)
    reader = PointReader(hot, cold, SIZE)
    for start, limit in [(0, 1050), (95, 10), (990, 30), (999, 2), (1000, 50), (1049, 9)]:
        points = await reader.read(track, start, limit)
        assert [p["index"] for p in points] == list(range(start, min(start + limit, 1050)))
        assert [p["data"]["i"] for p in points] == list(range(start, min(start + limit, 1050)))
        assert all((p["data"]["nan"] != p["data"]["nan"]) == (p["index"] % 7 == 0) for p in points)
    assert await archiver.archive_once() == 0  # nothing left to do, nothing done twice


async def test_a_track_too_far_behind_is_backlogged_until_archived(
    hot: SQLiteHotTier, tmp_path: Path
) -> None:
    sid = await fill(hot, 1000, 250)
    broken = Archiver(hot, BrokenCold(tmp_path / "cold"), SIZE, 0.1, max_buffered=5 * SIZE)
    with pytest.raises(OSError, match="down"):
        await broken.archive_once()
    assert broken.backlogged == {(sid, "t")}  # the bulk route answers 503 for it
    healthy_cold = DirectoryColdTier(tmp_path / "cold")
    await healthy_cold.start()
    healthy = Archiver(hot, healthy_cold, SIZE, 0.1, max_buffered=5 * SIZE)
    assert await archive_all(healthy) == 10
    assert healthy.backlogged == set()


async def test_a_write_past_the_bound_holds_the_track_back_at_once(
    tmp_path: Path, hot: SQLiteHotTier
) -> None:
    cold = DirectoryColdTier(tmp_path / "cold")
    archiver = Archiver(hot, cold, SIZE, 0.1, max_buffered=2 * SIZE)
    archiver.ingested("s", "t", "track-id", 2 * SIZE)
    assert archiver.backlogged == set()
    archiver.ingested("s", "t", "track-id", 2 * SIZE + 1)
    assert archiver.backlogged == {("s", "t")}


async def test_a_write_to_a_backlogged_track_waits_for_the_archiver(
    hot: SQLiteHotTier, tmp_path: Path
) -> None:
    sid = await fill(hot, 1000, 250)
    broken = Archiver(hot, BrokenCold(tmp_path / "broken"), SIZE, 0.1, max_buffered=5 * SIZE)
    with pytest.raises(OSError, match="down"):
        await broken.archive_once()
    assert not await broken.room([(sid, "t")], patience=0.2)  # no progress: refused (503)
    assert await broken.room([(sid, "other")], patience=0.2)  # other tracks are not held back
    cold = DirectoryColdTier(tmp_path / "cold")
    await cold.start()
    healthy = Archiver(hot, cold, SIZE, 0.1, max_buffered=5 * SIZE)
    healthy.backlogged = {(sid, "t")}
    async with anyio.create_task_group() as tg:
        tg.start_soon(healthy.run)
        assert await healthy.room([(sid, "t")], patience=30)  # admitted once the archiver caught up
        tg.cancel_scope.cancel()
