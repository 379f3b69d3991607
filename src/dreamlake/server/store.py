"""Writes shared by the 0.2.x routes and the bulk route: one ingest into the hot tier, then a nudge
to the archiver when a track has just filled a chunk."""

from __future__ import annotations

from .hot.base import Ingest, IngestResult, SessionRecord
from .state import Server


async def ingest(server: Server, session: SessionRecord, key: str | None, batch: Ingest) -> IngestResult:
    """Store ``batch`` all or nothing (a repeated ``key`` stores nothing and says so)."""
    result = await server.hot.ingest(session.id, key, batch)
    size = server.config.chunk_size
    if any(start // size != total // size for _, start, total in result.tracks):
        server.archiver.wake()
    return result
