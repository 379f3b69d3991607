"""A session directory in the dreamlake 0.2.x layout (blocking; the local sink runs it in worker threads).

```
<root>/<workspace>/<session>/
  session.json                    name, workspace, description, tags, folder, metadata, write_protected
  parameters.json                 {"version", "data": {flat keys}, "updatedAt"}, merged under a file lock
  logs/logs.jsonl                 numbered like a track (see jsonl.py); logs/.log_sequence for 0.2.x
  tracks/<track>/data.jsonl       (see jsonl.py); <track> is the escaped name (names.track_dirname)
  tracks/<track>/metadata.json    replaced atomically; may lag the data (see below)
  files/                          (see filestore.py)
```

``metadata.json`` is not replaced at every write: in a session of thousands of tracks that would cost
a file replace per track per flush, far more than the points. It is brought in step when it matters:
when the track is created, on an explicit ``flush()`` (:meth:`SessionDir.settle`), when the track is
read or its stats asked for, when the session's tracks are listed, at ``close()``, and otherwise at most
:data:`METADATA_INTERVAL` seconds after its data changed (a 0.2.x reader of a live session sees counts
that old at most). Counts always come from ``data.jsonl`` under the track's lock, never from a cache.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from .._schema.names import check_track_name, track_dirname, track_name_from_dirname
from .._schema.params import merge
from .._schema.timestamps import utc_now_iso
from .._schema.wire import TrackSpec
from .atomic import fsync_dir, json_bytes, read_json, temporary_beside, write_bytes_atomic, write_json_atomic
from .filelock import FileLock
from .filestore import FileStore
from .jsonl import NumberedLog, TrackLog, encode_lines, encode_log_lines, encode_runs
from .runs import InThread, Meta, Run, Stamp, Written, write_runs
from .sweep import sweep_leftovers, sweep_track

CHUNK_SIZE = 10_000  # the server's cold-tier chunk size; reported by stats() for 0.2.x parity
#: Most seconds a track's ``metadata.json`` lags its data while the session writes it.
METADATA_INTERVAL = 5.0


_UNSEEN: Any = object()  # a metadata.json not looked at yet
#: Tracks per ``write_runs`` call of a group write (see :meth:`SessionDir._write_runs`).
RUN_CHUNK = 128


class _Track(TrackLog):
    """A track: its data log (it is one, rather than holding one: a wide session has thousands, and
    each object is one more for every full garbage collection), its name and directory, the path of
    its metadata and what that metadata still lacks."""

    def __init__(self, name: str, directory: str, fsync: bool) -> None:
        super().__init__(directory, fsync)
        self.name = name
        self.track_dir = directory
        self.made = False  # the directory is known to exist
        self.meta_path = directory + os.sep + "metadata.json"
        # metadata.json as last read or written here, and its stamp then (None: absent); it is
        # read again only if its stamp changed (another process replaced it)
        self.meta: dict[str, Any] | None = None
        self.meta_stamp: Stamp | None = _UNSEEN
        self.stale = False  # data (or a spec) written since metadata.json was last replaced
        self.spec: TrackSpec | None = None  # the latest spec not yet in metadata.json
        self.first_data_at: str | None = None  # times of this process's first and last writes
        self.last_data_at: str | None = None
        self.synced_at = time.monotonic()  # the first lag is counted from the track's opening


class _Chunk:
    """Runs for ``write_runs``, and per run its track (lock held), descriptor, first number, point
    count and the metadata it replaces."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.held: list[tuple[_Track, int, int, int, dict[str, Any] | None]] = []

    def __len__(self) -> int:
        return len(self.runs)


def _encode_runs(runs: list[tuple[int, list[dict[str, Any]]]]) -> list[bytes]:
    """The lines of each ``(first, points)``; if a point cannot be encoded, those of the runs before
    its run (the slow way raises its error)."""
    try:
        return encode_runs([first for first, _ in runs], [points for _, points in runs])
    except Exception:
        blobs = []
        for first, points in runs:
            try:
                blobs.append(encode_lines(first, points))
            except Exception:
                break
        return blobs


def _release(chunk: _Chunk) -> None:
    """Let go of the locks of a chunk that was not written."""
    for track, fd, _, _, _ in chunk.held:
        track.end_run(fd, None)


class SessionDir:
    """One session's files under ``root``.

    With ``fsync`` (the ``"flush"`` and ``"sync"`` durability levels), every write is fsynced, and
    every file it creates or renames, with its directory, before the write returns.
    """

    #: Set by :meth:`open`: the stored session refuses writes (``write_protected`` in session.json).
    write_protected = False
    #: Set for the last writes (``close()``'s flush): a write brings the track's ``metadata.json``
    #: in step at once, under the lock it already holds, instead of :meth:`settle` taking it again.
    settle_as_written = False

    def __init__(self, root: Path, workspace: str, session: Mapping[str, Any], fsync: bool = False) -> None:
        self.directory = Path(root) / workspace / session["name"]
        self._session = dict(session, workspace=workspace)
        self._fsync = fsync
        self._tracks: dict[str, _Track] = {}
        self._tracks_lock = threading.Lock()
        self._tracks_dir = os.path.join(self.directory, "tracks")
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
        sweep_leftovers(self.directory)  # of crashed runs, old enough that no live writer owns them
        # (each track's directory when this process first uses it: see sweep_track)
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

    def _track(self, name: str, create: bool, make: bool = True) -> _Track | None:
        """Track ``name``: None if ``create`` is false and it has no files. Its directory is made
        here unless ``make`` is false (a run makes it, in C: see :meth:`_write_runs`)."""
        track = self._tracks.get(name)  # a dict lookup is atomic: the lock is for creating one
        if track is None:
            with self._tracks_lock:
                track = self._tracks.get(name)
                if track is None:
                    # Checked again here, not only by the session: whoever calls, the escaped name
                    # is one component that is not '.' or '..', so nothing lands outside tracks/.
                    directory = self._tracks_dir + os.sep + track_dirname(check_track_name(name))
                    if not create and not any(
                        os.path.exists(os.path.join(directory, f)) for f in ("metadata.json", "data.jsonl")
                    ):
                        return None
                    track = self._tracks[name] = _Track(name, directory, self._fsync)
                    track.created()  # if its directory is new; the first write checks the size
                    track.meta_stamp = None
        if not track.made:
            if not create:
                return track if os.path.isdir(track.track_dir) else None
            if make:
                self._make(track)
        return track

    def _make(self, track: _Track) -> None:
        """Make the track's directory (sweeping a crashed writer's leftovers if it was there)."""
        with self._tracks_lock:
            if track.made:
                return
            try:
                os.mkdir(track.track_dir)
            except FileNotFoundError:  # tracks/ removed under the session: make it again
                os.makedirs(track.track_dir, exist_ok=True)
                track.forget()
                track.meta_stamp = _UNSEEN
            except FileExistsError:
                # Only a directory that was there before can hold a crashed writer's leftovers;
                # a wide session's new tracks skip the scan.
                if not self.write_protected:
                    sweep_track(Path(track.track_dir))
                track.forget()  # it may hold points: counted by the first write
                track.meta_stamp = _UNSEEN
            track.made = True

    def write_track(
        self, spec: TrackSpec, points: Sequence[dict[str, Any]], intent: Callable[[int], None] | None = None
    ) -> None:
        """Append ``points`` (all or none); ``intent(first index)`` is called before they are written.
        ``metadata.json`` follows when it matters (see the module docstring)."""
        track = self._track(spec.name, create=True)
        assert track is not None
        count = None
        with track.lock:
            if points:
                count = track.append(points, intent)[1]
                now = utc_now_iso()
                if track.first_data_at is None:
                    track.first_data_at = now
                track.last_data_at = now
            track.stale = True
            if spec.description is not None or spec.tags is not None or spec.metadata is not None:
                track.spec = spec
            if not points:
                self._sync(track)  # a track declared before its first point is listed at once
            elif self.settle_as_written or time.monotonic() - track.synced_at >= METADATA_INTERVAL:
                try:
                    self._sync(track, count)
                except OSError:
                    # The points are stored: raising would make the agent write them again. The
                    # metadata stays stale, and settle() or close() raise if it still fails.
                    pass

    def write_tracks(
        self,
        writes: Sequence[tuple[TrackSpec, Sequence[dict[str, Any]]]],
        intent: Callable[[str, int], None] | None = None,
    ) -> tuple[int, Exception | None]:
        """:meth:`write_track` for each of a flush's tracks, as runs of ``runs.write_runs`` where it
        can (one system call after another, without the GIL). Return how many were written before
        the first that failed, and its error (None: all were)."""
        done = 0
        while done < len(writes):
            done += self._write_runs(writes, done, intent)
            if done < len(writes):  # the next one cannot go in a run: the slow way
                spec, points = writes[done]
                try:
                    self.write_track(spec, points, None if intent is None else partial(intent, spec.name))
                except Exception as exc:
                    return done, exc
                done += 1
        return done, None

    def _write_runs(
        self,
        writes: Sequence[tuple[TrackSpec, Sequence[dict[str, Any]]]],
        start: int,
        intent: Callable[[str, int], None] | None,
    ) -> int:
        """Write ``writes[start:]`` as runs up to the first that cannot be one; return how many.

        Runs go to ``write_runs`` :data:`RUN_CHUNK` at a time; in ``close()``'s flush, one chunk's
        system calls run in a thread of their own (without the GIL) while the next is encoded."""
        now, clock = utc_now_iso(), time.monotonic()
        tmp = temporary_beside("metadata.json")  # the name an atomic replace by this thread uses
        done, pos = 0, start
        flight: tuple[_Chunk, InThread] | None = None
        try:
            while True:
                chunk = self._prepare_runs(writes, pos, intent, now, clock, tmp)
                pos += len(chunk)
                if flight is not None:
                    before, call = flight
                    flight = None
                    written = self._written(before, call.result(), clock)
                    done += written
                    if written < len(before):  # stopped: the caller writes that one the slow way
                        _release(chunk)
                        return done
                if len(chunk) < RUN_CHUNK or not self.settle_as_written:
                    # The last chunk (or none); or not close()'s flush: then the training loop is
                    # appending, and a third busy thread would take its core.
                    written = self._written(chunk, write_runs(chunk.runs), clock) if chunk else 0
                    done += written
                    if written < len(chunk) or len(chunk) < RUN_CHUNK:
                        return done
                    continue
                flight = chunk, InThread(write_runs, chunk.runs)
        except BaseException:
            if flight is not None:  # what that thread wrote is written: keep count of it
                self._written(flight[0], flight[1].result(), clock)
            raise

    def _prepare_runs(
        self,
        writes: Sequence[tuple[TrackSpec, Sequence[dict[str, Any]]]],
        pos: int,
        intent: Callable[[str, int], None] | None,
        now: str,
        clock: float,
        tmp: str,
    ) -> _Chunk:
        """The runs of up to :data:`RUN_CHUNK` tracks from ``writes[pos]`` on, stopping before one
        that cannot be a run (a failure there is the slow way's to raise); their locks are held."""
        chunk = _Chunk()
        started = []  # (track, spec, points, fd, size, first), their locks held
        for spec, points in writes[pos : pos + RUN_CHUNK]:
            try:
                track = self._track(spec.name, create=True, make=False)
            except Exception:
                break
            if track is None or not points or (state := track.start_run()) is None:
                break  # (a track declared without points is written the slow way: it has no run)
            started.append((track, spec, points if type(points) is list else list(points), *state))
        blobs = _encode_runs([(first, points) for _, _, points, _, _, first in started])
        for (track, spec, points, fd, size, first), lines in zip(started, blobs, strict=False):
            try:
                run, meta = self._run(
                    track, spec, lines, len(points), fd, size, first, intent, now, clock, tmp
                )
            except Exception:
                break
            chunk.held.append((track, fd, first, len(points), meta))
            chunk.runs.append(run)
        for track, _, _, fd, _, _ in started[len(chunk) :]:
            track.end_run(fd, None)
        return chunk

    def _run(
        self,
        track: _Track,
        spec: TrackSpec,
        lines: bytes,
        n: int,
        fd: int,
        size: int,
        first: int,
        intent: Callable[[str, int], None] | None,
        now: str,
        clock: float,
        tmp: str,
    ) -> tuple[Run, dict[str, Any] | None]:
        """Track ``track``'s run of ``n`` points encoded as ``lines`` (its lock held), and the
        metadata it replaces (None: none)."""
        if track.first_data_at is None:
            track.first_data_at = now
        track.last_data_at = now
        if spec.description is not None or spec.tags is not None or spec.metadata is not None:
            track.spec = spec
        new, replace = None, None
        if self.settle_as_written or clock - track.synced_at >= METADATA_INTERVAL:
            replace, new = self._replacement(track, first + n, now, tmp)
        if intent is not None:
            intent(spec.name, first)
        make = None if track.made else track.track_dir
        return track.run(fd, size, lines, replace, make), new

    def _replacement(self, track: _Track, count: int, now: str, tmp: str) -> tuple[Meta, dict[str, Any]]:
        """The run's replace of the track's ``metadata.json`` for ``count`` points (its lock held),
        and the metadata it writes."""
        if track.meta_stamp is _UNSEEN:
            self._stored_meta(track)
        new = self._new_meta(track, track.meta, track.spec, count, now)
        blob = json_bytes(new, plain=new["metadata"] is None)
        return (track.meta_path, track.track_dir + os.sep + tmp, blob, track.meta_stamp), new

    def _written(
        self, chunk: _Chunk, results: list[Written], clock: float, behind: list[_Track] | None = None
    ) -> int:
        """Note what ``write_runs`` wrote of ``chunk`` and release its locks; return how many.
        Tracks whose ``metadata.json`` was not replaced (someone else's changed, or it failed) are
        settled the slow way, or added to ``behind`` if given."""
        lagging = []
        for i, (track, fd, first, n, meta) in enumerate(chunk.held):
            if i >= len(results):
                track.end_run(fd, None)
                continue
            new_size, stamp = results[i]
            track.end_run(fd, (new_size, first + n))
            track.made = True
            track.stale = True
            if meta is not None and stamp is not None:
                # Not kept from the last writes, which nothing reads after: thousands of dicts made
                # while close() writes would set off a full garbage collection.
                track.meta, track.meta_stamp = (None, _UNSEEN) if self.settle_as_written else (meta, stamp)
                track.stale, track.spec, track.synced_at = False, None, clock
            elif meta is not None:
                lagging.append(track)
        if behind is not None:
            behind.extend(lagging)
        elif lagging:
            with contextlib.suppress(OSError):  # the points are stored; settle() and close() raise it
                self._settle_slowly(lagging)
        return len(results)

    def settle(self, names: Collection[str] | None = None) -> None:
        """Bring the ``metadata.json`` of tracks ``names`` (None: all) in step with their data; raise
        the first failure after trying every track."""
        with self._tracks_lock:
            tracks = [t for t in self._tracks.values() if t.stale and (names is None or t.name in names)]
        self._settle_slowly(self._settle_runs(tracks))

    def _settle_runs(self, tracks: list[_Track]) -> list[_Track]:
        """Settle ``tracks`` as runs that append nothing (in C, without the GIL; the size each run
        checks stands for a recount); return those left for the slow way."""
        now, clock, tmp = utc_now_iso(), time.monotonic(), temporary_beside("metadata.json")
        left: list[_Track] = []
        for start in range(0, len(tracks), RUN_CHUNK):
            chunk = _Chunk()
            for track in tracks[start : start + RUN_CHUNK]:
                state = track.start_run() if track.made else None
                if state is None:
                    left.append(track)
                    continue
                fd, size, count = state
                try:
                    replace, new = self._replacement(track, count, now, tmp)
                except Exception:  # reading the stored metadata.json failed: the slow way says why
                    track.end_run(fd, None)
                    left.append(track)
                    continue
                chunk.runs.append(track.run(fd, size, b"", replace))
                chunk.held.append((track, fd, count, 0, new))
            written = self._written(chunk, write_runs(chunk.runs), clock, left)
            left.extend(track for track, *_ in chunk.held[written:])
        return left

    def _settle_slowly(self, tracks: list[_Track]) -> None:
        """:meth:`settle` one track after another, each under its lock, counting its points."""
        error: OSError | None = None
        for track in tracks:
            try:
                with track.lock:
                    if track.stale:
                        self._sync(track)
            except OSError as exc:
                error = error or exc
        if error is not None:
            raise error

    def _sync(self, track: _Track, count: int | None = None) -> dict[str, Any]:
        """Replace ``metadata.json`` with one in step with the data (``count`` points, if the caller
        has just counted them). Call with the track's lock held."""
        meta = self._write_meta(track, track.spec, track.count() if count is None else count)
        track.stale, track.spec, track.synced_at = False, None, time.monotonic()
        return meta

    def _write_meta(self, track: _Track, spec: TrackSpec | None, count: int) -> dict[str, Any]:
        """Write ``metadata.json`` for ``count`` points. Call with the track's lock held."""
        meta = self._new_meta(track, self._stored_meta(track), spec, count, utc_now_iso())
        st = write_json_atomic(track.meta_path, meta, self._fsync)
        track.meta, track.meta_stamp = meta, (st.st_ino, st.st_mtime_ns, st.st_size)
        return meta

    @staticmethod
    def _stored_meta(track: _Track) -> dict[str, Any] | None:
        """The track's ``metadata.json`` as stored now (another process may have replaced it)."""
        try:
            st = os.stat(track.meta_path)
        except FileNotFoundError:
            track.meta = track.meta_stamp = None
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != track.meta_stamp or track.meta is None:
            track.meta, track.meta_stamp = read_json(track.meta_path), stamp
        return track.meta

    @staticmethod
    def _new_meta(
        track: _Track, stored: dict[str, Any] | None, spec: TrackSpec | None, count: int, now: str
    ) -> dict[str, Any]:
        """``stored`` (the track's metadata.json, None if absent) brought up to ``count`` points."""
        if stored is None:
            meta: dict[str, Any] = {
                "trackId": f"local-track-{track.name}",
                "name": track.name,
                "description": None,
                "tags": [],
                "metadata": None,
                "createdAt": now,
            }
        else:
            meta = dict(stored)
        if spec is not None:
            for key in ("description", "tags", "metadata"):
                value = getattr(spec, key)
                if value is not None:
                    meta[key] = value
        if track.first_data_at is not None and "firstDataAt" not in meta:
            meta["firstDataAt"] = track.first_data_at
        if track.last_data_at is not None:
            meta["lastDataAt"] = track.last_data_at
        meta["totalDataPoints"] = count
        meta["nextIndex"] = count
        meta["updatedAt"] = now
        return meta

    def read_track(self, name: str, start: int, limit: int) -> dict[str, Any]:
        """Points ``start .. start+limit-1`` in the 0.2.x read shape."""
        track = self._track(name, create=False)
        if track is not None and track.stale:
            self.settle((name,))  # a read is a moment the metadata should be right
        entries, count = track.read(start, limit) if track else ([], 0)
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
        with track.lock:
            count = track.count()
            meta = read_json(track.meta_path)
            if track.stale or meta is None or meta.get("totalDataPoints") != count:
                # Our own lag, another process's, or a crash before its metadata replace.
                meta = self._sync(track)
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
        self.settle()
        out = []
        tracks_dir = self.directory / "tracks"
        for entry in sorted(os.scandir(tracks_dir), key=lambda e: e.name):
            meta = read_json(Path(entry.path) / "metadata.json") if entry.is_dir() else None
            if meta is None and entry.is_dir() and os.path.exists(os.path.join(entry.path, "data.jsonl")):
                # Written by another process (or a killed run) whose metadata has not followed yet.
                meta = self.track_stats(track_name_from_dirname(entry.name))
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
        log = self._logs if track is None else track
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
        """Bring every track's metadata in step, record the agent's final counters in
        ``session.json`` and close open files; raise what failed."""
        try:
            self.settle()
        finally:
            self._close(agent_stats)

    def _close(self, agent_stats: Mapping[str, Any]) -> None:
        self._logs.close()
        self._params_lock.close()
        self.files.close()
        if not self.write_protected:
            self._update_session_json({"agent": dict(agent_stats)})
        with self._tracks_lock:
            for track in self._tracks.values():
                track.close()
            self._tracks.clear()
