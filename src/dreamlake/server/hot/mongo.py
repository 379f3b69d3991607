"""The MongoDB hot tier (``--hot mongodb://host/db``), on pymongo's native asyncio client.

Only single-document atomic operations and unique indexes, never multi-document transactions (a
standalone mongod refuses them), so any deployment works and several servers can share one.

Collections (indexes created at start-up; creating an existing one again is a no-op):

- ``tokens``: ``{_id: hash, workspaces, read_only, created_at}``
- ``sessions``: ``{_id, workspace, name, fields: {name: JSON}, created_at, updated_at, next_log}``;
  unique ``(workspace, name)``
- ``tracks``: ``{_id, session, name, description, tags, metadata, total, chunked, created_at,
  updated_at, first_data_at, last_data_at, ready, lease_owner, lease_until}``; unique
  ``(session, name)``; ``ready`` marks a track holding a full chunk of hot points, for the archiver
- ``batches`` (points) and ``logs`` (entries): numbered documents, one per track (or log run)
  per request, blobs inline or in ``parts``; see ``mongo_numbered``
- ``parameters``: ``{_id: session id, version, data, created_at, updated_at, applied}``
- ``files``: ``{session, id, path, filename, deleted, seq, meta}``; unique ``(session, id)``
- ``ingests``: ``{_id: "session/key", result}``, the idempotency keys of finished requests

A request's parts (each track's points, its log entries, its parameter changes) are each one
atomic write tagged with the request's idempotency key, and the key is recorded as finished last:
a request cut short by a crash is completed, not doubled, by its retry. ``total`` is raised with
``$max`` after the points are stored, so it may lag a crash, never lead.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import msgspec
from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument, uri_parser
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure

from ..._schema.params import merge
from ..._schema.timestamps import utc_now_iso
from ..._schema.values import tag_nonfinite, untag_nonfinite
from ..errors import TierUnavailableError
from .base import Batch, Ingest, IngestResult, SessionRecord, Token, TrackRecord, TrackWrite
from .codec import dump, dump_optional, load
from .mongo_numbered import Numbered

if TYPE_CHECKING:
    from .base import HotTier

P = ParamSpec("P")
T = TypeVar("T")
Doc = dict[str, Any]

_APPLIED = 64  # idempotency keys remembered on the parameters document (replays come soon)
_DEFAULT_DB = "dreamlake"
_LOGS_PER_BLOB = 1000
_SELECTION_TIMEOUT_MS = 10_000  # how long a request waits for an unreachable database before 503

_LINE = msgspec.json.Encoder()
_ENTRY = msgspec.json.Decoder(dict[str, Any])


def _guarded(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn "MongoDB is unreachable" into :class:`TierUnavailableError` (a 503 the client retries)."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except ConnectionFailure as exc:
            raise TierUnavailableError(f"MongoDB is unreachable: {exc}") from exc

    return call


def _track(doc: Doc) -> TrackRecord:
    return TrackRecord(
        doc["_id"], doc["session"], doc["name"], doc.get("description"), load(doc["tags"]),
        load(doc.get("metadata")), doc["total"], doc["chunked"], doc["created_at"], doc["updated_at"],
        doc.get("first_data_at"), doc.get("last_data_at"),
    )  # fmt: skip


def _session(doc: Doc) -> SessionRecord:
    fields = {k: load(v) for k, v in doc["fields"].items()}
    return SessionRecord(
        doc["_id"], doc["workspace"], doc["name"], fields, doc["created_at"], doc["updated_at"]
    )


def _log_blobs(entries: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
    """Log entries as blobs of JSON lines, ``_LOGS_PER_BLOB`` at most (a read decodes one blob)."""
    return [
        (len(run), b"".join(_LINE.encode(tag_nonfinite(entry)) + b"\n" for entry in run))
        for run in (entries[i : i + _LOGS_PER_BLOB] for i in range(0, len(entries), _LOGS_PER_BLOB))
    ]


def _check_blobs(write: TrackWrite) -> int:
    """The number of points in ``write``; ValueError/TypeError as the SQLite tier raises them."""
    total = 0
    for count, blob in write.blobs:
        if type(count) is not int or count <= 0:
            raise ValueError(f"a batch of track {write.name!r} has count {count!r}; expected an int > 0")
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError(f"a batch of track {write.name!r} is {type(blob).__name__}, not bytes")
        total += count
    return total


class MongoHotTier:
    """The hot tier in the database named by ``url`` (``dreamlake`` if the URL names none)."""

    def __init__(self, url: str, chunk_size: int) -> None:
        self.url = url
        self._chunk_size = chunk_size
        options = uri_parser.parse_uri(url)
        self._db_name = options.get("database") or _DEFAULT_DB
        given = any(k.lower() == "serverselectiontimeoutms" for k in options["options"])
        self._selection_ms = None if given else _SELECTION_TIMEOUT_MS
        self._client: AsyncMongoClient[Doc] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, check the database answers, and create the indexes that are missing."""
        if self._client is None:
            if self._selection_ms is None:
                self._client = AsyncMongoClient(self.url)
            else:
                self._client = AsyncMongoClient(self.url, serverSelectionTimeoutMS=self._selection_ms)
        db = self._client[self._db_name]
        self._tokens, self._sessions, self._tracks = db["tokens"], db["sessions"], db["tracks"]
        self._batches, self._logs = Numbered(db["batches"], db["parts"]), Numbered(db["logs"], db["parts"])
        self._parameters, self._files, self._ingests = db["parameters"], db["files"], db["ingests"]
        try:
            await self._sessions.create_index([("workspace", ASCENDING), ("name", ASCENDING)], unique=True)
            await self._tracks.create_index([("session", ASCENDING), ("name", ASCENDING)], unique=True)
            await self._tracks.create_index("ready", sparse=True)
            await self._batches.create_indexes()
            await self._logs.create_indexes()
            await self._files.create_index([("session", ASCENDING), ("id", ASCENDING)], unique=True)
            await self._files.create_index([("session", ASCENDING), ("seq", ASCENDING)])
        except ConnectionFailure as exc:
            raise TierUnavailableError(f"cannot reach MongoDB at {self._hosts()}: {exc}") from None
        except OperationFailure as exc:  # e.g. bad credentials (code 18) or no rights on the database
            raise TierUnavailableError(
                f"MongoDB at {self._hosts()} refused to set up database {self._db_name!r}: {exc}"
            ) from None

    def _hosts(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in uri_parser.parse_uri(self.url)["nodelist"])

    async def stop(self) -> None:
        """Close the client; the tier may be started again."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- tokens and sessions ---------------------------------------------------------------------

    @_guarded
    async def add_token(self, token: Token) -> None:
        """Store a token (its hash); storing the same hash again replaces it."""
        doc = {
            "workspaces": list(token.workspaces),
            "read_only": token.read_only,
            "created_at": token.created_at,
        }
        await self._tokens.replace_one({"_id": token.token_hash}, doc, upsert=True)

    @_guarded
    async def find_token(self, token_hash: str) -> Token | None:
        """The token with this hash, if any."""
        doc = await self._tokens.find_one({"_id": token_hash})
        if doc is None:
            return None
        return Token(token_hash, tuple(doc["workspaces"]), doc["read_only"], doc["created_at"])

    @_guarded
    async def upsert_session(
        self, workspace: str, name: str, fields: Mapping[str, Any], create: bool
    ) -> SessionRecord | None:
        """Create the session or set its given non-None ``fields`` (each field one ``$set``, so two
        servers updating different fields both win); with ``create=False`` only look it up."""
        given = {k: v for k, v in fields.items() if v is not None}
        doc = await self._sessions.find_one({"workspace": workspace, "name": name})
        if not create:
            return None if doc is None else _session(doc)
        if doc is None:
            now = utc_now_iso()
            record = SessionRecord(secrets.token_hex(8), workspace, name, given, now, now)
            new = {
                "_id": record.id,
                "workspace": workspace,
                "name": name,
                "created_at": now,
                "updated_at": now,
            }
            try:
                await self._sessions.insert_one({**new, "fields": {k: dump(v) for k, v in given.items()}})
                return record
            except DuplicateKeyError:  # another request created it first: update that one
                doc = await self._sessions.find_one({"workspace": workspace, "name": name})
                assert doc is not None
        stored = _session(doc)
        merged = {**stored.fields, **given}
        if merged == stored.fields:
            return stored
        now = utc_now_iso()
        changes = {f"fields.{k}": dump(v) for k, v in given.items()}  # fixed names from the routes
        await self._sessions.update_one({"_id": stored.id}, {"$set": {**changes, "updated_at": now}})
        return SessionRecord(stored.id, workspace, name, merged, stored.created_at, now)

    @_guarded
    async def get_session(self, session_id: str) -> SessionRecord | None:
        """A session by id."""
        doc = await self._sessions.find_one({"_id": session_id})
        return None if doc is None else _session(doc)

    # -- ingest ----------------------------------------------------------------------------------

    @_guarded
    async def ingest(self, session_id: str, key: str | None, ingest: Ingest) -> IngestResult:
        """Store ``ingest`` (see :class:`~.base.HotTier`). Each part (a track's points, the log
        entries, the parameter changes) is one atomic write tagged with the request's key; the key
        is recorded as finished last. A request cut short by a crash is completed, not doubled, by
        its retry; until then the parts it stored are visible."""
        tag = f"{session_id}/{key}" if key is not None else f"~{ObjectId()}"  # keyless: its own tag
        if key is not None:
            done = await self._ingests.find_one({"_id": tag})
            if done is not None:
                first = done["result"]
                first["tracks"] = [tuple(t) for t in first["tracks"]]
                return IngestResult(**{**first, "repeat": True})
        session = await self._sessions.find_one({"_id": session_id}, {"next_log": 1})
        if session is None:
            raise KeyError(f"no session with id {session_id!r}")
        counts = [_check_blobs(write) for write in ingest.tracks]  # before anything is stored
        now = utc_now_iso()
        tracks = [
            # Tagged per write: one request may write a track twice.
            await self._write_track(session_id, write, count, f"{tag}#{i}", now)
            for i, (write, count) in enumerate(zip(ingest.tracks, counts, strict=True))
        ]
        log_start = log_end = session.get("next_log", 0)
        if ingest.logs:
            log_start = await self._logs.reserve(session_id, log_start, _log_blobs(ingest.logs), tag, now)
            log_end = log_start + len(ingest.logs)
            await self._sessions.update_one({"_id": session_id}, {"$max": {"next_log": log_end}})
        version = None
        if ingest.parameters:
            version = await self._merge_parameters(session_id, tag, ingest.parameters, now)
        result = IngestResult(tracks, log_start, log_end, version)
        if key is not None:
            await self._ingests.update_one(
                {"_id": tag}, {"$set": {"result": dataclasses.asdict(result), "created_at": now}}, upsert=True
            )
        return result

    async def _write_track(
        self, session_id: str, write: TrackWrite, count: int, tag: str, now: str
    ) -> tuple[str, int, int]:
        track = await self._tracks.find_one({"session": session_id, "name": write.name})
        if track is None:
            track = await self._create_track(session_id, write.name, now)
        changes: Doc = {
            field: value
            for field, value in (
                ("description", write.description),
                ("tags", dump_optional(write.tags)),
                ("metadata", dump_optional(write.metadata)),
            )
            if value is not None
        }
        if count == 0:
            if changes:
                await self._tracks.update_one({"_id": track["_id"]}, {"$set": {**changes, "updated_at": now}})
            return track["_id"], track["total"], track["total"]
        start = await self._batches.reserve(track["_id"], track["total"], write.blobs, tag, now)
        after = await self._tracks.find_one_and_update(
            {"_id": track["_id"]},
            {
                "$set": {**changes, "updated_at": now},
                "$max": {"total": start + count, "last_data_at": now},
                "$min": {"first_data_at": now},
            },
            projection={"total": 1, "chunked": 1, "ready": 1},
            return_document=ReturnDocument.AFTER,
        )
        assert after is not None  # tracks are never deleted
        if after["total"] - after["chunked"] >= self._chunk_size and not after.get("ready"):
            await self._tracks.update_one({"_id": track["_id"]}, {"$set": {"ready": True}})
        return track["_id"], start, start + count

    async def _create_track(self, session_id: str, name: str, now: str) -> Doc:
        doc: Doc = {
            "_id": secrets.token_hex(8), "session": session_id, "name": name, "description": None,
            "tags": dump([]), "metadata": None, "total": 0, "chunked": 0, "created_at": now,
            "updated_at": now,
        }  # fmt: skip
        try:
            await self._tracks.insert_one(doc)
            return doc
        except DuplicateKeyError:  # created by another request meanwhile
            found = await self._tracks.find_one({"session": session_id, "name": name})
            assert found is not None
            return found

    async def _merge_parameters(
        self, session_id: str, tag: str, deltas: list[dict[str, Any]], now: str
    ) -> int:
        """Merge with a compare-and-swap on ``version``; a key already applied returns its version."""
        while True:
            doc = await self._parameters.find_one({"_id": session_id})
            if doc is None:
                version, data, created, applied = 0, {}, now, []
            else:
                for done, at in doc["applied"]:
                    if done == tag:
                        return int(at)
                version, data, created, applied = (
                    doc["version"],
                    load(doc["data"]),
                    doc["created_at"],
                    doc["applied"],
                )
            merge(data, deltas)
            version += len(deltas)
            if not tag.startswith("~"):
                applied = [*applied, [tag, version]][-_APPLIED:]
            new = {
                "version": version,
                "data": dump(data),
                "created_at": created,
                "updated_at": now,
                "applied": applied,
            }
            if doc is None:
                try:
                    await self._parameters.insert_one({"_id": session_id, **new})
                    return version
                except DuplicateKeyError:
                    continue
            if (
                await self._parameters.replace_one({"_id": session_id, "version": doc["version"]}, new)
            ).matched_count:
                return version

    # -- reads -----------------------------------------------------------------------------------

    @_guarded
    async def get_track(self, session_id: str, name: str) -> TrackRecord | None:
        """A track by name."""
        doc = await self._tracks.find_one({"session": session_id, "name": name})
        return None if doc is None else _track(doc)

    @_guarded
    async def list_tracks(self, session_id: str) -> list[TrackRecord]:
        """Every track of a session, by name."""
        return [
            _track(doc) async for doc in self._tracks.find({"session": session_id}).sort("name", ASCENDING)
        ]

    @_guarded
    async def read_batches(self, track_id: str, start: int, end: int) -> list[Batch]:
        """The stored batches holding any point of ``[start, end)``, in index order."""
        return [Batch(*found) for found in await self._batches.read(track_id, start, end)]

    @_guarded
    async def read_logs(self, session_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        """Log entries ``sequenceNumber`` ``start..start+limit-1``; ``metadata`` only where stored."""
        end = start + limit
        out: list[dict[str, Any]] = []
        for first, count, blob, _ in await self._logs.read(session_id, start, end):
            lines = blob.split(b"\n")
            lo = max(start, first)
            for seq, line in enumerate(lines[lo - first : min(end, first + count) - first], lo):
                out.append({"sequenceNumber": seq, **untag_nonfinite(_ENTRY.decode(line))})
        return out

    @_guarded
    async def get_parameters(self, session_id: str) -> dict[str, Any] | None:
        """``{"version", "data", "createdAt", "updatedAt"}`` (``data`` flat) or None if never set."""
        doc = await self._parameters.find_one({"_id": session_id})
        if doc is None:
            return None
        return {"version": doc["version"], "data": load(doc["data"]), "createdAt": doc["created_at"],
                "updatedAt": doc["updated_at"]}  # fmt: skip

    # -- files -----------------------------------------------------------------------------------

    @_guarded
    async def put_file(self, session_id: str, meta: Mapping[str, Any]) -> dict[str, Any] | None:
        """Index a file (``meta["id"]`` is its id); a non-deleted entry with the same ``path`` and
        ``filename`` is replaced in its place in the listing, and its metadata returned."""
        entry = dict(meta)
        fields = {"id": entry["id"], "path": entry.get("path"), "filename": entry.get("filename"),
                  "deleted": entry.get("deletedAt") is not None, "meta": dump(entry)}  # fmt: skip
        same = {
            "session": session_id,
            "path": fields["path"],
            "filename": fields["filename"],
            "deleted": False,
        }
        old = [doc async for doc in self._files.find(same).sort("seq", ASCENDING)]
        if not old:
            await self._files.insert_one({"session": session_id, "seq": ObjectId(), **fields})
            return None
        if len(old) > 1:
            await self._files.delete_many({"_id": {"$in": [doc["_id"] for doc in old[1:]]}})
        await self._files.update_one({"_id": old[0]["_id"]}, {"$set": fields})
        replaced: dict[str, Any] = load(old[0]["meta"])
        return replaced

    @_guarded
    async def list_files(self, session_id: str) -> list[dict[str, Any]]:
        """Every file entry of a session, deleted ones included, in listing order."""
        return [
            load(doc["meta"])
            async for doc in self._files.find({"session": session_id}).sort("seq", ASCENDING)
        ]

    @_guarded
    async def update_file(
        self, session_id: str, file_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge ``changes`` into a file entry and return it; None if there is none."""
        doc = await self._files.find_one({"session": session_id, "id": file_id})
        if doc is None:
            return None
        entry: dict[str, Any] = {**load(doc["meta"]), **changes}
        fields = {"path": entry.get("path"), "filename": entry.get("filename"),
                  "deleted": entry.get("deletedAt") is not None, "meta": dump(entry)}  # fmt: skip
        await self._files.update_one({"_id": doc["_id"]}, {"$set": fields})
        return entry

    # -- archiving -------------------------------------------------------------------------------

    @_guarded
    async def tracks_to_archive(self, chunk_size: int, limit: int) -> list[TrackRecord]:
        """Up to ``limit`` tracks holding ``chunk_size`` hot points, most behind first, among those
        marked ``ready`` (which are all of them when ``chunk_size`` is at least the tier's own)."""
        tracks = [_track(doc) async for doc in self._tracks.find({"ready": True})]
        full = [t for t in tracks if t.total - t.chunked >= chunk_size]
        return sorted(full, key=lambda t: t.chunked - t.total)[:limit]

    @_guarded
    async def lease_track(self, track_id: str, owner: str, seconds: float) -> bool:
        """Take or renew the track's archiving lease (a conditional update on the track document;
        the servers' clocks need only agree to well within ``seconds``)."""
        now = time.time()
        free = [{"lease_until": {"$exists": False}}, {"lease_until": {"$lt": now}}, {"lease_owner": owner}]
        taken = await self._tracks.update_one(
            {"_id": track_id, "$or": free}, {"$set": {"lease_owner": owner, "lease_until": now + seconds}}
        )
        return taken.matched_count == 1

    @_guarded
    async def chunk_archived(self, track_id: str, chunk_index: int, chunk_size: int, count: int = 1) -> bool:
        """Record chunks ``chunk_index .. chunk_index+count-1`` as archived (a conditional update of
        ``chunked``), then drop the batches wholly inside the archived range; False (nothing changed)
        unless they are the track's next chunks and are full."""
        first, end = chunk_index * chunk_size, (chunk_index + count) * chunk_size
        moved = await self._tracks.update_one(
            {"_id": track_id, "chunked": first, "total": {"$gte": end}}, {"$set": {"chunked": end}}
        )
        if moved.modified_count == 0:
            return False
        await self._batches.drop_below(track_id, end, self._unfinished)
        await self._tracks.update_one(
            {"_id": track_id, "chunked": end, "total": {"$lt": end + chunk_size}}, {"$unset": {"ready": ""}}
        )
        return True

    async def _unfinished(self, tags: list[str]) -> set[str]:
        """Which of these tags belong to keyed requests not yet finished (a crash cut them short,
        or they are still running): their documents must stay findable for the retry."""
        # A tag is "<session>/<key>#<write>"; a keyless request's has no "/".
        keyed = {tag: tag.rpartition("#")[0] for tag in tags if "/" in tag}
        if not keyed:
            return set()
        query = {"_id": {"$in": list(set(keyed.values()))}, "result": {"$exists": True}}
        finished = {d["_id"] async for d in self._ingests.find(query, {"_id": 1})}
        return {tag for tag, key in keyed.items() if key not in finished}


if TYPE_CHECKING:

    def _conforms(tier: MongoHotTier) -> HotTier:
        return tier


__all__ = ["MongoHotTier"]
