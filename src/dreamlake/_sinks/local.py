"""The local sink: the async face of :class:`~dreamlake._disk.session_dir.SessionDir`.

Every call runs the blocking directory work in a worker thread, so the agent's loop never waits on
the disk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from .._disk.session_dir import SessionDir
from .._exceptions import StorageError
from .advice import advice
from .base import FileRequest, GroupWriteError, Sink, TrackSpec

# A cancelled call stops being waited for at once: the agent is only ever cancelled when close() runs
# past its deadline, and nothing is retried after that (a write cut short and then retried could be
# stored twice).
_in_thread = functools.partial(anyio.to_thread.run_sync, abandon_on_cancel=True)


class LocalSink(Sink):
    """Writes one session's data to files under ``root`` (see :class:`SessionDir`)."""

    def __init__(self, root: Path, workspace: str, session: Mapping[str, Any], fsync: bool = False) -> None:
        self.dir = SessionDir(root, workspace, session, fsync)
        self.directory = self.dir.directory

    async def open(self) -> None:
        await _in_thread(self.dir.open)
        self.write_protected = self.dir.write_protected

    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        await _in_thread(self.dir.write_track, spec, points, self._intent(spec.name))

    async def write_tracks(self, writes: Sequence[tuple[TrackSpec, Sequence[dict[str, Any]]]]) -> int:
        # One worker-thread hop for the whole group: in a wide session the hop costs more than
        # a track's few points. A subclass that wraps write_track (a test double) keeps its wrapper.
        if type(self).write_track is not LocalSink.write_track:
            return await super().write_tracks(writes)
        return await _in_thread(self._write_tracks, writes)

    def _write_tracks(self, writes: Sequence[tuple[TrackSpec, Sequence[dict[str, Any]]]]) -> int:
        done, exc = self.dir.write_tracks(writes, self.intent)
        if exc is not None:
            raise GroupWriteError(done, exc) from exc
        return done

    def last_writes(self) -> None:
        self.dir.settle_as_written = True

    async def settle(self, names: Collection[str] | None) -> None:
        await _in_thread(self.dir.settle, names)

    def _intent(self, name: str | None) -> Callable[[int], None] | None:
        return None if self.intent is None else functools.partial(self.intent, name)

    async def stored_prefix(self, name: str | None, first: int, points: Sequence[dict[str, Any]]) -> int:
        return await _in_thread(self.dir.stored_prefix, name, first, points)

    async def read_track(self, name: str, start_index: int, limit: int) -> dict[str, Any]:
        return await _in_thread(self.dir.read_track, name, start_index, limit)

    async def track_stats(self, name: str) -> dict[str, Any]:
        return await _in_thread(self.dir.track_stats, name)

    async def list_tracks(self) -> list[dict[str, Any]]:
        return await _in_thread(self.dir.list_tracks)

    async def write_logs(self, entries: Sequence[dict[str, Any]]) -> None:
        await _in_thread(self.dir.write_logs, entries, self._intent(None))

    async def write_parameters(self, deltas: Sequence[dict[str, Any]]) -> None:
        await _in_thread(self.dir.write_parameters, deltas)

    async def read_parameters(self) -> dict[str, Any]:
        return await _in_thread(self.dir.read_parameters)

    async def save_file(self, request: FileRequest) -> dict[str, Any]:
        r = request
        return await _in_thread(self.dir.files.save, r.source, r.prefix, r.description, r.tags, r.metadata)

    async def list_files(self, prefix: str | None, tags: list[str] | None) -> list[dict[str, Any]]:
        return await _in_thread(self.dir.files.find, prefix, tags)

    async def download_file(self, file_id: str, dest: Path | None) -> Path:
        return await _in_thread(self.dir.files.download, file_id, dest)

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        return await _in_thread(self.dir.files.delete, file_id)

    async def update_file(self, file_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return await _in_thread(self.dir.files.update, file_id, dict(changes))

    async def close(self, agent_stats: Mapping[str, Any], deadline: float | None = None) -> None:
        try:
            await _in_thread(self.dir.close, agent_stats)
        except OSError as exc:
            raise StorageError(
                f"closing the session's files failed ({exc}): {advice(exc)}. The points written are "
                "in data.jsonl; metadata.json (brought in step when a track is next read) and "
                "session.json may lag them"
            ) from exc
