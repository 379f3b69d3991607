"""The remote sink's outbox on local disk: a batch leaves it only once the server acknowledged it.

One file per writer (one session in one process): ``<local root>/.journal/<writer id>.journal``.
It is append-only; each record is ``length (u32) | crc32 (u32) | body``, the body a msgpack array
``[kind, group, payload]``. The agent's writes between two flushes form one *group*, sent as one
request whose idempotency key is ``<writer id>:<group>``, so a group resent after a lost answer, a
client kill or a server kill is stored once. ``ACK``/``REFUSED`` records close a group. A torn or
damaged tail (a kill mid-record) is cut when the file is opened again.

The owner holds a POSIX lock on the file while it lives (not inherited by a forked child): a journal
whose lock can be taken belongs to a dead process, and ``dreamlake sync`` may send it.
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

_FRAME = struct.Struct("<II")
_ENCODE = msgspec.msgpack.Encoder()
_DECODE = msgspec.msgpack.Decoder()
_DECODE_RAW = msgspec.msgpack.Decoder(tuple[int, int, msgspec.Raw])
SUFFIX = ".journal"


class Kind(enum.IntEnum):
    """What a record holds."""

    HEADER = 0  # payload: {"writer", "url", "workspace", "session": {...}}
    TRACK = 1  # payload: {"name", "points", "description"?, "tags"?, "metadata"?}
    LOGS = 2  # payload: [{"timestamp", "level", "message", "metadata"?}, ...]
    PARAMS = 3  # payload: [flat delta, ...]
    SEAL = 4  # the group is complete: it may be sent
    ACK = 5  # the server stored the group
    REFUSED = 6  # payload: why the server refused the group for good (4xx)


@dataclasses.dataclass
class Group:
    """Where a group's records are in the file, and what they hold."""

    records: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (offset, length)
    points: int = 0
    logs: int = 0
    sealed: bool = False


class Journal:
    """One writer's outbox; see the module docstring. Appends may come from worker threads (the
    agent's writes, off its loop) and the loop (the sender's acknowledgements): a lock orders them."""

    def __init__(self, path: Path, fd: int, fsync: bool) -> None:
        self.path = path
        self._fd = fd
        self._fsync = fsync
        self.header: dict[str, Any] = {}
        self.groups: dict[int, Group] = {}  # open, sealed and unacknowledged groups only
        self.refused: dict[int, str] = {}
        self.next_group = 0
        self.size = os.fstat(fd).st_size
        self._lock = threading.Lock()

    @property
    def writer(self) -> str:
        """The writer id, the first half of every idempotency key."""
        writer: str = self.header["writer"]
        return writer

    @classmethod
    def create(cls, directory: Path, header: dict[str, Any], fsync: bool) -> Journal:
        """A new journal for a new writer, locked by this process."""
        directory.mkdir(parents=True, exist_ok=True)
        writer = secrets.token_hex(8)
        path = directory / f"{writer}{SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        journal = cls(path, fd, fsync)
        journal.header = {**header, "writer": writer}
        journal._append(Kind.HEADER, -1, journal.header)
        return journal

    @classmethod
    def adopt(cls, path: Path) -> Journal | None:
        """Open a journal left by a dead writer (None if its owner still holds it), cutting a torn tail."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None  # its owner is alive
        journal = cls(path, fd, fsync=True)
        try:
            journal._replay()
        except BaseException:
            journal.close()
            raise
        return journal

    def _replay(self) -> None:
        good = 0
        for offset, length, kind, group, payload in self._scan():
            self._index(offset, length, kind, group, payload)
            good = offset + length
        if not self.header:
            raise ValueError(f"{self.path} is not a dreamlake journal (no header); left as it is")
        if good < self.size:
            os.ftruncate(self._fd, good)  # a torn tail: the last record never completed
            self.size = good

    def _scan(self) -> Iterator[tuple[int, int, Kind, int, Any]]:
        """Every record; stops at a torn tail (a frame longer than what follows it), raises
        ``ValueError`` for a damaged one (complete but failing its CRC): that file is not guessed at."""
        data = os.pread(self._fd, self.size, 0)
        offset = 0
        while offset + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, offset)
            body = data[offset + _FRAME.size : offset + _FRAME.size + length]
            if len(body) < length or length == 0:
                return  # a frame cut short, or zeros where a crash left the file longer than written
            try:
                if zlib.crc32(body) != crc:
                    raise ValueError("checksum mismatch")
                kind, group, payload = _DECODE.decode(body)
                kind = Kind(kind)
            except (msgspec.DecodeError, ValueError, TypeError) as exc:
                raise ValueError(f"{self.path} is damaged at byte {offset} ({exc}); left as it is") from None
            yield offset, _FRAME.size + length, kind, group, payload
            offset += _FRAME.size + length

    def _index(self, offset: int, length: int, kind: Kind, group: int, payload: Any) -> None:
        if kind is Kind.HEADER:
            self.header = payload
            return
        self.next_group = max(self.next_group, group + (kind in (Kind.SEAL, Kind.ACK, Kind.REFUSED)))
        if kind in (Kind.ACK, Kind.REFUSED):
            self.groups.pop(group, None)
            if kind is Kind.REFUSED:
                self.refused[group] = str(payload)
            return
        entry = self.groups.setdefault(group, Group())
        if kind is Kind.SEAL:
            entry.sealed = True
        else:
            entry.records.append((offset, length))
            entry.points += _points_in(payload) if kind is Kind.TRACK else 0
            entry.logs += len(payload) if kind is Kind.LOGS else 0

    def _append(self, kind: Kind, group: int | None, payload: Any) -> None:
        with self._lock:
            self._append_locked(kind, self.next_group if group is None else group, payload)

    def _append_locked(self, kind: Kind, group: int, payload: Any) -> None:
        body = _ENCODE.encode((int(kind), group, payload))
        record = _FRAME.pack(len(body), zlib.crc32(body)) + body
        offset = self.size
        written = os.write(self._fd, record)  # O_APPEND: one write, never interleaved
        if written != len(record):
            os.ftruncate(self._fd, offset)
            raise OSError(f"short write to {self.path}")
        if self._fsync:
            os.fsync(self._fd)
        self.size += len(record)
        self._index(offset, len(record), kind, group, payload)

    def add(self, kind: Kind, payload: Any) -> None:
        """Add a record to the open group."""
        self._append(kind, None, payload)

    def seal(self) -> int | None:
        """Close the open group (if it holds anything) so it can be sent; return its number."""
        group = self.next_group
        if group not in self.groups:
            return None
        self._append(Kind.SEAL, group, None)
        return group

    def seal_all(self) -> None:
        """Seal a group left open by a dead writer: it was never sent (only sealed groups are)."""
        for group, entry in self.groups.items():
            if not entry.sealed:
                self._append(Kind.SEAL, group, None)

    def ack(self, group: int) -> None:
        """The server stored ``group``."""
        self._append(Kind.ACK, group, None)

    def refuse(self, group: int, reason: str) -> None:
        """The server refused ``group`` for good; it stays in the file, marked."""
        self._append(Kind.REFUSED, group, reason)

    def sendable(self) -> list[int]:
        """Sealed groups not yet acknowledged or refused, oldest first."""
        with self._lock:
            return sorted(g for g, entry in self.groups.items() if entry.sealed)

    def read(self, group: int) -> list[tuple[Kind, msgspec.Raw]]:
        """The records of ``group`` read back from the file, payloads left encoded (msgpack)."""
        with self._lock:
            records = list(self.groups[group].records)
        out = []
        for offset, length in records:
            kind, _, payload = _DECODE_RAW.decode(os.pread(self._fd, length, offset)[_FRAME.size :])
            out.append((Kind(kind), payload))
        return out

    def unsent(self) -> tuple[int, int]:
        """Points and log entries not yet acknowledged (callable from any thread)."""
        with self._lock:
            groups = list(self.groups.values())
        return sum(g.points for g in groups), sum(g.logs for g in groups)

    @property
    def done(self) -> bool:
        """Nothing left to send and nothing refused: the file may go."""
        with self._lock:
            return not any(g.records for g in self.groups.values()) and not self.refused

    def close(self, remove_if_done: bool = False) -> None:
        """Release the file (and delete it if everything was acknowledged)."""
        if self._fd < 0:
            return
        if remove_if_done and self.done:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # releases the lock
        self._fd = -1


def _points_in(track: dict[str, Any]) -> int:
    """The points of a TRACK payload: JSON lines, one per point."""
    lines: bytes = track["lines"]
    return lines.count(b"\n")


def find_journals(root: Path) -> list[Path]:
    """Journal files under a local root, oldest first."""
    directory = root / ".journal"
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
