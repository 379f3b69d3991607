"""Helpers for testing code that logs with dreamlake (as structlog ships ``capture_logs`` and httpx
``MockTransport``): capture what a program logged, in memory, and make storage stall or fail.

    from dreamlake.testing import capture

    def test_training_logs_the_loss():
        with capture() as logged:
            train(epochs=1)                     # opens its own Session(...) as usual
        losses = [p["loss"] for p in logged.points("project", "run-1", "train/loss")]
        assert losses[-1] < losses[0]

Inside ``capture()`` every session opened in this process writes to memory instead of its usual
storage: nothing touches the disk or the network. ``stalled()`` and ``failing()`` keep the real
storage but make its writes wait or raise, to test what a program does when storage falls behind.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from . import _sinks
from ._exceptions import FileMissingError
from ._schema.levels import LEVEL, MESSAGE, TIMESTAMP
from ._schema.params import merge
from ._schema.timestamps import utc_iso, utc_now_iso
from ._sinks.base import FileRequest, Sink, TrackSpec

__all__ = ["Captured", "MemorySink", "capture", "failing", "stalled"]


class MemorySink(Sink):
    """One session's data in memory, with the same read shapes as local storage."""

    in_memory = True

    def __init__(self, workspace: str, session: Mapping[str, Any]) -> None:
        self.workspace = workspace
        self.session = dict(session)
        self.tracks: dict[str, list[dict[str, Any]]] = {}
        self.specs: dict[str, TrackSpec] = {}
        self.logs: list[dict[str, Any]] = []
        self.parameters: dict[str, Any] = {}
        self.files: list[dict[str, Any]] = []
        self._bytes: dict[str, bytes] = {}
        self.closed = False

    async def open(self) -> None:
        self.write_protected = bool(self.session.get("write_protected"))

    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        self.tracks.setdefault(spec.name, []).extend(points)
        self.specs[spec.name] = spec

    async def read_track(self, name: str, start_index: int, limit: int) -> dict[str, Any]:
        points = self.tracks.get(name, [])
        page = points[start_index : start_index + limit]
        return {
            "data": [{"index": i, "data": p} for i, p in enumerate(page, start_index)],
            "startIndex": start_index,
            "endIndex": start_index + len(page) - 1,
            "total": len(page),
            "hasMore": start_index + len(page) < len(points),
        }

    async def track_stats(self, name: str) -> dict[str, Any]:
        spec = self.specs.setdefault(name, TrackSpec(name))
        count = len(self.tracks.setdefault(name, []))
        return {
            "trackId": f"memory-track-{name}",
            "name": name,
            "description": spec.description,
            "tags": spec.tags or [],
            "metadata": spec.metadata,
            "totalDataPoints": count,
            "bufferedDataPoints": count,
            "chunkedDataPoints": 0,
            "totalChunks": 0,
            "chunkSize": 10_000,
        }

    async def list_tracks(self) -> list[dict[str, Any]]:
        return [await self.track_stats(name) for name in sorted(self.tracks)]

    async def write_logs(self, entries: Sequence[dict[str, Any]]) -> None:
        for queued in entries:
            entry: dict[Any, Any] = queued
            metadata = {k: v for k, v in entry.items() if not isinstance(k, int)}
            line = {
                "sequenceNumber": len(self.logs),
                "timestamp": utc_iso(entry[TIMESTAMP]),
                "level": entry[LEVEL],
                "message": entry[MESSAGE],
            }
            self.logs.append({**line, "metadata": metadata} if metadata else line)

    async def write_parameters(self, deltas: Sequence[dict[str, Any]]) -> None:
        merge(self.parameters, deltas)

    async def read_parameters(self) -> dict[str, Any]:
        return dict(self.parameters)

    async def save_file(self, request: FileRequest) -> dict[str, Any]:
        data = await anyio.Path(request.source).read_bytes()
        now = utc_now_iso()
        meta: dict[str, Any] = {
            "id": str(len(self.files)),
            "path": request.prefix,
            "filename": request.source.name,
            "sizeBytes": len(data),
            "description": request.description,
            "tags": request.tags,
            "metadata": request.metadata,
            "uploadedAt": now,
            "updatedAt": now,
            "deletedAt": None,
        }
        self.files.append(meta)
        self._bytes[meta["id"]] = data
        return meta

    async def list_files(self, prefix: str | None, tags: list[str] | None) -> list[dict[str, Any]]:
        return [
            f
            for f in self.files
            if f["deletedAt"] is None
            and (not prefix or f["path"] == prefix or f["path"].startswith(prefix.rstrip("/") + "/"))
            and (not tags or any(t in f["tags"] for t in tags))
        ]

    def _file(self, file_id: str) -> dict[str, Any]:
        for f in self.files:
            if f["id"] == file_id and f["deletedAt"] is None:
                return f
        raise FileMissingError(f"no file {file_id!r} in this session")

    async def download_file(self, file_id: str, dest: Path | None) -> Path:
        meta = self._file(file_id)
        target = Path(meta["filename"]) if dest is None else dest
        await anyio.Path(target).write_bytes(self._bytes[file_id])
        return target

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        meta = self._file(file_id)
        meta["deletedAt"] = meta["updatedAt"] = utc_now_iso()
        return {"id": file_id, "deletedAt": meta["deletedAt"]}

    async def update_file(self, file_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        meta = self._file(file_id)
        meta.update(changes, updatedAt=utc_now_iso())
        return meta

    async def close(self, agent_stats: Mapping[str, Any], deadline: float | None = None) -> None:
        self.closed = True


class Captured:
    """What sessions opened inside :func:`capture` logged, by workspace and session name."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], MemorySink] = {}
        self._lock = threading.Lock()

    def sink(self, workspace: str, session: str) -> MemorySink:
        """The memory of one session (``KeyError`` if it was never opened)."""
        with self._lock:
            return self.sessions[workspace, session]

    def points(self, workspace: str, session: str, track: str) -> list[dict[str, Any]]:
        """The points of a track, in order."""
        return list(self.sink(workspace, session).tracks.get(track, []))

    def logs(self, workspace: str, session: str) -> list[dict[str, Any]]:
        """The log entries, numbered, as ``logs.jsonl`` would hold them."""
        return list(self.sink(workspace, session).logs)

    def parameters(self, workspace: str, session: str) -> dict[str, Any]:
        """The parameters, flat."""
        return dict(self.sink(workspace, session).parameters)

    def _make(self, real: Sink, workspace: str, session: Mapping[str, Any]) -> Sink:
        with self._lock:
            # Sessions of one name opened again share their memory, as they would share storage.
            return self.sessions.setdefault((workspace, session["name"]), MemorySink(workspace, session))


@contextlib.contextmanager
def _overriding(make: Any) -> Iterator[None]:
    previous, _sinks.override = _sinks.override, make
    try:
        yield
    finally:
        _sinks.override = previous


@contextlib.contextmanager
def capture() -> Iterator[Captured]:
    """Sessions opened inside write to memory; returns what they logged (see module docstring)."""
    captured = Captured()
    with _overriding(captured._make):
        yield captured


class _Wrapped(Sink):
    """A real sink whose writes first pass :meth:`_gate`."""

    def __init__(self, real: Sink) -> None:
        self.real = real

    @property
    def intent(self) -> Callable[[str | None, int], None] | None:
        return self.real.intent

    @intent.setter
    def intent(self, value: Callable[[str | None, int], None] | None) -> None:
        self.real.intent = value

    async def stored_prefix(self, name: str | None, first: int, points: Sequence[dict[str, Any]]) -> int:
        return await self.real.stored_prefix(name, first, points)

    async def _gate(self) -> None:
        raise NotImplementedError

    async def open(self) -> None:
        await self.real.open()
        self.write_protected = self.real.write_protected

    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        await self._gate()
        await self.real.write_track(spec, points)

    async def write_logs(self, entries: Sequence[dict[str, Any]]) -> None:
        await self._gate()
        await self.real.write_logs(entries)

    async def write_parameters(self, deltas: Sequence[dict[str, Any]]) -> None:
        await self._gate()
        await self.real.write_parameters(deltas)

    async def run(self) -> None:
        await self.real.run()

    async def settle(self, names: Collection[str] | None) -> None:
        await self.real.settle(names)

    async def flushed(self) -> None:
        await self.real.flushed()

    def closing(self) -> None:
        self.real.closing()

    async def drain(self) -> None:
        await self.real.drain()

    def stats(self) -> dict[str, Any]:
        return self.real.stats()

    async def read_track(self, name: str, start_index: int, limit: int) -> dict[str, Any]:
        return await self.real.read_track(name, start_index, limit)

    async def track_stats(self, name: str) -> dict[str, Any]:
        return await self.real.track_stats(name)

    async def list_tracks(self) -> list[dict[str, Any]]:
        return await self.real.list_tracks()

    async def read_parameters(self) -> dict[str, Any]:
        return await self.real.read_parameters()

    async def save_file(self, request: FileRequest) -> dict[str, Any]:
        return await self.real.save_file(request)

    async def list_files(self, prefix: str | None, tags: list[str] | None) -> list[dict[str, Any]]:
        return await self.real.list_files(prefix, tags)

    async def download_file(self, file_id: str, dest: Path | None) -> Path:
        return await self.real.download_file(file_id, dest)

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        return await self.real.delete_file(file_id)

    async def update_file(self, file_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return await self.real.update_file(file_id, changes)

    async def close(self, agent_stats: Mapping[str, Any], deadline: float | None = None) -> None:
        await self.real.close(agent_stats, deadline)


class _Stalled(_Wrapped):
    def __init__(self, real: Sink, release: threading.Event) -> None:
        super().__init__(real)
        self._release = release

    async def _gate(self) -> None:
        await anyio.to_thread.run_sync(self._release.wait, abandon_on_cancel=True)


class _Failing(_Wrapped):
    def __init__(self, real: Sink, healed: threading.Event, error: BaseException) -> None:
        super().__init__(real)
        self._healed = healed
        self._error = error

    async def _gate(self) -> None:
        if not self._healed.is_set():
            raise self._error


@contextlib.contextmanager
def stalled() -> Iterator[threading.Event]:
    """Sessions opened inside write nothing until the returned event is set (a disk or server that
    stopped answering); their queues fill and ``on_full`` applies."""
    release = threading.Event()
    with _overriding(lambda real, workspace, session: _Stalled(real, release)):
        yield release
    release.set()


@contextlib.contextmanager
def failing(error: BaseException | None = None) -> Iterator[threading.Event]:
    """Writes of sessions opened inside raise ``error`` (default: disk full) until the returned
    event is set; the agent keeps the points, retries, and raises from ``flush()``/``close()``."""
    healed = threading.Event()
    error = error or OSError(errno.ENOSPC, "No space left on device")
    with _overriding(lambda real, workspace, session: _Failing(real, healed, error)):
        yield healed
