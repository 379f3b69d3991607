"""The hot tier's interface: sessions, tracks and their counters, recent point batches, logs,
parameters, the file index, tokens and idempotency keys.

Every method is a coroutine and safe to call from many requests at once; an implementation gets its
atomicity from its engine (a SQLite transaction, MongoDB's unique indexes and atomic updates), never
from a lock in this process, so several servers can share one hot tier. Point batches are opaque
bytes to the tier (``server.points`` encodes them); the tier only numbers them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Token:
    """A stored API token: the hash of its secret and what it may reach."""

    token_hash: str
    workspaces: tuple[str, ...]
    read_only: bool
    created_at: str


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """A session as stored; ``fields`` holds description, tags, folder, metadata, writeProtected."""

    id: str
    workspace: str
    name: str
    fields: dict[str, Any]
    created_at: str
    updated_at: str


@dataclasses.dataclass(frozen=True)
class TrackRecord:
    """A track and its counters: points ``0..chunked-1`` are in the cold tier, the rest are hot."""

    id: str
    session_id: str
    name: str
    description: str | None
    tags: list[str]
    metadata: dict[str, Any] | None
    total: int
    chunked: int
    created_at: str
    updated_at: str
    first_data_at: str | None
    last_data_at: str | None


@dataclasses.dataclass(frozen=True)
class Batch:
    """``count`` points numbered from ``start``, encoded as one blob, stored at ``created_at``."""

    start: int
    count: int
    blob: bytes
    created_at: str


@dataclasses.dataclass
class TrackWrite:
    """Points for one track in an ingest: the track's descriptive fields (None keeps what is stored)
    and its points as blobs of ``(count, bytes)``, in order."""

    name: str
    blobs: list[tuple[int, bytes]]
    description: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None


@dataclasses.dataclass
class Ingest:
    """Everything one request stores for one session, all or nothing."""

    tracks: list[TrackWrite] = dataclasses.field(default_factory=list)
    # timestamp, level, message, metadata?
    logs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    parameters: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # flat deltas, oldest first


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """Where an ingest landed: per track ``(track id, start index, total after)``, the log sequence
    numbers ``[log_start, log_end)``, the parameter version, and whether it was a replay."""

    tracks: list[tuple[str, int, int]]
    log_start: int
    log_end: int
    parameters_version: int | None
    repeat: bool = False


class HotTier(Protocol):
    """Recent data and every index; see the module docstring."""

    async def start(self) -> None:
        """Connect and create what is missing (tables, indexes), idempotently."""

    async def stop(self) -> None:
        """Release connections."""

    async def add_token(self, token: Token) -> None:
        """Store a token (its hash)."""

    async def find_token(self, token_hash: str) -> Token | None:
        """The token with this hash, if any."""

    async def upsert_session(
        self, workspace: str, name: str, fields: Mapping[str, Any], create: bool
    ) -> SessionRecord | None:
        """Create the session or update the given non-None ``fields``; with ``create=False`` only
        return an existing one (None if missing), changing nothing."""

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """A session by id."""

    async def ingest(self, session_id: str, key: str | None, ingest: Ingest) -> IngestResult:
        """Store ``ingest``, numbering points per track and logs per session gap-free. Invalid input
        stores nothing. SQLite stores it in one transaction; MongoDB (no multi-document
        transactions) stores each track's points, the logs and the parameters as one atomic write
        each, so a crash part-way leaves some parts visible and the request unanswered, and its
        retry with the same ``key`` stores the rest, nothing twice.
        With a ``key`` already stored, store nothing and return the first result with ``repeat``.
        ``KeyError`` for an unknown session; ``ValueError``/``TypeError`` for a blob whose count is
        not an int > 0 or whose data is not bytes (and nothing stored)."""

    async def get_track(self, session_id: str, name: str) -> TrackRecord | None:
        """A track by name."""

    async def list_tracks(self, session_id: str) -> list[TrackRecord]:
        """Every track of a session, by name."""

    async def read_batches(self, track_id: str, start: int, end: int) -> list[Batch]:
        """The stored batches holding any point of ``[start, end)``, in index order."""

    async def read_logs(self, session_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        """Log entries ``sequenceNumber`` ``start..start+limit-1``."""

    async def get_parameters(self, session_id: str) -> dict[str, Any] | None:
        """``{"version", "data", "createdAt", "updatedAt"}`` or None if never set."""

    async def put_file(self, session_id: str, meta: Mapping[str, Any]) -> dict[str, Any] | None:
        """Index a file; an entry with the same path and filename is replaced (its metadata is
        returned, so its bytes can be removed)."""

    async def list_files(self, session_id: str) -> list[dict[str, Any]]:
        """Every file entry of a session, deleted ones included."""

    async def update_file(
        self, session_id: str, file_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Apply ``changes`` to a file entry; None if there is none."""

    async def tracks_to_archive(self, chunk_size: int, limit: int) -> list[TrackRecord]:
        """Tracks holding at least one full chunk of hot points."""

    async def lease_track(self, track_id: str, owner: str, seconds: float) -> bool:
        """Take or renew the right to archive a track for ``seconds``: True if ``owner`` holds it now
        (free, expired or already ``owner``'s), so two servers do not build the same chunks."""

    async def chunk_archived(self, track_id: str, chunk_index: int, chunk_size: int, count: int = 1) -> bool:
        """Record chunks ``chunk_index .. chunk_index+count-1`` as in the cold tier and drop the hot
        batches wholly inside the archived range, in one step. False (and nothing changed) unless
        they are the track's next chunks and are full (e.g. another server recorded them first)."""


__all__ = [
    "Batch",
    "HotTier",
    "Ingest",
    "IngestResult",
    "SessionRecord",
    "Token",
    "TrackRecord",
    "TrackWrite",
]
