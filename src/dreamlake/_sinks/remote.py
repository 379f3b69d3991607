"""The remote sink: batches go to a local journal first, then to ``dreamlake serve`` over HTTP.

The agent's writes between two flushes are journaled as one group (see ``journal.py``); a sender
task (``sender.py``) ships sealed groups in order, one request each (``POST /sessions/{id}/batches``,
msgpack, zstd or gzip, ``Idempotency-Key: <writer>:<group>``), one at a time so every track keeps its
order, preparing the next while one is on the wire. A refusal for good is kept in the journal and
raised from the next ``flush()``/``close()``. A dead server never grows memory (the journal grows)
and never hangs ``close()``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import msgspec

from .._disk.filestore import check_download, download_target
from .._disk.jsonl import encode_points
from .._exceptions import ConfigError
from .._schema.levels import LEVEL, MESSAGE, TIMESTAMP
from .base import FileRequest, Sink, TrackSpec
from .journal import Journal, Kind, find_journals
from .sender import RemoteError, Sender, TokenRejected, legacy_token, sync_command

__all__ = ["RemoteError", "RemoteSink", "TokenRejected", "legacy_token", "sync_command"]

_ROTATE_BYTES = 64 * 1024 * 1024  # start a new journal once an acknowledged one is this big
# Journal appends (encoding, a write, maybe an fsync) run off the agent's loop, which is the caller's
# loop for an AsyncSession; abandoned only past close()'s deadline, as LocalSink's calls are.
_in_thread = functools.partial(anyio.to_thread.run_sync, abandon_on_cancel=True)


class RemoteSink(Sink):
    """Sends one session's data to a dreamlake server through a local journal."""

    def __init__(
        self,
        url: str,
        api_key: str,
        workspace: str,
        session: Mapping[str, Any],
        root: Path,
        fsync: bool = False,
        journal_bytes: int = 1024**3,
    ) -> None:
        self.url = url.rstrip("/")
        self.root = Path(root)
        self.workspace = workspace
        self._session = {
            "name": session["name"],
            **{k: session.get(k) for k in ("description", "tags", "folder", "metadata") if session.get(k)},
            **({"writeProtected": True} if session.get("write_protected") else {}),
        }
        self._api_key = api_key
        self._fsync = fsync
        self._journal_bytes = journal_bytes
        self._wake = anyio.Event()
        self._progress = anyio.Event()  # set whenever a group is acknowledged or refused
        self._refused: list[str] = []
        self._token_error: TokenRejected | None = None
        self._closing = False
        self._warned = False

    async def open(self) -> None:
        self.client = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self._api_key}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
        )
        self.journal = self._new_journal()
        self.sender = Sender(self.client, self.journal)
        self.write_protected = bool(self._session.get("writeProtected"))
        # One try, no retries: an unreachable server does not hold up open() (the session's creation
        # waits in the journal like everything else), but one that refuses the token fails it now.
        head = self.journal.header
        try:
            response = await self.client.post(
                f"/workspaces/{head['workspace']}/sessions", json=head["session"], timeout=5.0
            )
        except httpx.TransportError:
            return
        if response.status_code in (401, 403):
            self.journal.close()
            self.journal.path.unlink(missing_ok=True)
            await self.client.aclose()
            raise ConfigError(
                f"the dreamlake server at {self.url} refused this session: "
                f"{response.status_code} {response.text[:300]}"
            )
        if response.status_code < 400:
            session = response.json()["session"]
            self.sender.session_id = str(session["id"])
            self.write_protected = self.write_protected or bool(session.get("writeProtected"))

    def _new_journal(self) -> Journal:
        header = {"url": self.url, "workspace": self.workspace, "session": self._session, "pid": os.getpid()}
        return Journal.create(self.root / ".journal", header, self._fsync)

    async def run(self) -> None:
        """Send what dead runs of this session left, then sealed groups as they come, until cancelled."""
        await self._resume_orphans()
        ahead: tuple[int, tuple[bytes, dict[str, str]]] | None = None
        while True:
            groups = self.journal.sendable()
            if not groups:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            request = ahead[1] if ahead is not None and ahead[0] == groups[0] else None
            ahead = None
            failure: list[Exception] = []
            # The next group is read and compressed while this one is on the wire (sent in order,
            # one at a time, so every track keeps its order on the server).
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._post, groups[0], request, failure)
                if len(groups) > 1:
                    with contextlib.suppress(OSError):  # prepared again, and raised, when its turn comes
                        ahead = (groups[1], await anyio.to_thread.run_sync(self.sender.prepare, groups[1]))
            if failure and not isinstance(failure[0], RemoteError):
                # The journal could not be read (a disk error): not the server's fault, and nothing
                # to refuse. Say so once and try again a little later.
                self._warn_once(f"dreamlake: reading {self.journal.path} failed ({failure[0]}); retrying")
                await anyio.sleep(1)
                continue
            if failure and isinstance(failure[0], TokenRejected):
                self._token_error = failure[0]  # raised by drain(); retried at the next flush
                self._signal_progress()
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            if failure:  # refused for good; every refusal is also raised from flush()/close()
                self._refused.append(str(failure[0]))
                self._warn_once(f"dreamlake: {failure[0]}; the batch is kept in {self.journal.path}")
            self._token_error = None
            self._signal_progress()
            if self.journal.done and self.journal.size > _ROTATE_BYTES:
                self.journal.close(remove_if_done=True)
                self.journal = self.sender.journal = self._new_journal()

    async def _post(
        self, group: int, request: tuple[bytes, dict[str, str]] | None, failure: list[Exception]
    ) -> None:
        try:
            await self.sender.send(group, request)
        except (RemoteError, OSError) as exc:
            failure.append(exc)

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=1)

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def _resume_orphans(self) -> None:
        """Send, first, the journals of earlier runs of this session whose process died (what
        ``dreamlake sync`` would send), so their points keep their place before this run's."""
        mine = (self.url, self.workspace, self._session["name"])
        for path in find_journals(self.root):
            try:
                journal = None if path == self.journal.path else Journal.adopt(path)
            except (OSError, ValueError):
                continue  # damaged: left for `dreamlake sync`, which lists it
            if journal is None:
                continue
            try:
                head = journal.header
                if (head.get("url"), head.get("workspace"), head.get("session", {}).get("name")) == mine:
                    journal.seal_all()
                    sender = Sender(self.client, journal, warn=False)
                    for group in journal.sendable():
                        await sender.send(group)
            except RemoteError as exc:
                self._refused.append(f"{exc} (from {path})")
            finally:
                journal.close(remove_if_done=True)

    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        await self._room()
        await _in_thread(self._journal_track, spec, points)

    def _journal_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        # JSON lines, as the server stores them: it checks them but never decodes and re-encodes them.
        record: dict[str, Any] = {"name": spec.name, "lines": encode_points(points)}
        for key in ("description", "tags", "metadata"):
            value = getattr(spec, key)
            if value is not None:
                record[key] = value
        self.journal.add(Kind.TRACK, record)

    async def write_logs(self, entries: Sequence[dict[str, Any]]) -> None:
        await self._room()
        records = []
        for queued in entries:
            entry: dict[Any, Any] = queued  # its own fields are under the int keys of _schema.levels
            metadata = {k: v for k, v in entry.items() if not isinstance(k, int)}
            record = {"timestamp": entry[TIMESTAMP], "level": entry[LEVEL], "message": entry[MESSAGE]}
            records.append({**record, "metadata": metadata} if metadata else record)
        await _in_thread(self.journal.add, Kind.LOGS, records)

    async def write_parameters(self, deltas: Sequence[dict[str, Any]]) -> None:
        await _in_thread(self.journal.add, Kind.PARAMS, list(deltas))

    async def _room(self) -> None:
        # Past the bound the agent's write waits, so the queue fills and on_full applies; at close
        # the bound is lifted, so what was accepted reaches the journal rather than being lost.
        while self.journal.size > self._journal_bytes and not self._closing:
            if not self.journal.sendable():
                # One flush alone went past the bound (a backlog taken at once): seal what it wrote
                # so far, so that it can be sent and this wait can end.
                if self.journal.seal() is None:
                    return
                self._wake.set()
            await self._progress.wait()

    def closing(self) -> None:
        self._closing = True
        self._signal_progress()

    async def flushed(self) -> None:
        self.journal.seal()
        if self.journal.sendable():
            self._wake.set()

    async def drain(self) -> None:
        """Wait until the server acknowledged every sealed group; raise refusals once."""
        while self.journal.sendable():
            if self._token_error is not None:
                points, logs = self.journal.unsent()
                raise TokenRejected(
                    f"{self._token_error}; {points} points and {logs} log entries are kept in "
                    f"{self.journal.path}: send them with a valid token: {sync_command(self.root, self.url)}",
                    401,
                )
            await self._progress.wait()
        if self._refused:
            reasons, self._refused = self._refused, []
            raise RemoteError(
                f"{len(reasons)} batch(es) were refused by the server and kept in {self.journal.path}: "
                + "; ".join(reasons[:3])
            )

    def stats(self) -> dict[str, Any]:
        points, logs = self.journal.unsent()
        return {
            "requests": self.sender.sent_requests,
            "retries": self.sender.retries,
            "unsentPoints": points,
            "unsentLogs": logs,
            "journalBytes": self.journal.size,
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
        """Send what is left until ``deadline`` (monotonic), then leave the rest in the journal."""
        try:
            with anyio.move_on_after(None if deadline is None else max(0.0, deadline - time.monotonic())):
                await self.drain()
        finally:
            points, logs = self.journal.unsent()
            if points or logs:
                why = self.sender.last_error or "the server did not answer in time"
                warnings.warn(
                    f"dreamlake could not send everything to {self.url} before close()'s deadline ({why}): "
                    f"{points} points and {logs} log entries are kept in {self.journal.path}; send them "
                    f"with: {sync_command(self.root, self.url)}",
                    RuntimeWarning,
                    stacklevel=1,
                )
            self.sender.quiet()  # what close() cuts short is not a failing server: one warning is enough
            self.journal.close(remove_if_done=True)
            await self.client.aclose()


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
