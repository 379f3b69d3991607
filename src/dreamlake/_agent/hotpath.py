"""The hot paths, compiled from ``_speedups.c`` when the install could build it, else this module's
Python twins with the same behaviour (about 2x slower): ``Track.append``, ``Session.log``, the
queue of each track (``Fifo``, which first records each item in the session's ``Spool``, see
``_agent/spool.py``), and the framing of encoded points as numbered JSONL lines.

``Gate`` holds one session's queue counters: tickets handed out, points ``taken`` out of memory, and
the ``threshold`` below which ``ticket - taken`` sends a point straight to its track's deque (see
``_agent/queue.py``). ``TrackCore.append`` checks each field against the JSON scalar types (anything else
goes through ``normalize``, which copies or raises), takes a ticket, and either appends to the deque
or calls the queue's slow path ``admit([owner,] fields, ticket)`` (also when the spool is full).
"""

from __future__ import annotations

import itertools
import struct
import threading
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from .._schema.values import SCALAR_TYPES

_SLOT_BYTES = 8  # a point's place in its Fifo
_OTHER_BYTES = 64
_SHARED_INTS = range(-5, 257)


def _block(n: int) -> int:
    """``n`` bytes rounded up to the allocator's 16-byte blocks."""
    return (n + 15) & ~15


def _dict_bytes(n: int) -> int:
    if n == 0:
        return 64
    slots = 8
    while slots * 2 // 3 < n:
        slots *= 2
    index = 1 if slots <= 128 else 2 if slots <= 0x8000 else 4
    return 64 + _block(32 + slots * index + (slots * 2 // 3) * 16)  # the dict, then its table


def _value_bytes(value: Any) -> int:
    kind = type(value)
    if kind is float:
        return 32
    if kind is int:
        if value in _SHARED_INTS:
            return 0
        return 32 if -(2**60) < value < 2**60 else 48
    if kind is str:
        return _block(49 + len(value) if value.isascii() else 76 + 4 * len(value))
    if kind is list or kind is tuple:
        return 64 + _block(9 * len(value)) + sum(map(_value_bytes, value))
    if kind is dict:
        return _dict_bytes(len(value)) + sum(map(_value_bytes, value.values()))
    return 0 if value is None or kind is bool else _OTHER_BYTES


def py_point_bytes(point: Any) -> int:
    """Python twin of ``_speedups.point_bytes``: the estimated memory a queued point holds.

    CPython's own sizes, rounded up to the allocator's 16-byte blocks, for a dict of str keys (not
    counting the keys: they are the caller's), a float, an int and an ASCII str, so a point of
    scalars is counted exactly; 4 bytes a character for other strings, 9 bytes a slot for a list
    (a list built by appending has ~1/8 spare), plus what each holds.
    """
    return _SLOT_BYTES + _value_bytes(point)


def py_points_bytes(points: list[Any]) -> int:
    """Python twin of ``_speedups.points_bytes``."""
    return sum(map(py_point_bytes, points))


def py_release_interleaved(lists: list[list[Any]]) -> None:
    """Python twin of ``_speedups.release_interleaved``: replace the lists' items by None, item 0 of
    each list first, then item 1 of each, and so on (the order a wide session appended them)."""
    for s in range(max(map(len, lists), default=0)):
        for items in lists:
            if s < len(items):
                items[s] = None


class PyGate:
    """Python twin of ``_speedups.Gate``."""

    __slots__ = ("_bytes_lock", "_seq", "byte_threshold", "bytes", "taken", "threshold")

    def __init__(self) -> None:
        self._seq = itertools.count()  # next() on it is atomic under the GIL
        self.taken = 0
        self.threshold = -1
        self.bytes = 0
        self.byte_threshold = 2**63 - 1
        self._bytes_lock = threading.Lock()  # += from Python is not atomic; the C twin's is

    def reset(self) -> None:
        """Start counting from zero (a forked child)."""
        self._seq = itertools.count()
        self.taken = 0
        self.bytes = 0
        self._bytes_lock = threading.Lock()

    def add_bytes(self, n: int) -> None:
        """Add ``n`` (may be negative) to the bytes held."""
        with self._bytes_lock:
            self.bytes += n

    def next_ticket(self) -> int:
        """Hand out one ticket."""
        return next(self._seq)


class PySpool:
    """Python twin of ``_speedups.Spool`` (the record format is described in ``_speedups.c``)."""

    def __init__(
        self,
        mapping: Any,
        epochs_at: int,
        halves_at: int,
        half_bytes: int,
        keys: dict[Any, int],
        define: Callable[[Any], int],
        pack: Callable[[Any], bytes],
    ) -> None:
        self._map: memoryview | None = memoryview(mapping)
        self._epochs_at = epochs_at
        self._halves = (halves_at, halves_at + half_bytes)
        self.half_bytes = half_bytes
        self._keys, self._define, self._pack = keys, define, pack
        self.active = int(self.epoch(1) > self.epoch(0))
        self.pos = 0
        self.skipped = 0
        # The compiled spool is atomic under the GIL; Python code is not: one lock orders records,
        # their numbers and the agent's switches of half.
        self.lock = threading.RLock()

    def epoch(self, half: int) -> int:
        """The epoch of ``half`` (0: free)."""
        assert self._map is not None
        return int(struct.unpack_from("<Q", self._map, self._epochs_at + 8 * half)[0])

    @property
    def sealed(self) -> int | None:
        """The half waiting to be freed, or None."""
        return None if self._map is None or not self.epoch(1 - self.active) else 1 - self.active

    def _switch(self) -> bool:
        other = 1 - self.active
        if self.epoch(other):
            return False
        assert self._map is not None
        struct.pack_into("<Q", self._map, self._epochs_at + 8 * other, self.epoch(self.active) + 1)
        self.active, self.pos = other, 0
        return True

    def rotate(self) -> bool:
        """Seal the active half if the other is free."""
        with self.lock:
            return self._map is not None and self.pos > 0 and self._switch()

    def free(self, half: int) -> None:
        """Mark a sealed half free: all of it was written."""
        with self.lock:
            if self._map is not None and half != self.active:
                struct.pack_into("<Q", self._map, self._epochs_at + 8 * half, 0)

    def release(self) -> None:
        """Let go of the mapping (before closing it)."""
        if self._map is not None:
            self._map.release()
            self._map = None

    def write(self, track: int, seq: int, item: dict[Any, Any]) -> int:
        """Record ``item``: 1 written, 0 no room, -1 not encodable."""
        parts = []
        for key, value in item.items():
            key_id = self._keys.get(key)
            if key_id is None:
                key_id = self._define(key)
            kind = type(value)
            if value is None or kind is bool:
                parts.append(struct.pack("<HB", key_id, 0 if value is None else 2 if value else 1))
            elif kind is float:
                parts.append(struct.pack("<HBd", key_id, 4, value))
            elif kind is int and -(2**63) <= value < 2**63:
                parts.append(struct.pack("<HBq", key_id, 3, value))
            else:
                try:
                    raw, code = (value.encode(), 5) if kind is str else (self._pack(value), 6)
                except UnicodeEncodeError:
                    raw, code = self._pack(value), 6
                parts.append(struct.pack("<HBI", key_id, code, len(raw)) + raw)
        body = b"".join(parts)
        size = -(-(24 + len(body)) // 8) * 8
        if size > self.half_bytes or self._map is None:
            return -1
        if self.pos + size > self.half_bytes and not self._switch():
            return 0
        at = self._halves[self.active] + self.pos
        self._map[at + 8 : at + 24] = struct.pack("<IHHQ", track, len(item), 0, seq)
        self._map[at + 24 : at + 24 + len(body)] = body
        # The head word last: a record is whole or absent.
        self._map[at : at + 8] = struct.pack("<II", size, self.epoch(self.active) & 0xFFFFFFFF)
        self.pos += size
        return 1


class PyFifo(deque[Any]):
    """Python twin of ``_speedups.Fifo`` (a deque: tracked by the garbage collector, unlike it)."""

    appended = 0
    taken_bytes = 0  # the point_bytes of what the last take() returned
    _spool: PySpool | None = None
    _track = 0

    def append(self, item: Any) -> bool | None:  # type: ignore[override]
        """Queue ``item``, recording it in the spool first; False (nothing queued) if it is full."""
        spool = self._spool
        if spool is None or type(item) is not dict:
            super().append(item)
            self.appended += 1
            return None
        with spool.lock:
            try:
                written = spool.write(self._track, self.appended, item)
            except Exception:  # too many keys, or a value pack() refuses: queued without a record
                written = -1
            if written == 0:
                return False
            if written < 0:
                spool.skipped += 1
            else:
                self._last[spool.active] = (spool.epoch(spool.active), self.appended)
            super().append(item)
            self.appended += 1
        return None

    def push(self, item: Any) -> None:
        """Queue ``item`` without recording it in the spool (it is full and the caller cannot wait)."""
        if self._spool is not None:
            self._spool.skipped += 1
        super().append(item)
        self.appended += 1

    def attach(self, spool: PySpool | None, track: int = 0) -> None:
        """Record later items in ``spool`` (or none) as track id ``track``."""
        self._spool, self._track = spool, track
        self._last = [(0, -1), (0, -1)]

    def last_in(self, half: int) -> int:
        """Seq of this Fifo's last record in ``half`` of the spool (in its current epoch), or -1."""
        spool = self._spool
        if spool is None:
            return -1
        epoch, seq = self._last[half]
        return seq if epoch and epoch == spool.epoch(half) else -1

    def take(self, n: int) -> list[Any]:
        """Remove and return the ``n`` oldest items (or all, if fewer) as a list."""
        # starmap calls popleft from C: about 40% cheaper than a comprehension.
        out = list(itertools.starmap(self.popleft, itertools.repeat((), min(n, len(self)))))
        self.taken_bytes = py_points_bytes(out)  # the C Fifo keeps each size from the hot path
        return out


class PyReady:
    """Python twin of ``_speedups.Ready``: an awaitable that is already done."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that ends at once


class PyTrackCore:
    """Python twin of ``_speedups.TrackCore``."""

    __slots__ = ("_admit", "_done", "_gate", "_items_append", "_normalize", "_owner")

    def __init__(
        self,
        gate: PyGate,
        items_append: Callable[[dict[str, Any]], bool | None],
        admit: Callable[..., Any],
        normalize: Callable[[Any], dict[str, Any]],
        done: Any = None,
        owner: Any = None,
    ) -> None:
        self._gate = gate
        self._items_append = items_append
        self._admit = admit
        self._normalize = normalize
        self._done = done
        self._owner = owner  # admit's first argument, if not None

    def append(self, **fields: Any) -> Any:
        """Queue one point (fire-and-forget); return ``done``, or what the slow path returns."""
        for value in fields.values():
            if type(value) not in SCALAR_TYPES:
                fields = self._normalize(fields)
                break
        return _enqueue(self, fields, self._owner)


def _enqueue(core: PyTrackCore | PyLogCore, fields: dict[Any, Any], owner: Any = None) -> Any:
    gate = core._gate
    ticket = next(gate._seq)
    if (
        ticket - gate.taken < gate.threshold
        and gate.bytes < gate.byte_threshold
        and core._items_append(fields) is not False
    ):
        gate.add_bytes(py_point_bytes(fields))
        return core._done
    # the queue is past a threshold, or the spool is full
    admit: Callable[..., Any] = core._admit
    return admit(fields, ticket) if owner is None else admit(owner, fields, ticket)


class PyLogCore:
    """Python twin of ``_speedups.LogCore``: every ``log`` takes the slow path, ``Session._log_slow``."""

    __slots__ = ("_admit", "_done", "_gate", "_items_append", "_slow", "_track_slow", "_tracks")

    def __init__(
        self,
        gate: PyGate,
        items_append: Callable[[dict[str, Any]], bool | None],
        admit: Callable[[dict[str, Any], int], Any],
        levels: dict[str | None, str],
        clock: Callable[[], float],
        slow: Callable[..., Any],
        done: Any = None,
        tracks: dict[str, Any] | None = None,
        track_slow: Callable[..., Any] | None = None,
    ) -> None:
        self._gate = gate
        self._items_append = items_append
        self._admit = admit
        self._slow = slow
        self._done = done
        self._tracks = tracks
        self._track_slow = track_slow

    def track(self, *args: Any, **kwargs: Any) -> Any:
        """Return the handle of a track: a str name seen before from ``tracks``, else ``track_slow``."""
        if len(args) == 1 and not kwargs and type(args[0]) is str and self._tracks is not None:
            track = self._tracks.get(args[0])
            if track is not None:
                return track
        if self._track_slow is None:
            raise TypeError("this object has no tracks")
        return self._track_slow(*args, **kwargs)

    def log(self, *args: Any, **kwargs: Any) -> Any:
        """Queue a log entry, or return a builder without message."""
        return self._slow(*args, **kwargs)

    def _log_put(self, entry: dict[Any, Any]) -> Any:
        return _enqueue(self, entry)


try:
    from .._speedups import Fifo as Fifo
    from .._speedups import Gate as Gate
    from .._speedups import LogCore as LogCore
    from .._speedups import Ready as Ready
    from .._speedups import Spool as Spool
    from .._speedups import TrackCore as TrackCore
    from .._speedups import point_bytes as point_bytes
    from .._speedups import points_bytes as points_bytes
    from .._speedups import release_interleaved as release_interleaved

    COMPILED = True
except ImportError:  # built without a C compiler: same behaviour, slower
    Fifo = PyFifo  # type: ignore[assignment,misc]
    Gate = PyGate  # type: ignore[assignment,misc]
    point_bytes = py_point_bytes
    points_bytes = py_points_bytes
    release_interleaved = py_release_interleaved
    LogCore = PyLogCore  # type: ignore[assignment,misc]
    Ready = PyReady  # type: ignore[assignment,misc]
    Spool = PySpool  # type: ignore[assignment,misc]
    TrackCore = PyTrackCore  # type: ignore[assignment,misc]
    COMPILED = False
