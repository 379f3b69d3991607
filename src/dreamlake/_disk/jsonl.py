"""Numbered JSONL files: locked appends with contiguous numbers, torn-tail repair, seeking reads.

A track's ``data.jsonl`` holds ``{"index": i, "data": {...}}`` lines; the session's ``logs.jsonl``
holds ``{"sequenceNumber": i, "timestamp", "level", "message", "metadata"?}`` lines. In both, line
``k`` of the file carries number ``k``. That invariant is what lets :meth:`NumberedLog.read`
binary-search byte offsets instead of scanning, and what every append keeps: numbers are assigned
while holding the file's lock, from the file's own last line (never from a cached counter another
process may have outrun).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from .._schema.levels import LEVEL, MESSAGE, TIMESTAMP
from .._schema.timestamps import utc_iso
from .._schema.values import tag_nonfinite, untag_nonfinite
from .atomic import fsync_dir
from .fdcache import FILES
from .runs import Meta, Run

_PROBE = 4096  # bytes read per probe while seeking; most lines are far shorter
_SCAN_BELOW = 16 * 1024  # below this span, stop bisecting and count newlines


class _Index(msgspec.Struct):
    index: int


class _Sequence(msgspec.Struct, rename={"index": "sequenceNumber"}):
    index: int


_ENCODER = msgspec.json.Encoder()
# One decoder per kind of log, shared: building one per track cost more than a wide track's writes.
_NUMBER_DECODERS: dict[str, msgspec.json.Decoder[_Index | _Sequence]] = {
    "index": msgspec.json.Decoder(_Index),
    "sequenceNumber": msgspec.json.Decoder(_Sequence),
}
_ENCODE_BLOCK = 2048  # points per msgspec call (about 0.5 ms here)
_LINES_DECODER = msgspec.json.Decoder(list[dict[str, Any]])


def py_frame_lines(first_index: int, blob: bytes) -> bytes:
    """Python twin of ``_speedups.frame_lines``: number JSONL lines as ``{"index": i, "data": line}``."""
    lines = blob.split(b"\n")
    lines.pop()  # after the last newline
    return b"".join(b'{"index":%d,"data":%b}\n' % item for item in enumerate(lines, first_index))


_NONE: Any = object()  # no item (what zip_longest fills with)


def py_interleave(lists: list[list[Any]]) -> list[Any]:
    """Python twin of ``_speedups.interleave``: item 0 of each list, then item 1 of each, and so on."""
    rows = itertools.zip_longest(*lists, fillvalue=_NONE)
    return [item for row in rows for item in row if item is not _NONE]


def py_frame_interleaved(blob: bytes, counts: list[int], firsts: list[int]) -> list[bytes]:
    """Python twin of ``_speedups.frame_interleaved``: the lines of ``blob``, encoded from
    ``interleave`` of lists of sizes ``counts``, back per list, framed as ``frame_lines(firsts[i])``."""
    lines = blob.split(b"\n")
    if lines.pop() or len(lines) != sum(counts):
        raise ValueError("the blob does not hold one line per item")
    parts: list[list[bytes]] = [[] for _ in counts]
    for i, line in zip(py_interleave([[i] * n for i, n in enumerate(counts)]), lines, strict=True):
        parts[i].append(line + b"\n")
    return [py_frame_lines(first, b"".join(part)) for first, part in zip(firsts, parts, strict=True)]


try:
    from .._speedups import frame_interleaved as frame_interleaved
    from .._speedups import frame_lines as frame_lines
    from .._speedups import interleave as interleave
except ImportError:  # built without a C compiler
    frame_lines = py_frame_lines
    frame_interleaved = py_frame_interleaved
    interleave = py_interleave


def encode_lines(first_index: int, points: Sequence[dict[str, Any]]) -> bytes:
    """Encode ``points`` as JSONL lines numbered from ``first_index``."""
    return frame_lines(first_index, encode_points(points))


def encode_runs(firsts: list[int], lists: list[list[dict[str, Any]]]) -> list[bytes]:
    """``encode_lines(first, points)`` of each list of many tracks' points, read in the order they
    were appended (``_speedups.c`` says why): in a wide session this is several times faster."""
    return frame_interleaved(encode_points(interleave(lists)), [len(p) for p in lists], firsts)


def encode_points(points: Sequence[dict[str, Any]]) -> bytes:
    """``points`` as strict JSON lines, one per point, non-finite floats tagged (``_schema.values``):
    the form points keep in ``data.jsonl``, on the wire to the server and in its tiers."""
    # a short list (a wide session's track) in one call, without the generator
    blob = _ENCODER.encode_lines(points) if len(points) <= _ENCODE_BLOCK else b"".join(_encode_blocks(points))
    # msgspec writes NaN/Infinity as null; a batch without any null cannot hold one.
    if b"null" in blob:
        blob = b"".join(_encode_blocks([tag_nonfinite(p) for p in points]))
    return blob


def _encode_blocks(points: Sequence[dict[str, Any]]) -> Iterator[bytes]:
    # One msgspec call holds the GIL throughout: a batch of 50,000 points would stop the caller's
    # thread (or an AsyncSession's event loop) for ~10 ms. Between blocks the GIL can change hands.
    for start in range(0, len(points), _ENCODE_BLOCK):
        yield _ENCODER.encode_lines(points[start : start + _ENCODE_BLOCK])


def encode_log_lines(first: int, entries: Sequence[dict[Any, Any]]) -> bytes:
    """Encode queued log entries as numbered ``logs.jsonl`` lines.

    A queued entry is one flat dict: the user's metadata under its str keys, and the timestamp (POSIX
    seconds), level and message under the int keys ``TIMESTAMP``, ``LEVEL``, ``MESSAGE``, which no
    metadata key can be. A dict of scalars is not tracked by the garbage collector; an entry holding
    a metadata dict would be, and a full queue of those makes every collection slow.
    """
    lines = []
    for number, entry in enumerate(entries, first):
        line: dict[str, Any] = {
            "sequenceNumber": number,
            "timestamp": utc_iso(entry[TIMESTAMP]),
            "level": entry[LEVEL],
            "message": entry[MESSAGE],
        }
        if len(entry) > 3:  # 0.2.x omits empty metadata
            metadata = dict(entry)  # not in place: a failed write is retried with the same entries
            del metadata[TIMESTAMP], metadata[LEVEL], metadata[MESSAGE]
            line["metadata"] = metadata
        lines.append(line)
    blob = _ENCODER.encode_lines(lines)
    if b"null" in blob:
        blob = _ENCODER.encode_lines([tag_nonfinite(line) for line in lines])
    return blob


class NumberedLog:
    """Appends to and reads from one numbered JSONL file; safe across threads and processes.

    ``with log.lock:`` excludes other threads and processes: a thread lock, then an exclusive
    ``flock`` on the log's own descriptor (``locked_fd``), pinned in ``FILES`` while held. No separate
    lock file: creating one per track doubled the files a wide session creates, and kept a second
    descriptor per track. ``flock`` belongs to the open file description, and each log has its own (a
    pinned descriptor is never closed), so closing any other descriptor of the file, in this process
    or not, never releases it; two logs on one path exclude each other even within one process. (On
    NFS, Linux emulates ``flock`` with ``fcntl`` locks, which a close of any of the process's
    descriptors of the file releases: two sessions of one process on one track there are not
    excluded from each other.)

    Args:
        path: The JSONL file.
        key: The field holding a line's number (``index`` or ``sequenceNumber``).
        encode: Turns items into lines numbered from a first number.
        fsync: Make every append durable (``os.fsync``) before it returns.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: str,
        encode: Callable[[int, Sequence[dict[str, Any]]], bytes],
        fsync: bool = False,
    ) -> None:
        # A str, not a Path: a wide session makes thousands of these, and pathlib's joins and
        # conversions at every open cost more than the open.
        self._file = os.fspath(path)
        self._thread_lock = threading.Lock()
        self.locked_fd = -1  # the file's descriptor, pinned, while the lock is held
        self._decoder = _NUMBER_DECODERS[key]
        self._key = key
        self._encode = encode
        self._fsync = fsync
        self._size = -1  # file size after our last append or tail check, under the lock
        self._count = 0  # lines in the file at that size
        self._before_append = (0, 0)  # size and count before the last append

    @property
    def lock(self) -> NumberedLog:
        """The log is its own lock (an object less per track: a wide session has thousands)."""
        return self

    def __enter__(self) -> NumberedLog:
        self._thread_lock.acquire()
        try:
            fd = self._pin()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                FILES.unpin(self)
                raise
        except BaseException:
            self._thread_lock.release()
            raise
        self.locked_fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            fcntl.flock(self.locked_fd, fcntl.LOCK_UN)
        finally:
            self.locked_fd = -1
            FILES.unpin(self)
            self._thread_lock.release()

    @property
    def path(self) -> Path:
        """The file."""
        return Path(self._file)

    @property
    def directory(self) -> Path:
        """The file's directory."""
        return Path(os.path.dirname(self._file))

    def append(
        self, points: Sequence[dict[str, Any]], intent: Callable[[int], None] | None = None
    ) -> tuple[int, int]:
        """Append ``points``; return ``(first_number, count_after)``. Call with ``lock`` held.

        ``intent(first_number)`` is called before anything is written (the spool records it).
        """
        fd = self.locked_fd  # pinned while the lock is held
        size, first = self._tail(fd)
        if intent is not None:
            intent(first)
        blob = self._encode(first, points)
        try:
            written = os.write(fd, blob)
            if written < len(blob):  # a short write (a signal, a full disk): write the rest
                _write_all(fd, memoryview(blob)[written:])
            if self._fsync:
                os.fsync(fd)
        except BaseException:
            # Leave no partial batch behind: the caller keeps the points and retries them.
            os.ftruncate(fd, size)
            raise
        self._size = size + len(blob)
        self._count = first + len(points)
        self._before_append = (size, first)
        return first, self._count

    def start_run(self) -> tuple[int, int, int] | None:
        """Take the thread lock for a run of :func:`~dreamlake._disk.runs.write_runs` if it is free
        and return ``(fd, size, count)``: the descriptor to write through, pinned (-1: none is open;
        the run opens the file), and the size and count last seen. None: write the slow way. End
        with :meth:`end_run`."""
        if not self._thread_lock.acquire(blocking=False):
            return None
        if self._size < 0 or self._fsync:  # a size never seen is checked by _tail first
            self._thread_lock.release()
            return None
        return FILES.pin_if_open(self), self._size, self._count

    def run(self, fd: int, size: int, lines: bytes, meta: Meta | None, make: str | None = None) -> Run:
        """The run appending ``lines`` (numbered from the count :meth:`start_run` returned); ``make``:
        the file's directory, to be made first (it must not exist yet)."""
        return fd, self._file, size, lines, meta, make

    def end_run(self, fd: int, written: tuple[int, int] | None) -> None:
        """Release what :meth:`start_run` took; ``written``: the run's new size and count."""
        if written is not None:
            self._before_append = (self._size, self._count)
            self._size, self._count = written
        if fd >= 0:
            FILES.unpin(self)
        self._thread_lock.release()

    def created(self) -> None:
        """The file is known not to exist yet (its directory is new): its count is 0."""
        self._size = self._count = 0

    def forget(self) -> None:
        """Count the file again before the next append (it may hold lines we did not write)."""
        self._size = -1

    def undo_append(self) -> None:
        """Remove what the last :meth:`append` wrote (what must accompany it failed). With ``lock``."""
        size, count = self._before_append
        os.ftruncate(self.locked_fd, size)
        self._size, self._count = size, count

    def count(self) -> int:
        """Number of points in the file (repairs a torn tail). Call with ``lock`` held."""
        return self._tail(self.locked_fd)[1]

    def stored_prefix(self, first: int, items: Sequence[dict[str, Any]]) -> int:
        """How many of ``items``, numbered from ``first``, the file holds as they would be written
        (a write cut short by a kill). Call with ``lock`` held."""
        fd = self.locked_fd
        size, count = self._tail(fd)
        n = min(len(items), count - first)
        if n <= 0:
            return 0
        start = 0 if first == 0 else self._offset(fd, first, size, count)
        end = size if first + n == count else self._offset(fd, first + n, size, count)
        stored = os.pread(fd, end - start, start).splitlines(keepends=True)
        expected = self._encode(first, items[:n]).splitlines(keepends=True)
        same = 0
        while same < n and stored[same] == expected[same]:
            same += 1
        return same

    def read(self, start: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Return up to ``limit`` entries from index ``start`` and the track's point count."""
        with self.lock:
            fd = self._pin()
            try:
                end, count = self._tail(fd)
            except BaseException:
                FILES.unpin(self)
                raise
        # Everything before ``end`` is complete and never rewritten, so the rest needs no lock
        # (the pin keeps the descriptor open).
        try:
            if start >= count or limit <= 0:
                return [], count
            stop = min(count, start + limit)
            first = self._offset(fd, start, end, count)
            last = end if stop == count else self._offset(fd, stop, end, count)
            chunk = os.pread(fd, last - first, first)
        finally:
            FILES.unpin(self)
        array = b"[" + chunk.rstrip(b"\n").replace(b"\n", b",") + b"]"
        try:
            entries = _LINES_DECODER.decode(array)
        except msgspec.DecodeError:
            entries = json.loads(array)  # bare NaN/Infinity, as dreamlake 0.2.x writes them
        if b'"$float"' in chunk:
            entries = [untag_nonfinite(entry) for entry in entries]
        return entries, count

    def close(self) -> None:
        """Close the file's descriptor (it is opened again if the log is used again)."""
        FILES.discard(self)

    def _pin(self) -> int:
        """The file's descriptor, kept open until ``FILES.unpin(self)``."""
        return FILES.pin(self, self._open)

    def _open(self) -> int:
        created = self._fsync and not os.path.exists(self._file)
        fd = os.open(self._file, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        if created:
            fsync_dir(os.path.dirname(self._file))
        return fd

    def _tail(self, fd: int) -> tuple[int, int]:
        """Return ``(size, count)``, truncating a torn or unparsable last line first."""
        size = os.fstat(fd).st_size
        if size == self._size:
            return size, self._count
        while size > 0:
            start = _line_start_before(fd, size)
            line = os.pread(fd, size - start, start)
            if line.endswith(b"\n"):
                index = self._number(line)
                if index >= 0:
                    self._size, self._count = size, index + 1
                    return size, index + 1
            # A crash mid-write left a partial line: cut it off before anyone builds on it.
            os.ftruncate(fd, start)
            size = start
        self._size, self._count = 0, 0
        return 0, 0

    def _number(self, line: bytes) -> int:
        """The number a line carries, or -1 if it does not parse (a torn line)."""
        try:
            return self._decoder.decode(line).index
        except msgspec.DecodeError:
            pass
        try:  # dreamlake 0.2.x writes non-finite floats as bare NaN/Infinity, which msgspec refuses
            number = json.loads(line)[self._key]
        except (ValueError, KeyError, TypeError):
            return -1
        return number if type(number) is int and number >= 0 else -1

    def _offset(self, fd: int, index: int, end: int, count: int) -> int:
        """Byte offset where the line of ``index`` starts (0 < index < count)."""
        lo, lo_index = 0, 0  # a line start and its index
        hi, hi_index = end, count  # a line start (or the end) and its index
        interpolate = True
        while index != lo_index and hi - lo > _SCAN_BELOW and hi_index - lo_index > 1:
            # Interpolation finds the line in a few probes when lines have similar lengths;
            # alternating with bisection keeps the worst case logarithmic when they do not.
            if interpolate:
                guess = lo + (hi - lo) * (index - lo_index) // (hi_index - lo_index)
            else:
                guess = (lo + hi) // 2
            interpolate = not interpolate
            start = _line_start_after(fd, min(max(guess, lo + 1), hi - 1), hi)
            if start >= hi:
                start = _line_start_before(fd, hi)  # the guess fell in the last line before hi
            line_index = self._number(_line_at(fd, start))
            if line_index == index:
                return start
            if line_index < index:
                lo, lo_index = start, line_index
            else:
                hi, hi_index = start, line_index
        if index == lo_index:
            return lo
        block = os.pread(fd, hi - lo, lo)
        pos = 0
        for _ in range(index - lo_index):
            pos = block.index(b"\n", pos) + 1
        return lo + pos


class TrackLog(NumberedLog):
    """A track's ``data.jsonl``."""

    def __init__(self, directory: str | os.PathLike[str], fsync: bool = False) -> None:
        super().__init__(f"{os.fspath(directory)}{os.sep}data.jsonl", "index", encode_lines, fsync)


def _write_all(fd: int, blob: bytes | memoryview) -> None:
    view = memoryview(blob)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _line_start_before(fd: int, end: int) -> int:
    """Start of the line that ends at ``end`` (the byte before ``end`` may be its newline)."""
    pos = end - 1  # skip the line's own newline
    while pos > 0:
        lo = max(0, pos - _PROBE)
        block = os.pread(fd, pos - lo, lo)
        nl = block.rfind(b"\n")
        if nl >= 0:
            return lo + nl + 1
        pos = lo
    return 0


def _line_start_after(fd: int, pos: int, end: int) -> int:
    """Start of the first line that begins after byte ``pos`` (``end`` if none)."""
    while pos < end:
        block = os.pread(fd, min(_PROBE, end - pos), pos)
        nl = block.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(block)
    return end


def _line_at(fd: int, start: int) -> bytes:
    parts = []
    while True:
        block = os.pread(fd, _PROBE, start)
        nl = block.find(b"\n")
        if nl >= 0 or not block:
            parts.append(block[: nl + 1] if nl >= 0 else block)
            return b"".join(parts)
        parts.append(block)
        start += len(block)
