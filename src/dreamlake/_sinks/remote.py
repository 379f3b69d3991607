"""The remote sink: batches go to a local journal first, then to ``dreamlake serve`` over HTTP.

The agent's writes between two flushes are journaled as one group (see ``journal.py``); a sender
task ships sealed groups in order, one request each (``POST /sessions/{id}/batches``, msgpack,
gzip, ``Idempotency-Key: <writer>:<group>``), one at a time so every track keeps its order, and
marks each acknowledged. Connection errors, timeouts, 5xx, 408 and 429 are retried with
exponential backoff and jitter, honouring ``Retry-After``; any other 4xx refuses the group for
good: it stays in the journal, marked, and is raised from the next ``flush()``/``close()``.
A dead server never grows memory (the journal grows) and never hangs ``close()``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import random
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import jwt
import msgspec

from .._disk.filestore import check_download, download_target
from .._exceptions import ConfigError, StorageError
from .._schema.levels import LEVEL, MESSAGE, TIMESTAMP
from .._schema.wire import DEV_JWT_SECRET
from .base import FileRequest, Sink, TrackSpec
from .journal import Journal, Kind, find_journals

log = logging.getLogger("dreamlake")

_ENCODE = msgspec.msgpack.Encoder()
_RAW_LIST = msgspec.msgpack.Decoder(list[msgspec.Raw])
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_BACKOFF_FIRST, _BACKOFF_MAX = 0.2, 10.0  # seconds
_ROTATE_BYTES = 64 * 1024 * 1024  # start a new journal once an acknowledged one is this big
_COMPRESS_ABOVE = 16 * 1024  # bytes; smaller bodies go as they are
# Journal appends (encoding, a write, maybe an fsync) run off the agent's loop, which is the caller's
# loop for an AsyncSession; abandoned only past close()'s deadline, as LocalSink's calls are.
_in_thread = functools.partial(anyio.to_thread.run_sync, abandon_on_cancel=True)


class RemoteError(StorageError):
    """The server refused a request for good (``status`` is its HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TokenRejected(RemoteError):
    """The server does not accept the token (401): batches stay sendable with another token."""


def legacy_token(user_name: str) -> str:
    """The token dreamlake 0.2.x makes from ``user_name`` (same claims, same placeholder secret):
    accepted only by a ``dreamlake serve --dev`` server."""
    user_id = str(int(hashlib.sha256(user_name.encode()).hexdigest()[:16], 16))[:10]
    now = int(time.time())
    claims = {"userId": user_id, "userName": user_name, "iat": now, "exp": now + 30 * 24 * 3600}
    return jwt.encode(claims, DEV_JWT_SECRET, algorithm="HS256")


def sync_command(root: Path, url: str) -> str:
    """The command that sends what a journal under ``root`` still holds."""
    return f"dreamlake sync --local-path {root} --remote {url}"


class Sender:
    """Sends one journal's sealed groups to the server, in order, until each is acknowledged."""

    def __init__(self, client: httpx.AsyncClient, journal: Journal, warn: bool = True) -> None:
        self.client = client
        self.journal = journal
        self._warned = not warn  # a failing server is warned about once; stats() shows the rest
        self.session_id: str | None = None
        self.sent_requests = 0
        self.retries = 0
        self.last_error: str | None = None

    def quiet(self) -> None:
        """Warn no more (the sink is closing and says itself what it leaves)."""
        self._warned = True

    async def session(self) -> str:
        """The server's id of the journal's session (created or updated on first use)."""
        if self.session_id is None:
            head = self.journal.header
            response = await self._request(
                "POST", f"/workspaces/{head['workspace']}/sessions", json=head["session"]
            )
            self.session_id = str(response.json()["session"]["id"])
        return self.session_id

    def prepare(self, group: int) -> tuple[bytes, dict[str, str]]:
        """The request for one sealed group: its journaled payloads spliced into one msgpack body
        (never decoded), compressed. Blocking: run it in a worker thread."""
        tracks: list[msgspec.Raw] = []
        logs: list[msgspec.Raw] = []
        parameters: list[msgspec.Raw] = []
        for kind, payload in self.journal.read(group):
            if kind is Kind.TRACK:
                tracks.append(payload)
            elif kind is Kind.LOGS:
                logs.extend(_RAW_LIST.decode(payload))
            elif kind is Kind.PARAMS:
                parameters.extend(_RAW_LIST.decode(payload))
        body = _ENCODE.encode({"tracks": tracks, "logs": logs, "parameters": parameters})
        headers = {"Content-Type": "application/msgpack", "Idempotency-Key": f"{self.journal.writer}:{group}"}
        if len(body) > _COMPRESS_ABOVE:
            body, headers["Content-Encoding"] = _compress(body)
        return body, headers

    async def send(self, group: int, request: tuple[bytes, dict[str, str]] | None = None) -> None:
        """Send one sealed group (``request``: what :meth:`prepare` made of it) until the server
        stores it, or refuses it for good."""
        if request is None:
            request = await anyio.to_thread.run_sync(self.prepare, group)
        body, headers = request
        session_id = await self.session()
        try:
            await self._request("POST", f"/sessions/{session_id}/batches", content=body, headers=headers)
        except TokenRejected:
            raise  # not the batch's fault: it stays in the journal, sendable
        except RemoteError as exc:
            self.journal.refuse(group, str(exc))
            raise
        self.journal.ack(group)
        self.sent_requests += 1

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried while the failure may pass; a refusal for good raises RemoteError."""
        delay = _BACKOFF_FIRST
        while True:
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.TransportError as exc:  # refused, reset, timed out: the server may come back
                wait = delay
                self.last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    self.last_error = None
                    return response
                if response.status_code not in _RETRY_STATUS:
                    status = response.status_code
                    kind = TokenRejected if status == 401 else RemoteError
                    raise kind(f"the server refused {method} {url}: {status} {response.text[:300]}", status)
                wait = _retry_after(response) or delay
                self.last_error = f"HTTP {response.status_code}"
            self.retries += 1
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"dreamlake: {self.client.base_url} failed ({self.last_error}); retrying with backoff. "
                    f"Nothing is lost: batches wait in {self.journal.path}",
                    RuntimeWarning,
                    stacklevel=1,
                )
            await anyio.sleep(wait * random.uniform(0.5, 1.0) if wait == delay else wait)
            delay = min(delay * 2, _BACKOFF_MAX)


def _compress(body: bytes) -> tuple[bytes, str]:
    """zstd (level 1) where the optional ``zstandard`` is installed, else gzip (level 1)."""
    try:
        import zstandard
    except ImportError:
        return gzip.compress(body, 1), "gzip"
    return zstandard.ZstdCompressor(level=1).compress(body), "zstd"


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    try:
        return min(max(float(raw), 0.0), 60.0)
    except ValueError:
        return None


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
            failure: list[RemoteError] = []
            # The next group is read and compressed while this one is on the wire (sent in order,
            # one at a time, so every track keeps its order on the server).
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._post, groups[0], request, failure)
                if len(groups) > 1:
                    ahead = (groups[1], await anyio.to_thread.run_sync(self.sender.prepare, groups[1]))
            if failure and isinstance(failure[0], TokenRejected):
                self._token_error = failure[0]  # raised by drain(); retried at the next flush
                self._signal_progress()
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            if failure:
                self._refused.append(str(failure[0]))
                if not self._warned:  # once; every refusal is also raised from flush()/close()
                    self._warned = True
                    warnings.warn(
                        f"dreamlake: {failure[0]}; the batch is kept in {self.journal.path}",
                        RuntimeWarning,
                        stacklevel=1,
                    )
            self._token_error = None
            self._signal_progress()
            if self.journal.done and self.journal.size > _ROTATE_BYTES:
                self.journal.close(remove_if_done=True)
                self.journal = self.sender.journal = self._new_journal()

    async def _post(
        self, group: int, request: tuple[bytes, dict[str, str]] | None, failure: list[RemoteError]
    ) -> None:
        try:
            await self.sender.send(group, request)
        except RemoteError as exc:
            failure.append(exc)

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
        record: dict[str, Any] = {"name": spec.name, "points": list(points)}
        for key in ("description", "tags", "metadata"):
            value = getattr(spec, key)
            if value is not None:
                record[key] = value
        await _in_thread(self.journal.add, Kind.TRACK, record)

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
        # Past the bound the agent's write waits, so the queue fills and on_full applies.
        while self.journal.size > self._journal_bytes and self.journal.sendable():
            await self._progress.wait()

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
