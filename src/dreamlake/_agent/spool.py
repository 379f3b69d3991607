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
slot in the table, one word per mark (:class:`Marks`): for the local files, ``stored`` (its records
numbered below it are in the files) and ``intent`` (a write of its oldest records was starting at
this index + 1; 0 if none), so that recovery neither loses a point nor writes one twice when the
process died between a write and its mark; for a server (remote and hybrid mode, where the spool is
the journal), ``acked`` (the server acknowledged the records below it) and ``group``/``end`` (the
batch numbered ``group - 1`` holding the records up to ``end`` was sent, its answer not yet seen),
so that recovery resends that batch with its idempotency key and the server stores it once. The
header's ``next group`` is above every batch number the writer used. At every flush the agent seals
the active half and writes on into the other; once everything sealed is stored (and acknowledged),
the sealed half is freed. When both halves are in use, the spool is full and ``on_full`` applies.
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

MAGIC = b"DLSPOOL2"
DIRECTORY = ".spool"
EPOCHS_AT = 16  # two u64 after magic (8) and half size (8)
NEXT_GROUP_AT = 32
NAMES_AT, NAMES_BYTES = 4096, 4 << 20
TABLE_AT = NAMES_AT + NAMES_BYTES
SLOT = struct.Struct("<QQQQQ")  # stored, intent, acked, group, end
MAX_IDS = 1 << 16  # tracks (+ logs and parameters) a spool records; later tracks are queued unspooled
HALVES_AT = TABLE_AT + SLOT.size * MAX_IDS
LOGS_ID, PARAMS_ID, FIRST_TRACK_ID = 0, 1, 2
MIN_HALF = 4 << 20
BYTES_PER_POINT = 64  # a half holds max_queue points of this size: two float or int fields
RECORD_HEAD = struct.Struct("<IIIHHQ")  # length, epoch, track, fields, 0, seq
NONE, FALSE, TRUE, INT, FLOAT, STR, PACKED = range(7)
_FRAME = struct.Struct("<I")
_NEVER = 1 << 64  # above every seq
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


class Marks:
    """The table of a mapped spool: what is stored of each track, locally and on a server."""

    _map: mmap.mmap | None

    def _slot(self, track_id: int) -> tuple[int, int, int, int, int]:
        assert self._map is not None
        slot: tuple[int, int, int, int, int] = SLOT.unpack_from(self._map, TABLE_AT + SLOT.size * track_id)
        return slot

    def _word(self, track_id: int, word: int, value: int) -> None:
        assert self._map is not None
        struct.pack_into("<Q", self._map, TABLE_AT + SLOT.size * track_id + 8 * word, value)

    def mark(self, track_id: int, stored: int) -> None:
        """Records of ``track_id`` numbered below ``stored`` are in the local files (clears its intent)."""
        assert self._map is not None
        struct.pack_into("<QQ", self._map, TABLE_AT + SLOT.size * track_id, stored, 0)

    def intent(self, track_id: int, first_index: int) -> None:
        """A local write of the track's oldest unstored records starts at ``first_index``."""
        self._word(track_id, 1, first_index + 1)

    def sending(self, group: int, ends: dict[int, int]) -> None:
        """Batch ``group``, holding each track's records up to ``ends[track]``, is about to be sent."""
        assert self._map is not None
        if group >= self.next_group:
            struct.pack_into("<Q", self._map, NEXT_GROUP_AT, group + 1)
        for track_id, end in ends.items():
            struct.pack_into("<QQ", self._map, TABLE_AT + SLOT.size * track_id + 24, group + 1, end)

    def acked(self, ends: dict[int, int]) -> None:
        """The server stored each track's records up to ``ends[track]`` (clears the batch in flight)."""
        assert self._map is not None
        for track_id, end in ends.items():
            struct.pack_into("<QQQ", self._map, TABLE_AT + SLOT.size * track_id + 16, end, 0, 0)

    @property
    def next_group(self) -> int:
        """Above every batch number this writer has sent."""
        assert self._map is not None
        value: int = struct.unpack_from("<Q", self._map, NEXT_GROUP_AT)[0]
        return value


class Spool(Marks):
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
        self._map = self._mapping = mmap.mmap(self._fd, HALVES_AT + 2 * half, mmap.MAP_SHARED)
        struct.pack_into("<8sQQQ", self._mapping, 0, MAGIC, half, 1, 0)  # half 0 active, epoch 1
        self._names_end = NAMES_AT + 8
        self.identity = identity
        self._frame(["session", identity])
        self.keys: dict[Any, int] = {}
        self.tracks: dict[str, int] = {}
        self.core = Core(
            mapping=self._mapping,
            epochs_at=EPOCHS_AT,
            halves_at=HALVES_AT,
            half_bytes=half,
            keys=self.keys,
            define=self._define,
            pack=pack,
        )

    def _frame(self, value: Any) -> None:
        blob = _encoder.encode(value)
        end = self._names_end + 4 + len(blob)
        if end > NAMES_AT + NAMES_BYTES:
            raise ValueError("the spool's names are full")
        self._mapping[self._names_end : end] = _FRAME.pack(len(blob)) + blob
        struct.pack_into("<Q", self._mapping, NAMES_AT, end - NAMES_AT - 8)  # then the count that shows it
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

    def intent_of(self, name: str | None, first_index: int) -> None:
        """:meth:`intent` by track name (None: the logs); the sink's ``intent`` hook."""
        track_id = LOGS_ID if name is None else self.tracks.get(name)
        if track_id is not None:
            self.intent(track_id, first_index)

    def sync(self) -> None:
        """Write the mapping's dirty pages to disk (durability ``flush``: survive a machine crash)."""
        self._mapping.flush()

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
        self._mapping.close()
        self._map = None
        os.close(self._fd)
        self._fd = -1


@dataclass
class Orphan(Marks):
    """What a dead writer's spool holds that its storage may not: per track, the records above the
    lowest mark that applies (``stored`` for the local files, ``acked`` for a server), in order,
    each with its number (seq)."""

    path: Path
    identity: dict[str, Any]
    names: dict[int, str] = field(default_factory=dict)
    records: dict[int, list[tuple[int, dict[Any, Any]]]] = field(default_factory=dict)
    keys: dict[int, Any] = field(default_factory=dict)
    _fd: int = -1
    _map: mmap.mmap | None = None

    @property
    def writer(self) -> str:
        """The dead writer's id: the first half of its batches' idempotency keys."""
        return self.path.stem

    def unstored(self, track_id: int) -> list[tuple[int, dict[Any, Any]]]:
        """The track's records not in the local files."""
        stored = self._slot(track_id)[0]
        return [r for r in self.records.get(track_id, ()) if r[0] >= stored]

    def unacked(self, track_id: int) -> list[tuple[int, dict[Any, Any]]]:
        """The track's records the server has not acknowledged."""
        acked = self._slot(track_id)[2]
        return [r for r in self.records.get(track_id, ()) if r[0] >= acked]

    def intent_at(self, track_id: int) -> int | None:
        """Where a local write of the track's oldest unstored records was starting, if one was."""
        intent = self._slot(track_id)[1]
        return intent - 1 if intent else None

    def in_flight(self, track_id: int) -> tuple[int, int] | None:
        """The batch (number, end) that held the track's oldest unacknowledged records, if one was sent."""
        _, _, _, group, end = self._slot(track_id)
        return (group - 1, end) if group else None

    def done(self) -> bool:
        """Whether every record is where the session writes: its local files, its server, or both."""
        local, remote = sides(self.identity)
        return not any(
            (local and self.unstored(track_id)) or (remote and self.unacked(track_id))
            for track_id in self.records
        )

    def finish(self) -> None:
        """Delete the spool if everything in it is stored, else let go of it (for later)."""
        if self.done():
            self.remove()
        else:
            self.release()

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
    for path in spool_paths(root):
        orphan = claim(path)
        if isinstance(orphan, str):
            continue
        if not match(orphan.identity):
            orphan.release()
        else:
            read_records(orphan)
            yield orphan


def spool_paths(root: Path) -> list[Path]:
    """The spool files under the local root ``root``."""
    directory = Path(root) / DIRECTORY
    return sorted(directory.glob("*.spool")) if directory.is_dir() else []


def claim(path: Path) -> Orphan | str:
    """Lock and read a dead writer's spool, or say why not: ``"alive"`` (its owner, or a recovery,
    holds it), ``"gone"``, or ``"unreadable"``. Its records are read by :func:`read_records`."""
    with _ours_lock:
        if path in _ours:
            return "alive"
        _ours.add(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        why = "gone"  # removed by its owner, or by another recovery, since the listing
    else:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            why = "alive"
        else:
            orphan = _read(path, fd) if path.exists() else None  # not removed between open and lock
            if orphan is not None:
                return orphan
            why = "unreadable" if path.exists() else "gone"
        os.close(fd)
    with _ours_lock:
        _ours.discard(path)
    return why


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
    return Orphan(path, identity, names={i: n for n, i in tracks.items()}, keys=keys, _fd=fd, _map=spool)


def read_records(orphan: Orphan) -> None:
    """Decode the records the dead writer had not marked stored where it writes, oldest half first."""
    spool = orphan._map
    assert spool is not None
    local, remote = sides(orphan.identity)
    half, *epochs = struct.unpack_from("<QQQ", spool, 8)
    floors: dict[int, int] = {}
    for half_no in sorted((h for h in (0, 1) if epochs[h]), key=lambda h: epochs[h]):
        start = HALVES_AT + half * half_no
        for track_id, seq, fields in _records(spool, start, start + half, epochs[half_no], orphan.keys):
            floor = floors.get(track_id)
            if floor is None:
                stored, _, acked, _, _ = orphan._slot(track_id)
                floor = floors[track_id] = min(stored if local else _NEVER, acked if remote else _NEVER)
            if seq >= floor and (track_id in (LOGS_ID, PARAMS_ID) or track_id in orphan.names):
                orphan.records.setdefault(track_id, []).append((seq, fields))


def sides(identity: dict[str, Any]) -> tuple[bool, bool]:
    """Whether a spool's session writes local files, and whether it sends to a server."""
    return bool(identity.get("local", True)), bool(identity.get("url"))


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
