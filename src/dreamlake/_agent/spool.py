"""The spool: a copy of every accepted point, log entry and parameter change in a file mapped
``MAP_SHARED``, made by the hot path before the item is queued, so that kill -9 loses nothing.

Pages written into a shared file mapping belong to the kernel's page cache: they outlive the process
(only a machine crash loses them, which the ``flush``/``sync`` levels cover with fsync). One writer
(a session in one process) owns ``<local root>/.spool/<writer>.spool``, under a POSIX lock held while
it lives, and writes it only through the mapping (no system call on the hot path, so a stalled disk
never blocks ``append``)::

    header (magic, half size, two epochs) | names | table | half 0 | half 1

``names`` holds a byte count, then frames: the session the spool belongs to, then each track and
field key, each written before a record uses it.

Records are written by ``Fifo.append`` (``_speedups.c``, or :class:`PyFifo` below) into the active
half; the format is described there. Each track (logs and parameters count as tracks 0 and 1) has a
slot in the table: ``consumed`` (its records numbered below it are stored) and ``intent`` (a write
of its oldest records was starting at this index + 1; 0 if none), so that recovery neither loses a
point nor stores one twice when the process died between a write and its mark. At every flush the
agent seals the active half and writes on into the other; once everything sealed is stored, the
sealed half is freed. When both halves are in use, the spool is full and ``on_full`` applies.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import secrets
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .._schema.values import tag_nonfinite, untag_nonfinite

MAGIC = b"DLSPOOL1"
DIRECTORY = ".spool"
EPOCHS_AT = 16  # two u64 after magic (8) and half size (8)
NAMES_AT, NAMES_BYTES = 4096, 4 << 20
TABLE_AT = NAMES_AT + NAMES_BYTES
SLOT = struct.Struct("<QQ")  # consumed, intent
MAX_IDS = 1 << 16  # tracks (+ logs and parameters) a spool records; later tracks are queued unspooled
HALVES_AT = TABLE_AT + SLOT.size * MAX_IDS
LOGS_ID, PARAMS_ID, FIRST_TRACK_ID = 0, 1, 2
MIN_HALF = 4 << 20
BYTES_PER_POINT = 64  # a half holds max_queue points of this size: two float or int fields
RECORD_HEAD = struct.Struct("<IIIHHQ")  # length, epoch, track, fields, 0, seq
NONE, FALSE, TRUE, INT, FLOAT, STR, PACKED = range(7)
_FRAME = struct.Struct("<I")
_encoder = msgspec.msgpack.Encoder()
# Spools this process owns or is recovering. POSIX locks belong to the process, so its own lock
# does not keep it out, and closing any descriptor of a file drops them: never open these here.
_ours: set[Path] = set()
_ours_lock = threading.Lock()


def pack(value: Any) -> bytes:
    """The fallback encoding of a field value that is not a scalar (``PACKED`` in a record)."""
    try:
        return b"m" + _encoder.encode(value)
    except OverflowError:  # an int past 64 bits, inside a list or dict
        return b"j" + msgspec.json.encode(tag_nonfinite({"v": value}))


def unpack(blob: bytes) -> Any:
    """Inverse of :func:`pack`."""
    if blob[:1] == b"m":
        return msgspec.msgpack.decode(blob[1:])
    return untag_nonfinite(msgspec.json.decode(blob[1:]))["v"]


def half_bytes(max_queue: int) -> int:
    """Bytes of one half for a queue of ``max_queue`` points (rounded to pages)."""
    return -(-max(MIN_HALF, max_queue * BYTES_PER_POINT) // 4096) * 4096


class Spool:
    """The spool of one writer: the file, its mapping, and the names its records refer to."""

    def __init__(self, root: Path, identity: dict[str, Any], half: int) -> None:
        from .hotpath import Spool as Core  # the compiled writer, or its Python twin

        self.writer = secrets.token_hex(8)
        directory = Path(root) / DIRECTORY
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{self.writer}.spool"
        with _ours_lock:
            _ours.add(self.path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel when we die
        os.ftruncate(self._fd, HALVES_AT + 2 * half)  # sparse: only touched pages take room
        self._map = mmap.mmap(self._fd, HALVES_AT + 2 * half, mmap.MAP_SHARED)
        struct.pack_into("<8sQQQ", self._map, 0, MAGIC, half, 1, 0)  # half 0 active, epoch 1
        self._names_end = NAMES_AT + 8
        self.identity = identity
        self._frame(["session", identity])
        self.keys: dict[Any, int] = {}
        self.tracks: dict[str, int] = {}
        self.core = Core(
            mapping=self._map, epochs_at=EPOCHS_AT, halves_at=HALVES_AT, half_bytes=half,
            keys=self.keys, define=self._define, pack=pack,
        )

    def _frame(self, value: Any) -> None:
        blob = _encoder.encode(value)
        end = self._names_end + 4 + len(blob)
        if end > NAMES_AT + NAMES_BYTES:
            raise ValueError("the spool's names are full")
        self._map[self._names_end : end] = _FRAME.pack(len(blob)) + blob
        struct.pack_into("<Q", self._map, NAMES_AT, end - NAMES_AT - 8)  # then the count that shows it
        self._names_end = end

    def _define(self, key: Any) -> int:
        if len(self.keys) >= MAX_IDS or not isinstance(key, (str, int)):
            raise ValueError("no id for this key")
        key_id = self.keys[key] = len(self.keys)
        self._frame(["key", key_id, key])
        return key_id

    def track_id(self, name: str) -> int | None:
        """The id of track ``name`` (recorded on first use), or None when the table is full."""
        track_id = self.tracks.get(name)
        if track_id is None:
            track_id = FIRST_TRACK_ID + len(self.tracks)
            if track_id >= MAX_IDS:
                return None
            try:
                self._frame(["track", track_id, name])
            except ValueError:
                return None
            self.tracks[name] = track_id
        return track_id

    def mark(self, track_id: int, consumed: int) -> None:
        """Records of ``track_id`` numbered below ``consumed`` are stored (clears its intent)."""
        SLOT.pack_into(self._map, TABLE_AT + SLOT.size * track_id, consumed, 0)

    def intent(self, track_id: int, first_index: int) -> None:
        """A write of the track's oldest unstored records starts at ``first_index``."""
        struct.pack_into("<Q", self._map, TABLE_AT + SLOT.size * track_id + 8, first_index + 1)

    def intent_of(self, name: str | None, first_index: int) -> None:
        """:meth:`intent` by track name (None: the logs); the sink's ``intent`` hook."""
        track_id = LOGS_ID if name is None else self.tracks.get(name)
        if track_id is not None:
            self.intent(track_id, first_index)

    def close(self, remove: bool) -> None:
        """Unmap and unlock; with ``remove``, delete the file (everything in it is stored)."""
        if self._fd < 0:
            return
        if remove:  # unlinked while still locked, so no recovery can start on a removed spool
            self.path.unlink(missing_ok=True)
        self.forget()
        with _ours_lock:
            _ours.discard(self.path)

    def forget(self) -> None:
        """Unmap and close, leaving the file; alone, in a forked child (the parent's spool lives on:
        the child holds no lock on it, as POSIX locks are not inherited, so closing drops none)."""
        self.core.release()
        self._map.close()
        os.close(self._fd)
        self._fd = -1


@dataclass
class Orphan:
    """What a dead writer's spool holds that its storage may not: per track, the records not
    marked stored, in order, with their numbers, and where a write of them was starting (``intents``)."""

    path: Path
    identity: dict[str, Any]
    names: dict[int, str] = field(default_factory=dict)
    records: dict[int, list[dict[Any, Any]]] = field(default_factory=dict)
    seqs: dict[int, list[int]] = field(default_factory=dict)
    intents: dict[int, int] = field(default_factory=dict)
    keys: dict[int, Any] = field(default_factory=dict)
    _fd: int = -1
    _map: mmap.mmap | None = None

    def mark(self, track_id: int, stored: int) -> None:
        """The track's first ``stored`` records here are stored: a later recovery skips them."""
        seqs = self.seqs[track_id]
        consumed = seqs[stored] if stored < len(seqs) else seqs[-1] + 1
        assert self._map is not None
        SLOT.pack_into(self._map, TABLE_AT + SLOT.size * track_id, consumed, 0)

    def intent(self, track_id: int, first_index: int) -> None:
        assert self._map is not None
        struct.pack_into("<Q", self._map, TABLE_AT + SLOT.size * track_id + 8, first_index + 1)

    def remove(self) -> None:
        """Everything is stored: delete the files, then let go of the lock."""
        self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        """Let go of the spool (and its lock), leaving its files."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            with _ours_lock:
                _ours.discard(self.path)


def orphans(root: Path, match: Callable[[dict[str, Any]], bool]) -> Iterator[Orphan]:
    """The spools under ``root`` whose writer is dead and whose session ``match`` accepts, each
    locked for the caller (a spool whose owner lives, or that another process recovers, is skipped).
    The caller stores what it holds, then calls :meth:`Orphan.remove` (or ``release`` to leave it)."""
    directory = Path(root) / DIRECTORY
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.spool")):
        with _ours_lock:
            if path in _ours:
                continue
            _ours.add(path)
        orphan = _claim(path)
        if orphan is None:
            with _ours_lock:
                _ours.discard(path)
        elif not match(orphan.identity):
            orphan.release()
        else:
            _read_records(orphan)
            yield orphan


def dead_sessions(root: Path) -> list[dict[str, Any]]:
    """The sessions (identities) that dead writers' spools under ``root`` belong to."""
    found: list[dict[str, Any]] = []

    def note(identity: dict[str, Any]) -> bool:
        if identity not in found:
            found.append(identity)
        return False  # only looking: the session's own open() recovers it

    for _ in orphans(root, note):
        pass
    return found


def _claim(path: Path) -> Orphan | None:
    """Lock and read a dead writer's spool, or None (alive, claimed by another process, or gone)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # removed by its owner, or by another recovery, since the listing
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if path.exists():  # not recovered and removed between our open and our lock
            orphan = _read(path, fd)
            if orphan is not None:
                return orphan
    except OSError:
        pass
    os.close(fd)
    return None


def _read(path: Path, fd: int) -> Orphan | None:
    size = os.fstat(fd).st_size
    if size < HALVES_AT:
        return None
    spool = mmap.mmap(fd, size, mmap.MAP_SHARED)
    magic, half = struct.unpack_from("<8sQ", spool, 0)
    if magic != MAGIC or size < HALVES_AT + 2 * half:
        spool.close()
        return None
    names = _read_names(spool)
    if names is None:
        spool.close()
        return None
    identity, tracks, keys = names
    orphan = Orphan(path, identity, names={i: n for n, i in tracks.items()}, _fd=fd, _map=spool)
    orphan.keys = keys
    return orphan


def _read_records(orphan: Orphan) -> None:
    """Decode the records the dead writer had not marked stored, oldest half first."""
    spool = orphan._map
    assert spool is not None
    half, *epochs = struct.unpack_from("<QQQ", spool, 8)
    consumed = {}
    for half_no in sorted((h for h in (0, 1) if epochs[h]), key=lambda h: epochs[h]):
        start = HALVES_AT + half * half_no
        for track_id, seq, fields in _records(spool, start, start + half, epochs[half_no], orphan.keys):
            if track_id not in consumed:
                consumed[track_id], intent = SLOT.unpack_from(spool, TABLE_AT + SLOT.size * track_id)
                if intent:
                    orphan.intents[track_id] = intent - 1
            if seq < consumed[track_id]:
                continue
            if track_id in (LOGS_ID, PARAMS_ID) or track_id in orphan.names:
                orphan.records.setdefault(track_id, []).append(fields)
                orphan.seqs.setdefault(track_id, []).append(seq)


def _read_names(spool: mmap.mmap) -> tuple[dict[str, Any], dict[str, int], dict[int, Any]] | None:
    (used,) = struct.unpack_from("<Q", spool, NAMES_AT)
    blob = spool[NAMES_AT + 8 : NAMES_AT + 8 + min(used, NAMES_BYTES - 8)]
    identity: dict[str, Any] | None = None
    tracks: dict[str, int] = {}
    keys: dict[int, Any] = {}
    pos = 0
    while pos + 4 <= len(blob):
        (length,) = _FRAME.unpack_from(blob, pos)
        if pos + 4 + length > len(blob):
            break
        try:
            kind, *rest = msgspec.msgpack.decode(blob[pos + 4 : pos + 4 + length])
        except msgspec.DecodeError:
            break
        pos += 4 + length
        if kind == "session":
            identity = rest[0]
        elif kind == "track":
            tracks[rest[1]] = rest[0]
        elif kind == "key":
            keys[rest[0]] = rest[1]
    return None if identity is None else (identity, tracks, keys)


def _records(
    spool: mmap.mmap, start: int, end: int, epoch: int, keys: dict[int, Any]
) -> Iterator[tuple[int, int, dict[Any, Any]]]:
    """Decode a half's records up to the first that is absent, torn, or of an earlier epoch."""
    pos = start
    epoch &= 0xFFFFFFFF
    while pos + RECORD_HEAD.size <= end:
        length, record_epoch, track_id, count, _, seq = RECORD_HEAD.unpack_from(spool, pos)
        if record_epoch != epoch or length < RECORD_HEAD.size or pos + length > end or length % 8:
            return
        fields = _fields(spool, pos + RECORD_HEAD.size, pos + length, count, keys)
        if fields is None:
            return
        yield track_id, seq, fields
        pos += length


def _fields(spool: mmap.mmap, pos: int, end: int, count: int, keys: dict[int, Any]) -> dict[Any, Any] | None:
    fields: dict[Any, Any] = {}
    try:
        for _ in range(count):
            key_id, kind = struct.unpack_from("<HB", spool, pos)
            pos += 3
            if kind in (INT, FLOAT):
                (value,) = struct.unpack_from("<q" if kind == INT else "<d", spool, pos)
                pos += 8
            elif kind in (STR, PACKED):
                (length,) = struct.unpack_from("<I", spool, pos)
                raw = spool[pos + 4 : pos + 4 + length]
                pos += 4 + length
                value = raw.decode() if kind == STR else unpack(raw)
            elif kind <= TRUE:
                value = (None, False, True)[kind]
            else:
                return None
            fields[keys[key_id]] = value
    except (struct.error, KeyError, UnicodeDecodeError, msgspec.DecodeError):
        return None
    return fields if pos <= end else None
