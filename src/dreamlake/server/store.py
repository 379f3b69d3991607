"""Writes shared by the 0.2.x routes and the bulk route: one ingest into the hot tier, then word to
the archiver of what each track now holds."""

from __future__ import annotations

from .hot.base import Ingest, IngestResult, SessionRecord
from .state import Server


async def ingest(server: Server, session: SessionRecord, key: str | None, batch: Ingest) -> IngestResult:
    """Store ``batch`` all or nothing (a repeated ``key`` stores nothing and says so)."""
    result = await server.hot.ingest(session.id, key, batch)
    for write, (track_id, _, total) in zip(batch.tracks, result.tracks, strict=True):
        server.archiver.ingested(session.id, write.name, track_id, total)
    return result
