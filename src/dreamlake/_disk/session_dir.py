"""A session directory in the dreamlake 0.2.x layout (blocking; the local sink runs it in worker threads).

```
<root>/<workspace>/<session>/
  session.json                    name, workspace, description, tags, folder, metadata, write_protected
  parameters.json                 {"version", "data": {flat keys}, "updatedAt"}, merged under a file lock
  logs/logs.jsonl                 numbered like a track (see jsonl.py); logs/.log_sequence for 0.2.x
  tracks/<track>/data.jsonl       (see jsonl.py); <track> is the escaped name (names.track_dirname)
  tracks/<track>/metadata.json    replaced atomically after every append, so it is in step with the data
  files/                          (see filestore.py)
```
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._schema.names import check_track_name, track_dirname, track_name_from_dirname
from .._schema.params import merge
from .._schema.timestamps import utc_now_iso
from .._schema.wire import TrackSpec
from .atomic import fsync_dir, read_json, write_bytes_atomic, write_json_atomic
from .filelock import FileLock
from .filestore import FileStore
from .jsonl import NumberedLog, TrackLog, encode_log_lines

CHUNK_SIZE = 10_000  # the server's cold-tier chunk size; reported by stats() for 0.2.x parity


class _Track:
    """A track's name, its data log and the path of its metadata."""

    def __init__(self, name: str, directory: Path, fsync: bool) -> None:
        self.name = name
        self.log = TrackLog(directory, fsync)
        self.meta_path = directory / "metadata.json"


class SessionDir:
    """One session's files under ``root``.

    With ``fsync`` (the ``"flush"`` and ``"sync"`` durability levels), every write is fsynced, and
    every file it creates or renames, with its directory, before the write returns.
    """

    #: Set by :meth:`open`: the stored session refuses writes (``write_protected`` in session.json).
    write_protected = False

    def __init__(self, root: Path, workspace: str, session: Mapping[str, Any], fsync: bool = False) -> None:
        self.directory = Path(root) / workspace / session["name"]
        self._session = dict(session, workspace=workspace)
        self._fsync = fsync
        self._tracks: dict[str, _Track] = {}
        self._tracks_lock = threading.Lock()
        self._logs = NumberedLog(
            self.directory / "logs" / "logs.jsonl", "sequenceNumber", encode_log_lines, fsync
        )
        self._params_path = self.directory / "parameters.json"
        self._params_lock = FileLock(self.directory / ".parameters.lock")
        self.files = FileStore(self.directory / "files", f"{workspace}/{session['name']}", fsync)

    def read_parameters(self) -> dict[str, Any]:
        """The stored parameters, flat."""
        doc = read_json(self._params_path)
        return doc.get("data") or {} if doc else {}

    def open(self) -> None:
        """Create or update the session directory (change nothing if it is write-protected)."""
        stored = read_json(self.directory / "session.json")
        if stored is not None and stored.get("write_protected"):
            self.write_protected = True  # protected by an earlier run: change nothing
            return
        self.write_protected = bool(self._session.get("write_protected"))
        for sub in ("logs", "tracks", "files"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._update_session_json(self._session_fields())
        if self._fsync:
            for directory in (self.directory, *self.directory.parents[:2]):
                fsync_dir(directory)  # the session's (and workspace's) own directory entries

    def _session_fields(self) -> dict[str, Any]:
        s = self._session
        return {
            "name": s["name"],
            "workspace": s["workspace"],
            "description": s.get("description"),
            "tags": s.get("tags") or [],
            "folder": s.get("folder"),
            "metadata": s.get("metadata"),
            "write_protected": bool(s.get("write_protected")),
        }

    def _update_session_json(self, fields: Mapping[str, Any]) -> None:
        # Same merge rule as 0.2.x: fields left as None keep what an earlier run stored.
        path = self.directory / "session.json"
        existing = read_json(path)
        now = utc_now_iso()
        if existing is None:
            write_json_atomic(path, {**fields, "created_at": now, "updated_at": now}, self._fsync)
            return
        merged = dict(existing)
        merged.update({k: v for k, v in fields.items() if v is not None})
        merged["updated_at"] = now
        write_json_atomic(path, merged, self._fsync)

    def _track(self, name: str, create: bool) -> _Track | None:
        with self._tracks_lock:
            track = self._tracks.get(name)
            if track is None:
                # Checked again here, not only by the session: whoever calls, the escaped name is
                # one component that is not '.' or '..', so nothing lands outside tracks/.
                directory = self.directory / "tracks" / track_dirname(check_track_name(name))
                if not create and not (directory / "metadata.json").exists():
                    return None
                directory.mkdir(parents=True, exist_ok=True)
                track = self._tracks[name] = _Track(name, directory, self._fsync)
            return track

    def write_track(
        self, spec: TrackSpec, points: Sequence[dict[str, Any]], intent: Callable[[int], None] | None = None
    ) -> None:
        """Append ``points`` (all or none) and bring ``metadata.json`` in step; ``intent(first index)``
        is called before the points are written."""
        track = self._track(spec.name, create=True)
        assert track is not None
        with track.log.lock:
            count = track.log.append(points, intent)[1] if points else track.log.count()
            try:
                self._write_meta(track, spec, count, wrote=bool(points))
            except BaseException:
                # All or nothing: the agent retries a failed write, which must not store it twice.
                if points:
                    track.log.undo_append()
                raise

    def _write_meta(
        self, track: _Track, spec: TrackSpec | None, count: int, wrote: bool
    ) -> dict[str, Any]:
        """Bring ``metadata.json`` in step with the data. Call with the track's lock held."""
        now = utc_now_iso()
        # Re-read rather than cache: another process may have written the track since.
        meta: dict[str, Any] | None = read_json(track.meta_path)
        if meta is None:
            meta = {
                "trackId": f"local-track-{track.name}",
                "name": track.name,
                "description": None,
                "tags": [],
                "metadata": None,
                "createdAt": now,
            }
        if spec is not None:
            for key in ("description", "tags", "metadata"):
                value = getattr(spec, key)
                if value is not None:
                    meta[key] = value
        if wrote:
            meta.setdefault("firstDataAt", now)
            meta["lastDataAt"] = now
        meta["totalDataPoints"] = count
        meta["nextIndex"] = count
        meta["updatedAt"] = now
        write_json_atomic(track.meta_path, meta, self._fsync)
        return meta

    def read_track(self, name: str, start: int, limit: int) -> dict[str, Any]:
        """Points ``start .. start+limit-1`` in the 0.2.x read shape."""
        track = self._track(name, create=False)
        entries, count = track.log.read(start, limit) if track else ([], 0)
        return {
            "data": entries,
            "startIndex": start,
            "endIndex": start + len(entries) - 1,
            "total": len(entries),
            "hasMore": start + len(entries) < count,
        }

    def track_stats(self, name: str) -> dict[str, Any]:
        """The 0.2.x stats of one track."""
        track = self._track(name, create=True)
        assert track is not None
        with track.log.lock:
            count = track.log.count()
            meta = read_json(track.meta_path)
            if meta is None or meta.get("totalDataPoints") != count:
                # A crash between the data write and the metadata replace (or a track that has no
                # points yet): bring the metadata in step now.
                meta = self._write_meta(track, None, count, wrote=False)
        return {
            "trackId": meta["trackId"],
            "name": meta["name"],
            "description": meta.get("description"),
            "tags": meta.get("tags") or [],
            "metadata": meta.get("metadata"),
            "totalDataPoints": count,
            "bufferedDataPoints": count,
            "chunkedDataPoints": 0,
            "totalChunks": 0,
            "chunkSize": CHUNK_SIZE,
            "firstDataAt": meta.get("firstDataAt"),
            "lastDataAt": meta.get("lastDataAt"),
            "createdAt": meta.get("createdAt"),
            "updatedAt": meta.get("updatedAt"),
        }

    def list_tracks(self) -> list[dict[str, Any]]:
        """A summary of every track."""
        out = []
        tracks_dir = self.directory / "tracks"
        for entry in sorted(os.scandir(tracks_dir), key=lambda e: e.name):
            meta = read_json(Path(entry.path) / "metadata.json") if entry.is_dir() else None
            if meta is None:
                continue
            out.append(
                {
                    "trackId": meta["trackId"],
                    "name": meta.get("name") or track_name_from_dirname(entry.name),
                    "description": meta.get("description"),
                    "tags": meta.get("tags") or [],
                    "totalDataPoints": meta.get("totalDataPoints", 0),
                    "createdAt": meta.get("createdAt"),
                }
            )
        return out

    def stored_prefix(self, name: str | None, first: int, items: Sequence[dict[str, Any]]) -> int:
        """How many of ``items`` track ``name`` (None: the logs) holds from ``first`` on, as written."""
        # create=True: a kill between the data and metadata.json leaves a track with no metadata.
        track = None if name is None else self._track(name, create=True)
        log = self._logs if track is None else track.log
        with log.lock:
            return log.stored_prefix(first, items)

    def write_logs(
        self, entries: Sequence[dict[str, Any]], intent: Callable[[int], None] | None = None
    ) -> None:
        """Append log entries, numbered under the file lock; all or none."""
        with self._logs.lock:
            _, count = self._logs.append(entries, intent)
            try:
                # 0.2.x numbers its next entry from this file, so keep it in step.
                write_bytes_atomic(self._logs.directory / ".log_sequence", str(count).encode(), self._fsync)
            except BaseException:
                self._logs.undo_append()  # all or nothing, as for a track
                raise

    def write_parameters(self, deltas: Sequence[dict[str, Any]]) -> None:
        """Merge flat parameter changes, oldest first, into ``parameters.json`` under its lock."""
        with self._params_lock:
            # Re-read under the lock: another process may have set parameters since.
            doc = read_json(self._params_path) or {}
            data = doc.get("data") or {}
            dropped = merge(data, deltas)
            now = utc_now_iso()
            write_json_atomic(
                self._params_path,
                {
                    "version": doc.get("version", 0) + len(deltas),  # one version per set()
                    "data": data,
                    "createdAt": doc.get("createdAt", now),
                    "updatedAt": now,
                },
                self._fsync,
            )
        if dropped:
            warnings.warn(
                f"parameters {sorted(dropped)} set by another process conflicted with this "
                "process's later set() (a name cannot be both a value and a group) and were replaced",
                RuntimeWarning,
                stacklevel=1,
            )

    def close(self, agent_stats: Mapping[str, Any]) -> None:
        """Record the agent's final counters in ``session.json`` and close open files."""
        self._logs.close()
        self._params_lock.close()
        self.files.close()
        if not self.write_protected:
            self._update_session_json({"agent": dict(agent_stats)})
        with self._tracks_lock:
            for track in self._tracks.values():
                track.log.close()
            self._tracks.clear()
