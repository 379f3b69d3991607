"""The remote sink: batches go to ``dreamlake serve`` over HTTP, while their points wait in the spool.

The agent's writes between two flushes form one batch (``outbox.py``); a sender task (``sender.py``)
ships sealed batches in order, one request each (``POST /sessions/{id}/batches``, msgpack, zstd or
gzip, ``Idempotency-Key: <writer>:<number>``), one at a time so every track keeps its order,
preparing the next while one is on the wire. Points leave the spool (the journal: kill -9 loses
none) only once the server acknowledged them. A refusal for good is moved aside and raised from the
next ``flush()``/``close()``. A dead server grows neither memory nor disk past the spool's bound
(then ``on_full`` applies) and never hangs ``close()``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import msgspec

from .._disk.filestore import check_download, download_target
from .._exceptions import ConfigError
from .base import FileRequest, Sink, SpoolFile, TrackSpec
from .outbox import Batch, Outbox
from .sender import RemoteError, Sender, TokenRejected, legacy_token, sync_command

__all__ = ["RemoteError", "RemoteSink", "TokenRejected", "legacy_token", "sync_command"]

# Encoding a batch's points runs off the agent's loop, which is the caller's loop for an
# AsyncSession; abandoned only past close()'s deadline, as LocalSink's calls are.
_in_thread = functools.partial(anyio.to_thread.run_sync, abandon_on_cancel=True)


class RemoteSink(Sink):
    """Sends one session's data to a dreamlake server."""

    acks_later = True

    def __init__(
        self,
        url: str,
        api_key: str,
        workspace: str,
        session: Mapping[str, Any],
        root: Path,
        fsync: bool = False,
        max_unsent_bytes: int = 64 << 20,
        batch_points: int = 50_000,
    ) -> None:
        self.url = url.rstrip("/")
        self.root = Path(root)
        self.workspace = workspace
        self.session = {
            "name": session["name"],
            **{k: session.get(k) for k in ("description", "tags", "folder", "metadata") if session.get(k)},
            **({"writeProtected": True} if session.get("write_protected") else {}),
        }
        self._api_key = api_key
        self._fsync = fsync
        self._max_unsent = max_unsent_bytes
        self._batch_points = batch_points
        self._spool: SpoolFile | None = None
        self._orphans: list[tuple[Sender, Callable[[], None]]] = []  # dead runs' leftovers, sent first
        self._wake = anyio.Event()
        self._progress = anyio.Event()  # set whenever a batch is acknowledged or refused
        self._refused: list[str] = []
        self._token_error: TokenRejected | None = None
        self._closing = False
        self._warned = False

    @property
    def local_files(self) -> Sink | None:
        return None

    @property
    def identity(self) -> dict[str, Any]:
        """What a spool of this sink's points records about where they go."""
        return {"url": self.url, "spec": self.session, "local": False}

    async def open(self) -> None:
        self.client = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self._api_key}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
        )
        self.outbox = Outbox(secrets.token_hex(8))
        head = {"workspace": self.workspace, "session": self.session}
        self.sender = Sender(self.client, self.outbox, head, self.root, "memory (no spool)")
        self.write_protected = bool(self.session.get("writeProtected"))
        # One try, no retries: an unreachable server does not hold up open() (the session's creation
        # waits like everything else), but one that refuses the token fails it now.
        try:
            response = await self.client.post(
                f"/workspaces/{self.workspace}/sessions", json=self.session, timeout=5.0
            )
        except httpx.TransportError:
            return
        if response.status_code in (401, 403):
            await self.client.aclose()
            raise ConfigError(
                f"the dreamlake server at {self.url} refused this session: "
                f"{response.status_code} {response.text[:300]}"
            )
        if response.status_code < 400:
            session = response.json()["session"]
            self.sender.session_id = str(session["id"])
            self.write_protected = self.write_protected or bool(session.get("writeProtected"))

    def attach_spool(self, spool: SpoolFile, on_acked: Callable[[dict[int, int]], None]) -> None:
        self._spool = spool
        self.outbox = self.sender.outbox = Outbox(spool.writer, spool.sending, on_acked)
        self.sender.where = str(spool.path)

    def adopt(
        self, outbox: Outbox, identity: Mapping[str, Any], where: str, finish: Callable[[], None]
    ) -> None:
        head = {"workspace": self.workspace, "session": identity.get("spec", self.session)}
        self._orphans.append((Sender(self.client, outbox, head, self.root, where, warn=False), finish))

    async def run(self) -> None:
        """Send what dead runs of this session left, then sealed batches as they come, until cancelled."""
        await self._send_orphans()
        ahead: tuple[Batch, tuple[bytes, dict[str, str]]] | None = None
        while True:
            batches = list(self.outbox.sealed)
            if not batches:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            request = ahead[1] if ahead is not None and ahead[0] is batches[0] else None
            ahead = None
            failure: list[Exception] = []
            # The next batch is encoded and compressed while this one is on the wire (sent in order,
            # one at a time, so every track keeps its order on the server).
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._post, batches[0], request, failure)
                if len(batches) > 1:
                    ahead = (batches[1], await anyio.to_thread.run_sync(self.sender.prepare, batches[1]))
            if failure and isinstance(failure[0], TokenRejected):
                self._token_error = failure[0]  # raised by drain(); retried at the next flush
                self._signal_progress()
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            if failure and not isinstance(failure[0], RemoteError):
                # Moving a refused batch aside failed (a disk error): it stays sendable; not the
                # server's fault. Say so once and try again a little later.
                self._warn_once(f"dreamlake: keeping a refused batch failed ({failure[0]}); retrying")
                await anyio.sleep(1)
                continue
            if failure:  # refused for good (recorded by _post); also raised from flush()/close()
                self._warn_once(f"dreamlake: {failure[0]}")
            self._token_error = None
            self._signal_progress()

    async def _post(
        self, batch: Batch, request: tuple[bytes, dict[str, str]] | None, failure: list[Exception]
    ) -> None:
        try:
            await self.sender.send(batch, request)
        except TokenRejected as exc:
            failure.append(exc)
        except RemoteError as exc:
            # Recorded before any checkpoint: the batch has just left the outbox, and a drain()
            # that saw the outbox empty must also see the refusal.
            self._refused.append(str(exc))
            failure.append(exc)
        except OSError as exc:
            failure.append(exc)

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=1)

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def _send_orphans(self) -> None:
        """Send, first, what earlier runs of this session left in their spools (what ``dreamlake
        sync`` would send), so their points keep their place before this run's."""
        while self._orphans:
            sender, finish = self._orphans[0]
            try:
                for batch in list(sender.outbox.sealed):
                    await sender.send(batch)
            except RemoteError as exc:
                self._refused.append(f"{exc} (from {sender.where})")
            finally:
                self._orphans.pop(0)
                finish()
            self._signal_progress()

    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        await self._room()
        extra = {k: v for k in ("description", "tags", "metadata") if (v := getattr(spec, k)) is not None}
        await _in_thread(self.outbox.open.add_track, spec.name, points, extra)

    async def write_logs(self, entries: Sequence[dict[str, Any]]) -> None:
        await self._room()
        self.outbox.open.add_logs(entries)

    async def write_parameters(self, deltas: Sequence[dict[str, Any]]) -> None:
        self.outbox.open.add_parameters(deltas)

    def handed(self, track_id: int, end: int) -> None:
        self.outbox.open.ends[track_id] = end

    async def _room(self) -> None:
        # Past the bound the agent's write waits, so the queue fills and on_full applies; at close
        # the bound is lifted, so what was accepted reaches the server or stays in the spool.
        while self.outbox.unsent()[2] > self._max_unsent and not self._closing:
            if not self.outbox.sealed:
                # One flush alone went past the bound (a backlog taken at once): seal what it
                # handed over so far, so that it can be sent and this wait can end.
                if self.outbox.seal() is None:
                    return
                self._wake.set()
            await self._progress.wait()

    def closing(self) -> None:
        self._closing = True
        self._signal_progress()

    async def flushed(self) -> None:
        if self.outbox.seal() is not None:
            if self._fsync and self._spool is not None:
                await _in_thread(self._spool.sync)  # durability "flush": the spool survives a machine crash
            self._wake.set()

    async def drain(self) -> None:
        """Wait until the server acknowledged every sealed batch; raise refusals once."""
        while self.outbox.sealed or self._orphans:
            if self._token_error is not None:
                points, logs, _ = self.outbox.unsent()
                raise TokenRejected(
                    f"{self._token_error}; {points} points and {logs} log entries wait in "
                    f"{self.sender.where}: send them with a valid token: {sync_command(self.root, self.url)}",
                    401,
                )
            await self._progress.wait()
        if self._refused:
            reasons, self._refused = self._refused, []
            raise RemoteError(
                f"{len(reasons)} batch(es) were refused by the server: " + "; ".join(reasons[:3])
            )

    def stats(self) -> dict[str, Any]:
        points, logs, size = self.outbox.unsent()
        return {
            "requests": self.sender.sent_requests,
            "retries": self.sender.retries,
            "unsentPoints": points,
            "unsentLogs": logs,
            "unsentBytes": size,
            "lastRemoteError": self.sender.last_error,
        }

    # Reads: the agent has flushed and drained first, so they see everything appended before.

    def _track_url(self, session_id: str, name: str, what: str) -> str:
        return f"/sessions/{session_id}/tracks/{quote(name, safe='')}/{what}"

    async def _get(self, url: str, **params: Any) -> Any:
        response = await self.sender._request("GET", url, params=params)
        return response.json()

    async def read_track(self, name: str, start_index: int, limit: int) -> dict[str, Any]:
        sid = await self.sender.session()
        out: dict[str, Any] = await self._get(
            self._track_url(sid, name, "data"), startIndex=start_index, limit=limit
        )
        for point in out["data"]:
            point.pop("createdAt", None)  # as local mode returns points
        return out

    async def track_stats(self, name: str) -> dict[str, Any]:
        sid = await self.sender.session()
        try:
            stats: dict[str, Any] = await self._get(self._track_url(sid, name, "stats"))
        except RemoteError as exc:
            if exc.status != 404:
                raise
            await self.write_track(TrackSpec(name), [])  # as local mode: stats create the track
            await self.flushed()
            await self.drain()
            stats = await self._get(self._track_url(sid, name, "stats"))
        for key in ("totalDataPoints", "bufferedDataPoints", "chunkedDataPoints"):
            stats[key] = int(stats[key])
        return stats

    async def list_tracks(self) -> list[dict[str, Any]]:
        sid = await self.sender.session()
        tracks: list[dict[str, Any]] = (await self._get(f"/sessions/{sid}/tracks"))["tracks"]
        for track in tracks:
            track["totalDataPoints"] = int(track["totalDataPoints"])
        return tracks

    async def read_parameters(self) -> dict[str, Any]:
        sid = await self.sender.session()
        try:
            doc = await self._get(f"/sessions/{sid}/parameters")
        except RemoteError as exc:
            if exc.status == 404:
                return {}
            raise
        data: dict[str, Any] = doc["data"]
        return data

    async def save_file(self, request: FileRequest) -> dict[str, Any]:
        sid = await self.sender.session()
        checksum, size = await anyio.to_thread.run_sync(_sha256, request.source)
        data = {"prefix": request.prefix, "checksum": checksum, "sizeBytes": str(size)}
        if request.description:
            data["description"] = request.description
        if request.tags:
            data["tags"] = ",".join(request.tags)
        if request.metadata:
            data["metadata"] = msgspec.json.encode(request.metadata).decode()
        with request.source.open("rb") as source:  # httpx streams it in chunks
            response = await self.sender._request(
                "POST", f"/sessions/{sid}/files", files={"file": (request.source.name, source)}, data=data
            )
        saved: dict[str, Any] = response.json()
        return saved

    async def list_files(self, prefix: str | None, tags: list[str] | None) -> list[dict[str, Any]]:
        sid = await self.sender.session()
        params = {k: v for k, v in (("prefix", prefix), ("tags", ",".join(tags or []))) if v}
        files: list[dict[str, Any]] = (await self._get(f"/sessions/{sid}/files", **params))["files"]
        return files

    async def download_file(self, file_id: str, dest: Path | None) -> Path:
        sid = await self.sender.session()
        meta = await self._get(f"/sessions/{sid}/files/{file_id}")
        target, tmp = download_target(meta["filename"], dest)
        digest = hashlib.sha256()
        try:
            async with self.client.stream("GET", f"/sessions/{sid}/files/{file_id}/download") as response:
                if response.status_code >= 400:
                    raise RemoteError(f"download of {file_id} failed: HTTP {response.status_code}")
                with tmp.open("wb") as out:
                    async for chunk in response.aiter_bytes(1 << 20):
                        digest.update(chunk)
                        await anyio.to_thread.run_sync(out.write, chunk)
            check_download(meta, digest.hexdigest())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        sid = await self.sender.session()
        response = await self.sender._request("DELETE", f"/sessions/{sid}/files/{file_id}")
        out: dict[str, Any] = response.json()
        return out

    async def update_file(self, file_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        sid = await self.sender.session()
        response = await self.sender._request("PATCH", f"/sessions/{sid}/files/{file_id}", json=dict(changes))
        out: dict[str, Any] = response.json()
        return out

    async def close(self, agent_stats: Mapping[str, Any], deadline: float | None = None) -> None:
        """Send what is left until ``deadline`` (monotonic), then leave the rest in the spool."""
        try:
            with anyio.move_on_after(None if deadline is None else max(0.0, deadline - time.monotonic())):
                await self.drain()
        finally:
            points, logs, _ = self.outbox.unsent()
            if points or logs:
                why = self.sender.last_error or "the server did not answer in time"
                kept = (
                    f"are kept in {self._spool.path}; send them with: {sync_command(self.root, self.url)}"
                    if self._spool is not None
                    else "are lost (this session has no spool)"
                )
                warnings.warn(
                    f"dreamlake could not send everything to {self.url} before close()'s deadline ({why}): "
                    f"{points} points and {logs} log entries {kept}",
                    RuntimeWarning,
                    stacklevel=1,
                )
            self.sender.quiet()  # what close() cuts short is not a failing server: one warning is enough
            for _, finish in self._orphans:
                finish()  # what is left in it is sent next time
            self._orphans.clear()
            await self.client.aclose()


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
