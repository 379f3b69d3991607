"""The hot paths, compiled from ``_speedups.c`` when the install could build it, else this module's
Python twins with the same behaviour (about 2x slower): ``Track.append``, ``Session.log``, the
queue of each track (``Fifo``), and the framing of encoded points as numbered JSONL lines.

``Gate`` holds one session's queue counters: tickets handed out, points ``taken`` out of memory, and
the ``threshold`` below which ``ticket - taken`` sends a point straight to its track's deque (see
``_agent/queue.py``). ``TrackCore.append`` checks each field against the JSON scalar types (anything else
goes through ``normalize``, which copies or raises), takes a ticket, and either appends to the deque
or calls the queue's slow path ``admit(fields, ticket)``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from .._schema.values import SCALAR_TYPES


class PyGate:
    """Python twin of ``_speedups.Gate``."""

    __slots__ = ("_seq", "taken", "threshold")

    def __init__(self) -> None:
        self._seq = itertools.count()  # next() on it is atomic under the GIL
        self.taken = 0
        self.threshold = -1

    def reset(self) -> None:
        """Start counting from zero (a forked child)."""
        self._seq = itertools.count()
        self.taken = 0

    def next_ticket(self) -> int:
        """Hand out one ticket."""
        return next(self._seq)


class PyFifo(deque[Any]):
    """Python twin of ``_speedups.Fifo`` (a deque: tracked by the garbage collector, unlike it)."""

    def take(self, n: int) -> list[Any]:
        """Remove and return the ``n`` oldest items (or all, if fewer) as a list."""
        # starmap calls popleft from C: about 40% cheaper than a comprehension.
        return list(itertools.starmap(self.popleft, itertools.repeat((), min(n, len(self)))))


class PyReady:
    """Python twin of ``_speedups.Ready``: an awaitable that is already done."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that ends at once


class PyTrackCore:
    """Python twin of ``_speedups.TrackCore``."""

    __slots__ = ("_admit", "_done", "_gate", "_items_append", "_normalize")

    def __init__(
        self,
        gate: PyGate,
        items_append: Callable[[dict[str, Any]], None],
        admit: Callable[[dict[str, Any], int], Any],
        normalize: Callable[[Any], dict[str, Any]],
        done: Any = None,
    ) -> None:
        self._gate = gate
        self._items_append = items_append
        self._admit = admit
        self._normalize = normalize
        self._done = done

    def append(self, **fields: Any) -> Any:
        """Queue one point (fire-and-forget); return ``done``, or what the slow path returns."""
        for value in fields.values():
            if type(value) not in SCALAR_TYPES:
                fields = self._normalize(fields)
                break
        return _enqueue(self, fields)


def _enqueue(core: PyTrackCore | PyLogCore, fields: dict[Any, Any]) -> Any:
    gate = core._gate
    ticket = next(gate._seq)
    if ticket - gate.taken < gate.threshold:
        core._items_append(fields)
        return core._done
    return core._admit(fields, ticket)


class PyLogCore:
    """Python twin of ``_speedups.LogCore``: every call takes the slow path, ``Session._log_slow``."""

    __slots__ = ("_admit", "_done", "_gate", "_items_append", "_slow")

    def __init__(
        self,
        gate: PyGate,
        items_append: Callable[[dict[str, Any]], None],
        admit: Callable[[dict[str, Any], int], Any],
        levels: dict[str | None, str],
        clock: Callable[[], float],
        slow: Callable[..., Any],
        done: Any = None,
    ) -> None:
        self._gate = gate
        self._items_append = items_append
        self._admit = admit
        self._slow = slow
        self._done = done

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
    from .._speedups import TrackCore as TrackCore

    COMPILED = True
except ImportError:  # built without a C compiler: same behaviour, slower
    Fifo = PyFifo  # type: ignore[assignment,misc]
    Gate = PyGate  # type: ignore[assignment,misc]
    LogCore = PyLogCore  # type: ignore[assignment,misc]
    Ready = PyReady  # type: ignore[assignment,misc]
    TrackCore = PyTrackCore  # type: ignore[assignment,misc]
    COMPILED = False
