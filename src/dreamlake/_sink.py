"""Where the agent sends batches: the interface every sink (local files, remote HTTP) implements.

The agent only ever awaits these methods, from its own task; a sink does its blocking work off the
event loop (worker threads for files, async I/O for HTTP). The caller's hot path never sees a sink.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass
class TrackSpec:
    """A track's name and the descriptive fields given to ``session.track(...)``."""

    name: str
    description: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None


class Sink(abc.ABC):
    """Durable storage behind one session."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Create or update the session's storage."""

    @abc.abstractmethod
    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        """Append ``points`` (possibly none: then only ``spec`` is stored) to a track, in order.

        Either every point is stored or none is, and the error is raised.
        """

    @abc.abstractmethod
    async def read_track(self, name: str, start_index: int, limit: int) -> dict[str, Any]:
        """Return points ``start_index .. start_index+limit-1`` in the 0.2.x read shape."""

    @abc.abstractmethod
    async def track_stats(self, name: str) -> dict[str, Any]:
        """Return the 0.2.x stats of one track."""

    @abc.abstractmethod
    async def list_tracks(self) -> list[dict[str, Any]]:
        """Return a summary of every track of the session."""

    @abc.abstractmethod
    async def close(self, agent_stats: Mapping[str, Any]) -> None:
        """Record the agent's final counters and release resources."""
