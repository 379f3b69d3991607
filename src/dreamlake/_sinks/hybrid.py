"""Hybrid mode: the local directory and the server both get everything; reads come from the server."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import FileRequest, Sink, SpoolFile, TrackSpec
from .local import LocalSink
from .outbox import Outbox
from .remote import RemoteSink


class HybridSink(Sink):
    """Writes go to both sinks (local first: it is the copy that never waits on a network)."""

    def __init__(self, local: LocalSink, remote: RemoteSink) -> None:
        self.local = local
        self.remote = remote

    @property
    def intent(self) -> Callable[[str | None, int], None] | None:
        return self.local.intent

    @intent.setter
    def intent(self, value: Callable[[str | None, int], None] | None) -> None:
        self.local.intent = value  # the local copy numbers points; the server dedups by batch key

    async def stored_prefix(self, name: str | None, first: int, points: Sequence[dict[str, Any]]) -> int:
        return await self.local.stored_prefix(name, first, points)

    acks_later = True

    @property
    def local_files(self) -> Sink | None:
        return self.local

    @property
    def identity(self) -> dict[str, Any]:
        return {**self.remote.identity, "local": True}

    def attach_spool(self, spool: SpoolFile, on_acked: Callable[[dict[int, int]], None]) -> None:
        self.remote.attach_spool(spool, on_acked)

    def handed(self, track_id: int, end: int) -> None:
        self.remote.handed(track_id, end)

    def adopt(
        self, outbox: Outbox, identity: Mapping[str, Any], where: str, finish: Callable[[], None]
    ) -> None:
        self.remote.adopt(outbox, identity, where, finish)

    async def open(self) -> None:
        await self.local.open()
        await self.remote.open()
        self.write_protected = self.local.write_protected or self.remote.write_protected

    async def run(self) -> None:
        await self.remote.run()

    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        await self.local.write_track(spec, points)
        await self.remote.write_track(spec, points)

    async def settle(self, names: Collection[str] | None) -> None:
        await self.local.settle(names)

    async def write_logs(self, entries: Sequence[dict[str, Any]]) -> None:
        await self.local.write_logs(entries)
        await self.remote.write_logs(entries)

    async def write_parameters(self, deltas: Sequence[dict[str, Any]]) -> None:
        await self.local.write_parameters(deltas)
        await self.remote.write_parameters(deltas)

    async def flushed(self) -> None:
        await self.remote.flushed()

    def last_writes(self) -> None:
        self.local.last_writes()

    def closing(self) -> None:
        self.remote.closing()

    async def drain(self) -> None:
        await self.remote.drain()

    def stats(self) -> dict[str, Any]:
        return self.remote.stats()

    async def read_track(self, name: str, start_index: int, limit: int) -> dict[str, Any]:
        return await self.remote.read_track(name, start_index, limit)

    async def track_stats(self, name: str) -> dict[str, Any]:
        return await self.remote.track_stats(name)

    async def list_tracks(self) -> list[dict[str, Any]]:
        return await self.remote.list_tracks()

    async def read_parameters(self) -> dict[str, Any]:
        return await self.remote.read_parameters()

    async def save_file(self, request: FileRequest) -> dict[str, Any]:
        await self.local.save_file(request)
        return await self.remote.save_file(request)

    async def list_files(self, prefix: str | None, tags: list[str] | None) -> list[dict[str, Any]]:
        return await self.remote.list_files(prefix, tags)

    async def download_file(self, file_id: str, dest: Path | None) -> Path:
        return await self.remote.download_file(file_id, dest)

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        return await self.remote.delete_file(file_id)

    async def update_file(self, file_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return await self.remote.update_file(file_id, changes)

    async def close(self, agent_stats: Mapping[str, Any], deadline: float | None = None) -> None:
        try:
            await self.local.close(agent_stats)
        finally:
            await self.remote.close(agent_stats, deadline)
