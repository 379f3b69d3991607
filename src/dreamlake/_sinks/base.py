"""Where the agent sends batches: the interface every sink (local files, remote HTTP) implements.

The agent only ever awaits these methods, from its own task; a sink does its blocking work off the
event loop (worker threads for files, async I/O for HTTP). The caller's hot path never sees a sink.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .._schema.wire import TrackSpec
from .outbox import Outbox

__all__ = ["FileRequest", "GroupWriteError", "Sink", "SpoolFile", "TrackSpec"]


class SpoolFile(Protocol):
    """What a sink that sends to a server uses of the session's spool (``_agent/spool.py``)."""

    writer: str
    path: Path

    def sending(self, group: int, ends: dict[int, int]) -> None: ...

    def sync(self) -> None: ...


class GroupWriteError(Exception):
    """:meth:`Sink.write_tracks` stored the first ``done`` writes; the next one failed with ``cause``."""

    def __init__(self, done: int, cause: Exception) -> None:
        super().__init__(done, cause)
        self.done = done
        self.cause = cause


@dataclasses.dataclass(frozen=True)
class FileRequest:
    """A checked ``session.file(...).save()``: copy ``source`` in under ``prefix``."""

    source: Path
    prefix: str
    description: str | None
    tags: list[str]
    metadata: dict[str, Any] | None


class Sink(abc.ABC):
    """Durable storage behind one session."""

    #: Set by :meth:`open`: the stored session refuses writes (``write_protected`` in session.json).
    write_protected = False

    #: A sink that keeps nothing on disk (``dreamlake.testing``) gets no spool either.
    in_memory = False

    #: A sink that sends to a server: points handed over are stored for good only once the server
    #: acknowledged them; the agent tells it, per spooled track, up to where (:meth:`handed`).
    acks_later = False

    #: Set by the agent: a sink that numbers points itself (local files) calls it with the track's
    #: name (None: the logs) and the first index of a write, before writing; see ``_agent/spool.py``.
    intent: Callable[[str | None, int], None] | None = None

    @abc.abstractmethod
    async def open(self) -> None:
        """Create or update the session's storage (only create it, if it is write-protected)."""

    @abc.abstractmethod
    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        """Append ``points`` (possibly none: then only ``spec`` is stored) to a track, in order.

        Either every point is stored or none is, and the error is raised. The list is the agent's:
        once stored, its items are released in place, so a sink copies what it keeps.
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
    async def write_logs(self, entries: Sequence[dict[str, Any]]) -> None:
        """Append log entries (``timestamp`` in POSIX seconds), numbering them; all or none."""

    @abc.abstractmethod
    async def write_parameters(self, deltas: Sequence[dict[str, Any]]) -> None:
        """Merge flat parameter changes, oldest first, into the stored parameters."""

    @abc.abstractmethod
    async def read_parameters(self) -> dict[str, Any]:
        """Return the stored parameters, flat."""

    @abc.abstractmethod
    async def save_file(self, request: FileRequest) -> dict[str, Any]:
        """Store a copy of a file; return its metadata."""

    @abc.abstractmethod
    async def list_files(self, prefix: str | None, tags: list[str] | None) -> list[dict[str, Any]]:
        """Return the metadata of the files under ``prefix`` carrying any of ``tags``."""

    @abc.abstractmethod
    async def download_file(self, file_id: str, dest: Path | None) -> Path:
        """Copy a stored file to ``dest``, verifying its checksum; return the path written."""

    @abc.abstractmethod
    async def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete a stored file; return ``{"id", "deletedAt"}``."""

    @abc.abstractmethod
    async def update_file(self, file_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a file's description, tags or metadata; return its metadata."""

    @abc.abstractmethod
    async def close(self, agent_stats: Mapping[str, Any], deadline: float | None = None) -> None:
        """Record the agent's final counters and release resources; a sink that sends elsewhere
        stops sending at ``deadline`` (``time.monotonic()``) and says what it left behind."""

    # Hooks for sinks that send in the background (remote); a local sink needs none of them.

    async def write_tracks(self, writes: Sequence[tuple[TrackSpec, Sequence[dict[str, Any]]]]) -> int:
        """Write several tracks' chunks, in order, each as :meth:`write_track` would; return how many
        were stored. A failure stops the run and is raised as :class:`GroupWriteError` saying how
        many writes before it were stored (each write is all or nothing, as for ``write_track``)."""
        for done, (spec, points) in enumerate(writes):
            try:
                await self.write_track(spec, points)
            except Exception as exc:
                raise GroupWriteError(done, exc) from exc
        return len(writes)

    async def settle(self, names: Collection[str] | None) -> None:
        """Bring what the sink derives from the data (local ``metadata.json``) in step for tracks
        ``names`` (None: all); called by an explicit flush."""
        return None  # nothing derived lags in a sink that stores as it writes

    async def run(self) -> None:
        """Background work for the agent's lifetime (e.g. sending); cancelled after :meth:`close`."""
        return None  # nothing to do for a sink that stores as it writes

    async def flushed(self) -> None:
        """The agent's flush has handed over everything it took: what came since is one batch."""
        return None  # nothing to do for a sink that stores as it writes

    def last_writes(self) -> None:
        """What is written from now on is the session's last (the flush of ``close()``): a sink that
        derives files from the data (local ``metadata.json``) may bring them in step as it writes,
        rather than in a pass of its own."""
        return None  # nothing derived lags in a sink that stores as it writes

    def closing(self) -> None:
        """The session is closing: what is handed over from now on is the last, so a bound that
        would make it wait (a remote sink's journal) no longer applies."""
        return None  # nothing to do for a sink that stores as it writes

    async def stored_prefix(self, name: str | None, first: int, points: Sequence[dict[str, Any]]) -> int:
        """How many of ``points`` a write that began at index ``first`` of track ``name`` (None: the
        logs) stored before the process died: recovery writes only the rest."""
        return 0  # a sink that never calls ``intent`` is never asked

    @property
    def local_files(self) -> Sink | None:
        """The part of this sink that writes the local files (None: it writes none)."""
        return self

    @property
    def identity(self) -> dict[str, Any]:
        """What the session's spool records about where its points go (besides its name)."""
        return {}

    def attach_spool(self, spool: SpoolFile, on_acked: Callable[[dict[int, int]], None]) -> None:
        """Use ``spool`` as the journal of what is handed over; call ``on_acked`` with what each
        acknowledgement stored (spool track id -> seq end). Only for :attr:`acks_later` sinks."""
        return None

    def handed(self, track_id: int, end: int) -> None:
        """The spooled track ``track_id``'s points up to seq ``end`` were handed over (acks_later)."""
        return None

    def adopt(
        self, outbox: Outbox, identity: Mapping[str, Any], where: str, finish: Callable[[], None]
    ) -> None:
        """Send the batches ``outbox`` holds (what a dead run of this session left in spool
        ``where`` for the server) before anything new, then call ``finish`` (acks_later sinks)."""
        finish()

    async def drain(self) -> None:
        """Wait until everything handed over is stored for good (e.g. acknowledged by a server)."""
        return None  # nothing to do for a sink that stores as it writes

    def stats(self) -> dict[str, Any]:
        """The sink's own counters, merged into ``agent_stats()``."""
        return {}
