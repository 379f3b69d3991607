"""Shapes that cross a boundary: between the session and its sink, and between client and server."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec


@dataclasses.dataclass
class TrackSpec:
    """A track's name and the descriptive fields given to ``session.track(...)``."""

    name: str
    description: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None


# What dreamlake 0.2.x signs the tokens it makes from ``user_name`` with; ``dreamlake serve --dev``
# accepts them (on loopback only).
DEV_JWT_SECRET = "your-secret-key-change-this-in-production"


# The bulk ingest route (``POST /sessions/{id}/batches``), msgpack or JSON, shared by the server and the
# SDK's remote sink. The idempotency key travels in the ``Idempotency-Key`` header.


class TrackPoints(msgspec.Struct, forbid_unknown_fields=True):
    """One track's points in a bulk batch, with the track's descriptive fields (None keeps them).

    The points come either as ``points`` (objects) or, as the SDK sends them, as ``lines``: JSON
    lines, one object per point, non-finite floats tagged, which the server stores as they are.
    """

    name: str
    points: list[dict[str, Any]] = []
    lines: bytes = b""
    description: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None


class LogRecord(msgspec.Struct, forbid_unknown_fields=True):
    """A log entry; ``timestamp`` is POSIX seconds or an ISO-8601 string."""

    timestamp: float | str
    level: str
    message: str
    metadata: dict[str, Any] | None = None


class BulkBatch(msgspec.Struct, forbid_unknown_fields=True):
    """Everything one request stores for one session, all or nothing."""

    tracks: list[TrackPoints] = []
    logs: list[LogRecord] = []
    parameters: list[dict[str, Any]] = []
