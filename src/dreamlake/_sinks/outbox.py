"""The remote sink's batches on their way to the server.

The points themselves wait in the spool (``_agent/spool.py``, the write-ahead copy the hot path
made) until the server acknowledges them: the spool is the journal. A :class:`Batch` is what one
flush handed over, encoded for the wire, with, per spooled track, the seq up to which it holds that
track's points (``ends``). Before a batch is sent its number and ends are written into the spool
(``sending``), and once it is acknowledged the spool marks those points stored for good
(``on_acked``): a process killed in between leaves a spool whose recovery resends that same
batch with the same idempotency key (``<writer>:<number>``), which the server stores once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .._disk.jsonl import encode_points
from .._schema.levels import LEVEL, MESSAGE, TIMESTAMP

REFUSED = ".refused"  # under the local root: batches the server refused for good, kept for a look
_ENCODE = msgspec.msgpack.Encoder()


@dataclasses.dataclass
class Batch:
    """One request's worth of tracks, log entries and parameter changes, and what it covers."""

    tracks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    logs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    parameters: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ends: dict[int, int] = dataclasses.field(default_factory=dict)  # spool track id -> seq end
    points: int = 0
    nbytes: int = 0
    number: int = -1  # set when sealed

    def body(self) -> bytes:
        """The request body (msgpack, the bulk route's shape)."""
        return _ENCODE.encode({"tracks": self.tracks, "logs": self.logs, "parameters": self.parameters})

    def add_track(self, name: str, points: Sequence[dict[str, Any]], spec: dict[str, Any]) -> None:
        # JSON lines, as the server stores them: it checks them but never decodes and re-encodes them.
        lines = encode_points(points)
        self.tracks.append({"name": name, "lines": lines, **spec})
        self.points += len(points)
        self.nbytes += len(lines)

    def add_logs(self, entries: Sequence[dict[Any, Any]]) -> None:
        for entry in entries:  # its own fields are under the int keys of _schema.levels
            metadata = {k: v for k, v in entry.items() if not isinstance(k, int)}
            record = {"timestamp": entry[TIMESTAMP], "level": entry[LEVEL], "message": entry[MESSAGE]}
            self.logs.append({**record, "metadata": metadata} if metadata else record)
            self.nbytes += 64 + len(entry[MESSAGE])

    def add_parameters(self, deltas: Sequence[dict[str, Any]]) -> None:
        self.parameters.extend(deltas)
        self.nbytes += 64 * len(deltas)

    @property
    def size(self) -> int:
        """Points, log entries and parameter changes."""
        return self.points + len(self.logs) + len(self.parameters)

    def __bool__(self) -> bool:
        return bool(self.tracks or self.logs or self.parameters or self.ends)


class Outbox:
    """The batches of one writer not yet acknowledged, oldest first, and the one being formed.

    ``sending`` records in the spool that a batch goes on the wire, ``on_acked`` what its
    acknowledgement stored (both None without a spool: then nothing survives a kill). Sealing happens
    on the agent's loop; :meth:`unsent` may be called from any thread.
    """

    def __init__(
        self,
        writer: str,
        sending: Callable[[int, dict[int, int]], None] | None = None,
        on_acked: Callable[[dict[int, int]], None] | None = None,
        first_number: int = 0,
    ) -> None:
        self.writer = writer
        self._sending = sending
        self._on_acked = on_acked
        self.open = Batch()
        self.sealed: list[Batch] = []
        self.refused = 0
        self._next = first_number
        self._lock = threading.Lock()

    def seal(self) -> Batch | None:
        """Close the batch being formed (if it holds anything) so it can be sent."""
        batch = self.open
        if not batch:
            return None
        with self._lock:
            batch.number, self._next = self._next, self._next + 1
            self.sealed.append(batch)
            self.open = Batch()
        return batch

    def sending(self, batch: Batch) -> None:
        """``batch`` goes on the wire: a recovery must resend it, with the same key."""
        if self._sending is not None:
            self._sending(batch.number, batch.ends)

    def acked(self, batch: Batch) -> None:
        """The server stored ``batch``."""
        with self._lock:
            self.sealed.remove(batch)
        if self._on_acked is not None:
            self._on_acked(batch.ends)

    def refuse(self, batch: Batch, root: Path, reason: str) -> Path:
        """The server refused ``batch`` for good: move it aside into a file (never dropped, never
        retried forever) and let its points leave the spool. Return the file."""
        directory = root / REFUSED
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.writer}-{batch.number}.msgpack"
        path.write_bytes(_ENCODE.encode({"reason": reason, "batch": msgspec.msgpack.decode(batch.body())}))
        self.refused += 1
        self.acked(batch)
        return path

    def unsent(self) -> tuple[int, int, int]:
        """Points, log entries and bytes handed over and not yet acknowledged."""
        with self._lock:
            batches = [*self.sealed, self.open]
        return (
            sum(b.points for b in batches),
            sum(len(b.logs) for b in batches),
            sum(b.nbytes for b in batches),
        )
