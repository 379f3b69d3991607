"""The embedded hot tier: one SQLite file in WAL mode, used through the stdlib ``sqlite3``.

Every write is one ``BEGIN IMMEDIATE`` transaction, so SQLite's write lock (not a lock in this
process) is what makes numbering atomic, and another process (``dreamlake token create``, a second
server) may share the file. Blocking calls run in worker threads: writes on one connection, taken
in turn under a ``threading.Lock``; reads on a small pool of read-only connections, which WAL lets
run beside the writer.

JSON columns hold NaN and ±Infinity in the tagged form of ``_schema.values`` (strict JSON), so they
come back exactly; file metadata is stored as given (the caller's dict), with its ``path``,
``filename`` and deleted state copied into columns for the replace rule of :meth:`put_file`.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread

from ..._schema.params import merge
from ..._schema.timestamps import utc_now_iso
from .base import Batch, Ingest, IngestResult, SessionRecord, Token, TrackRecord, TrackWrite
from .codec import dump as _dump
from .codec import dump_optional as _dump_optional
from .codec import load as _load

if TYPE_CHECKING:
    from .base import HotTier

T = TypeVar("T")
R = TypeVar("R")

# How long a write waits for another process's transaction before failing with "database is locked".
_BUSY_TIMEOUT_SECONDS = 30.0
_PAGE_SIZE = 16384  # bytes, for new databases
_CHECKPOINT_PAGES = 4096  # WAL pages between automatic checkpoints: 64 MB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens(
    token_hash TEXT PRIMARY KEY, workspaces TEXT NOT NULL, read_only INTEGER NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
    id TEXT PRIMARY KEY, workspace TEXT NOT NULL, name TEXT NOT NULL, fields TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    next_log INTEGER NOT NULL DEFAULT 0,  -- the session's next log sequence number
    UNIQUE(workspace, name));
CREATE TABLE IF NOT EXISTS tracks(
    id TEXT PRIMARY KEY, session_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
    tags TEXT NOT NULL, metadata TEXT, total INTEGER NOT NULL, chunked INTEGER NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, first_data_at TEXT, last_data_at TEXT,
    UNIQUE(session_id, name));
CREATE INDEX IF NOT EXISTS tracks_hot_points ON tracks(total - chunked);
CREATE TABLE IF NOT EXISTS batches(
    track_id TEXT NOT NULL, start INTEGER NOT NULL, count INTEGER NOT NULL, blob BLOB NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY(track_id, start));
CREATE TABLE IF NOT EXISTS logs(
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, timestamp TEXT NOT NULL, level TEXT NOT NULL,
    message TEXT NOT NULL, metadata TEXT, PRIMARY KEY(session_id, seq));
CREATE TABLE IF NOT EXISTS parameters(
    session_id TEXT PRIMARY KEY, version INTEGER NOT NULL, data TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    seq INTEGER PRIMARY KEY,  -- listing order; a replacement takes the replaced entry's place
    session_id TEXT NOT NULL, id TEXT NOT NULL, path TEXT, filename TEXT, deleted INTEGER NOT NULL,
    meta TEXT NOT NULL, UNIQUE(session_id, id));
CREATE TABLE IF NOT EXISTS leases(  -- who archives a track, until when (seconds since the epoch)
    track_id TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ingest_keys(
    session_id TEXT NOT NULL, key TEXT NOT NULL, result TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY(session_id, key));
"""

_SESSION_COLUMNS = "id, workspace, name, fields, created_at, updated_at"
_TRACK_COLUMNS = (
    "id, session_id, name, description, tags, metadata, total, chunked, created_at, updated_at, "
    "first_data_at, last_data_at"
)


def _track(row: tuple[Any, ...]) -> TrackRecord:
    tid, sid, name, description, tags, metadata, total, chunked, created, updated, first, last = row
    tags, metadata = _load(tags), _load(metadata)
    times = (created, updated, first, last)
    return TrackRecord(tid, sid, name, description, tags, metadata, total, chunked, *times)


def _session(row: tuple[Any, ...]) -> SessionRecord:
    sid, workspace, name, fields, created, updated = row
    return SessionRecord(sid, workspace, name, _load(fields), created, updated)


def _log_entry(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, timestamp, level, message, metadata = row
    entry = {"sequenceNumber": seq, "timestamp": timestamp, "level": level, "message": message}
    if metadata is not None:
        entry["metadata"] = _load(metadata)
    return entry


def _optional(make: Callable[[tuple[Any, ...]], R], row: tuple[Any, ...] | None) -> R | None:
    return None if row is None else make(row)


class SQLiteHotTier:
    """The hot tier in the SQLite database at ``path`` (created with its directory if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # guards the writer connection, not the data (SQLite does)
        self._writer: sqlite3.Connection | None = None
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()  # idle ones
        self._all_readers: list[sqlite3.Connection] = []

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database and create the tables that are missing; calling it again is harmless."""
        await anyio.to_thread.run_sync(self._start)

    def _start(self) -> None:
        with self._lock:
            if self._writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = self._connect()
                # Before WAL mode, which fixes it: a new database gets larger pages (an existing
                # one keeps its own). Point batches are blobs of ~70 KB; at 4 KB a page each is a
                # long overflow chain to write and, when archived, to walk and free: 16 KB pages
                # halve the cost of an ingest and of archiving's deletes.
                conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
                conn.execute("PRAGMA journal_mode=WAL")
                self._writer = conn
            self._writer.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")

    async def stop(self) -> None:
        """Close every connection; the tier may be started again."""
        await anyio.to_thread.run_sync(self._stop)

    def _stop(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for conn in self._all_readers:
                conn.close()
            self._all_readers.clear()
            self._readers = queue.SimpleQueue()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; writes open BEGIN IMMEDIATE themselves.
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        # Checkpoint (copy the WAL into the database, with fsyncs) every ~64 MB rather than 4 MB:
        # a page written again and again in between (a track's row, the index) is copied once.
        conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
        return conn

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._write_sync, fn)

    def _write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            conn = self._writer
            if conn is None:
                raise RuntimeError("the SQLite hot tier is not started; call start() first")
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # On the loop, not in a worker thread: in WAL mode a reader never waits for a writer, and
        # these are indexed lookups of microseconds, where a thread hop costs ~70 µs per call.
        return self._read_sync(fn)

    def _read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            if self._writer is None:
                raise RuntimeError("the SQLite hot tier is not started; call start() first") from None
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            self._all_readers.append(conn)
        try:
            return fn(conn)
        finally:
            if conn in self._all_readers:  # not closed by stop() meanwhile
                self._readers.put(conn)

    async def _one(self, make: Callable[[tuple[Any, ...]], R], sql: str, *args: Any) -> R | None:
        return await self._read(lambda c: _optional(make, c.execute(sql, args).fetchone()))

    async def _all(self, make: Callable[[tuple[Any, ...]], R], sql: str, *args: Any) -> list[R]:
        return await self._read(lambda c: [make(row) for row in c.execute(sql, args)])

    # -- tokens and sessions ---------------------------------------------------------------------

    async def add_token(self, token: Token) -> None:
        """Store a token (its hash); storing the same hash again replaces it."""
        row = (token.token_hash, json.dumps(list(token.workspaces)), int(token.read_only), token.created_at)
        await self._write(lambda c: c.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?)", row))

    async def find_token(self, token_hash: str) -> Token | None:
        """The token with this hash, if any."""
        return await self._one(
            lambda row: Token(row[0], tuple(json.loads(row[1])), bool(row[2]), row[3]),
            "SELECT * FROM tokens WHERE token_hash = ?",
            token_hash,
        )

    async def upsert_session(
        self, workspace: str, name: str, fields: Mapping[str, Any], create: bool
    ) -> SessionRecord | None:
        """Create the session or update its given non-None ``fields``; with ``create=False`` only
        return an existing one. A new session stores only the fields given (the caller supplies
        defaults when it renders one)."""
        given = {k: v for k, v in fields.items() if v is not None}
        select = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE workspace = ? AND name = ?"
        if not create:
            return await self._one(_session, select, workspace, name)

        def upsert(conn: sqlite3.Connection) -> SessionRecord:
            row = conn.execute(select, (workspace, name)).fetchone()
            if row is None:
                now = utc_now_iso()
                record = SessionRecord(secrets.token_hex(8), workspace, name, given, now, now)
                conn.execute(
                    "INSERT INTO sessions(id, workspace, name, fields, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (record.id, workspace, name, _dump(given), now, now),
                )
                return record
            stored = _session(row)
            merged = {**stored.fields, **given}
            if merged == stored.fields:
                return stored
            now = utc_now_iso()
            conn.execute(
                "UPDATE sessions SET fields = ?, updated_at = ? WHERE id = ?", (_dump(merged), now, stored.id)
            )
            return SessionRecord(stored.id, workspace, name, merged, stored.created_at, now)

        return await self._write(upsert)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """A session by id."""
        return await self._one(_session, f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", session_id)

    # -- ingest ----------------------------------------------------------------------------------

    async def ingest(self, session_id: str, key: str | None, ingest: Ingest) -> IngestResult:
        """Store ``ingest`` in one transaction (see :class:`~.base.HotTier`); ``KeyError`` if the
        session does not exist, and any error stores nothing."""
        return await self._write(lambda conn: self._ingest(conn, session_id, key, ingest))

    def _ingest(
        self, conn: sqlite3.Connection, session_id: str, key: str | None, ingest: Ingest
    ) -> IngestResult:
        if key is not None:
            row = conn.execute(
                "SELECT result FROM ingest_keys WHERE session_id = ? AND key = ?", (session_id, key)
            ).fetchone()
            if row is not None:
                first = json.loads(row[0])
                first["tracks"] = [(t[0], t[1], t[2]) for t in first["tracks"]]
                return IngestResult(**{**first, "repeat": True})
        row = conn.execute("SELECT next_log FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise KeyError(f"no session with id {session_id!r}")
        now = utc_now_iso()
        tracks = [self._write_track(conn, session_id, write, now) for write in ingest.tracks]
        log_start = log_end = row[0]
        if ingest.logs:
            log_end = log_start + len(ingest.logs)
            rows = [
                (session_id, seq, e["timestamp"], e["level"], e["message"], e.get("metadata"))
                for seq, e in enumerate(ingest.logs, log_start)
            ]
            conn.executemany(
                "INSERT INTO logs VALUES (?, ?, ?, ?, ?, ?)",
                [(*row[:5], _dump_optional(row[5])) for row in rows],
            )
            conn.execute("UPDATE sessions SET next_log = ? WHERE id = ?", (log_end, session_id))
        version = None
        if ingest.parameters:
            version = self._merge_parameters(conn, session_id, ingest.parameters, now)
        result = IngestResult(tracks, log_start, log_end, version)
        if key is not None:
            row = (session_id, key, json.dumps(dataclasses.asdict(result)), now)
            conn.execute("INSERT INTO ingest_keys VALUES (?, ?, ?, ?)", row)
        return result

    @staticmethod
    def _write_track(
        conn: sqlite3.Connection, session_id: str, write: TrackWrite, now: str
    ) -> tuple[str, int, int]:
        row = conn.execute(
            "SELECT id, total FROM tracks WHERE session_id = ? AND name = ?", (session_id, write.name)
        ).fetchone()
        if row is None:
            track_id, total = secrets.token_hex(8), 0
            conn.execute(
                f"INSERT INTO tracks({_TRACK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, ?, NULL, NULL)",
                (
                    track_id,
                    session_id,
                    write.name,
                    write.description,
                    _dump(write.tags or []),
                    _dump_optional(write.metadata),
                    now,
                    now,
                ),
            )
        else:
            track_id, total = row
            changes = {
                column: value
                for column, value in (
                    ("description", write.description),
                    ("tags", _dump_optional(write.tags)),
                    ("metadata", _dump_optional(write.metadata)),
                )
                if value is not None
            }
            if changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                conn.execute(
                    f"UPDATE tracks SET {assignments}, updated_at = ? WHERE id = ?",
                    (*changes.values(), now, track_id),
                )
        start = end = total
        rows = []
        for count, blob in write.blobs:
            # Checked here: SQLite would store a str or a float as happily as bytes.
            if type(count) is not int or count <= 0:
                raise ValueError(f"a batch of track {write.name!r} has count {count!r}; expected an int > 0")
            if not isinstance(blob, (bytes, bytearray, memoryview)):
                raise TypeError(f"a batch of track {write.name!r} is {type(blob).__name__}, not bytes")
            rows.append((track_id, end, count, blob, now))
            end += count
        if rows:
            conn.executemany("INSERT INTO batches VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute(
                "UPDATE tracks SET total = ?, updated_at = ?, first_data_at = COALESCE(first_data_at, ?), "
                "last_data_at = ? WHERE id = ?",
                (end, now, now, now, track_id),
            )
        return track_id, start, end

    @staticmethod
    def _merge_parameters(
        conn: sqlite3.Connection, session_id: str, deltas: list[dict[str, Any]], now: str
    ) -> int:
        row = conn.execute(
            "SELECT version, data, created_at FROM parameters WHERE session_id = ?", (session_id,)
        ).fetchone()
        version, data, created = (0, {}, now) if row is None else (row[0], _load(row[1]), row[2])
        merge(data, deltas)
        version += len(deltas)
        conn.execute(
            "INSERT OR REPLACE INTO parameters VALUES (?, ?, ?, ?, ?)",
            (session_id, version, _dump(data), created, now),
        )
        return int(version)

    # -- reads -----------------------------------------------------------------------------------

    async def get_track(self, session_id: str, name: str) -> TrackRecord | None:
        """A track by name."""
        sql = f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE session_id = ? AND name = ?"
        return await self._one(_track, sql, session_id, name)

    async def list_tracks(self, session_id: str) -> list[TrackRecord]:
        """Every track of a session, by name."""
        sql = f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE session_id = ? ORDER BY name"
        return await self._all(_track, sql, session_id)

    async def read_batches(self, track_id: str, start: int, end: int) -> list[Batch]:
        """The stored batches holding any point of ``[start, end)``, in index order."""
        if end <= start:
            return []
        # Seek to the batch holding ``start`` (the last one starting at or before it) rather than
        # filtering every batch of the track on ``start + count``.
        sql = (
            "SELECT start, count, blob, created_at FROM batches WHERE track_id = ?1 "
            "AND start >= COALESCE((SELECT MAX(start) FROM batches WHERE track_id = ?1 AND start <= ?2), ?2) "
            "AND start < ?3 AND start + count > ?2 ORDER BY start"
        )
        return await self._all(lambda row: Batch(*row), sql, track_id, start, end)

    async def read_logs(self, session_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        """Log entries ``sequenceNumber`` ``start..start+limit-1``; ``metadata`` only where stored."""

        sql = (
            "SELECT seq, timestamp, level, message, metadata FROM logs "
            "WHERE session_id = ? AND seq >= ? AND seq < ? ORDER BY seq"
        )
        return await self._all(_log_entry, sql, session_id, start, start + limit)

    async def get_parameters(self, session_id: str) -> dict[str, Any] | None:
        """``{"version", "data", "createdAt", "updatedAt"}`` (``data`` flat) or None if never set."""

        return await self._one(
            lambda row: {"version": row[0], "data": _load(row[1]), "createdAt": row[2], "updatedAt": row[3]},
            "SELECT version, data, created_at, updated_at FROM parameters WHERE session_id = ?",
            session_id,
        )

    # -- files -----------------------------------------------------------------------------------

    async def put_file(self, session_id: str, meta: Mapping[str, Any]) -> dict[str, Any] | None:
        """Index a file (``meta["id"]`` is its id); a non-deleted entry with the same ``path`` and
        ``filename`` is replaced in its place in the listing, and its metadata returned."""
        entry = dict(meta)
        path, filename, deleted = entry.get("path"), entry.get("filename"), entry.get("deletedAt") is not None

        def put(conn: sqlite3.Connection) -> dict[str, Any] | None:
            old = conn.execute(
                "SELECT seq, meta FROM files WHERE session_id = ? AND path IS ? AND filename IS ? "
                "AND deleted = 0 ORDER BY seq",
                (session_id, path, filename),
            ).fetchall()
            columns = (entry["id"], path, filename, int(deleted), _dump(entry))
            if not old:
                conn.execute(
                    "INSERT INTO files(session_id, id, path, filename, deleted, meta) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (session_id, *columns),
                )
                return None
            conn.executemany("DELETE FROM files WHERE seq = ?", [(seq,) for seq, _ in old[1:]])
            conn.execute(
                "UPDATE files SET id = ?, path = ?, filename = ?, deleted = ?, meta = ? WHERE seq = ?",
                (*columns, old[0][0]),
            )
            replaced: dict[str, Any] = _load(old[0][1])
            return replaced

        return await self._write(put)

    async def list_files(self, session_id: str) -> list[dict[str, Any]]:
        """Every file entry of a session, deleted ones included, in listing order."""
        sql = "SELECT meta FROM files WHERE session_id = ? ORDER BY seq"
        return await self._all(lambda row: _load(row[0]), sql, session_id)

    async def update_file(
        self, session_id: str, file_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge ``changes`` into a file entry and return it; None if there is none."""

        def update(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                "SELECT seq, meta FROM files WHERE session_id = ? AND id = ?", (session_id, file_id)
            ).fetchone()
            if row is None:
                return None
            entry: dict[str, Any] = {**_load(row[1]), **changes}
            deleted = int(entry.get("deletedAt") is not None)
            conn.execute(
                "UPDATE files SET path = ?, filename = ?, deleted = ?, meta = ? WHERE seq = ?",
                (entry.get("path"), entry.get("filename"), deleted, _dump(entry), row[0]),
            )
            return entry

        return await self._write(update)

    # -- archiving -------------------------------------------------------------------------------

    async def tracks_to_archive(self, chunk_size: int, limit: int) -> list[TrackRecord]:
        """Up to ``limit`` tracks holding at least one full chunk of hot points, most behind first."""
        sql = (
            f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE total - chunked >= ? "
            "ORDER BY total - chunked DESC LIMIT ?"
        )
        return await self._all(_track, sql, chunk_size, limit)

    async def lease_track(self, track_id: str, owner: str, seconds: float) -> bool:
        """Take or renew the track's archiving lease: True if ``owner`` holds it now."""
        now = time.time()

        def take(conn: sqlite3.Connection) -> bool:
            taken = conn.execute(
                "INSERT INTO leases VALUES (?1, ?2, ?3) ON CONFLICT(track_id) DO UPDATE SET owner = ?2, "
                "until = ?3 WHERE leases.until < ?4 OR leases.owner = ?2",
                (track_id, owner, now + seconds, now),
            ).rowcount
            return taken == 1

        return await self._write(take)

    async def chunk_archived(self, track_id: str, chunk_index: int, chunk_size: int, count: int = 1) -> bool:
        """Record chunks ``chunk_index .. chunk_index+count-1`` as archived and drop the batches wholly
        inside the archived range; False (nothing changed) unless they are the track's next chunks and
        are full."""
        end = (chunk_index + count) * chunk_size

        def record(conn: sqlite3.Connection) -> bool:
            moved = conn.execute(
                "UPDATE tracks SET chunked = ? WHERE id = ? AND chunked = ? AND total >= ?",
                (end, track_id, chunk_index * chunk_size, end),
            ).rowcount
            if moved == 0:
                return False
            # A batch straddling ``end`` stays until a later chunk covers it; reads take each
            # index from the tier that ``chunked`` names, so its archived points are not read twice.
            sql = "DELETE FROM batches WHERE track_id = ?1 AND start < ?2 AND start + count <= ?2"
            conn.execute(sql, (track_id, end))
            return True

        return await self._write(record)


if TYPE_CHECKING:

    def _conforms(tier: SQLiteHotTier) -> HotTier:
        return tier


__all__ = ["SQLiteHotTier"]
