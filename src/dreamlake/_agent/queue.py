"""The bounded in-process queue between ``append()`` and the agent.

Each track has its own deque (no re-grouping later); one :class:`Gate` bounds them all. A point's
ticket is the number of points admitted before it; ``gate.taken`` counts the points that have left
(written, dropped or refused). ``ticket - taken`` is therefore what is held in memory, queued or
in flight, and the hot path (``_agent/hotpath.py``) compares it with ``gate.threshold`` without a lock::

    ticket = gate.next_ticket()
    if ticket - gate.taken < gate.threshold:     # the common case: no lock, no wake-up
        buffer.items.append(fields)
    else:
        queue.admit(buffer, fields, ticket)      # wake the agent, apply on_full, or refuse

``threshold`` encodes the queue's state so the hot path needs no other check: ``batch_size`` while
the agent sleeps (the call that reaches it wakes the agent), ``max_queue`` once woken (no caller pays
for a wake-up the agent already has), -1 when closed or forked (every call goes to :meth:`admit`,
which refuses it or restarts the agent).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any

import anyio

from .._config import AgentConfig
from .._exceptions import DreamlakeError, QueueFullError, StorageError
from .._sinks.base import TrackSpec
from .hotpath import Fifo, Gate, Ready


class TrackBuffer:
    """Points of one track waiting for the agent."""

    __slots__ = ("items", "retry", "spec", "spec_dirty")

    def __init__(self, spec: TrackSpec) -> None:
        self.spec = spec
        self.items = Fifo()
        self.retry: list[dict[str, Any]] = []  # taken by a write that failed; written first next time
        self.spec_dirty = True


LOGS = "\x00logs"  # the log entries' buffer; no track name can hold NUL (_schema.names)
READY = Ready()  # what the async face's append returns when the point is queued without waiting
_RECHECK = 0.5  # seconds between re-checks of why a wait for room should end (closed, failing sink)


class PointQueue:
    """Per-track buffers (and one for log entries) under one bound, with the ``on_full`` policy.

    Parameter changes are queued beside them, unbounded: they are few, and each is small.
    """

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.gate = Gate()
        self.dropped = 0
        # Set by the owner: wake the agent (from any thread), and why appends are refused.
        self.waker: Callable[[], None] = lambda: None
        self.refusal: Callable[[], DreamlakeError | None] = lambda: None
        self.failure: StorageError | None = None  # the sink is failing: blocked callers give up
        # Set by the owner under durability="sync": write everything queued, fsynced, and return
        # (for the async face: something to await for that). Every append then takes the slow path.
        self.commit: Callable[[], Any] | None = None
        self._reset()
        self.buffers: dict[str, TrackBuffer] = {}
        self.logs = self.buffer(TrackSpec(LOGS))
        self.logs.spec_dirty = False
        self.params: list[dict[str, Any]] = []

    def _reset(self) -> None:
        self.gate.reset()
        self.gate.threshold = -1
        self.in_flight = 0  # taken for a write that has not finished
        self._woken = False  # the agent has been woken and has not started its flush yet
        self._open = False
        # Reentrant so that a signal handler running on a thread that holds it can step out of it.
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._room_event: anyio.Event | None = None  # what async callers waiting for room await
        self._warned_drop = False

    def open(self) -> None:
        """Let the hot path admit points."""
        with self._lock:
            self._open = True
            self.gate.threshold = self._fast(self.config.batch_size)

    def shut(self) -> None:
        """Send every later ``append`` to :meth:`admit`, which asks ``refusal`` why."""
        with self._room:
            self._open = False
            self.gate.threshold = -1
            self._room.notify_all()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's points and its (possibly held) locks."""
        for buffer in self.buffers.values():
            buffer.items.clear()
            buffer.retry = []
            buffer.spec_dirty = buffer is not self.logs
        self.params = []
        self._reset()

    @contextlib.contextmanager
    def released_for_signal_handler(self) -> Iterator[None]:
        """Let the agent take the lock while a signal handler on this thread flushes.

        The handler may interrupt this thread inside one of the sections below; the agent would then
        wait for the lock while the handler waits for the agent. Stepping out is safe because every
        section here only moves points between atomic containers and adds to counters, whose order
        does not matter (the Condition steps out the same way while it waits).
        """
        lock: Any = self._lock
        if not lock._is_owned():
            yield
            return
        state = lock._release_save()
        try:
            yield
        finally:
            lock._acquire_restore(state)

    def buffer(self, spec: TrackSpec) -> TrackBuffer:
        """Return the buffer of ``spec.name``, creating it on first use."""
        with self._lock:
            buffer = self.buffers.get(spec.name)
            if buffer is None:
                buffer = self.buffers[spec.name] = TrackBuffer(spec)
            return buffer

    @property
    def held(self) -> int:
        """Points in memory: queued or being written (callable from any thread)."""
        # list() copies in one step under the GIL; iterating the live dict races with buffer().
        return self.in_flight + sum(len(b.items) + len(b.retry) for b in list(self.buffers.values()))

    def _fast(self, threshold: int) -> int:
        """The fast path's threshold: none under ``durability="sync"``, where every call commits."""
        return 0 if self.commit is not None else threshold

    def admit(self, buffer: TrackBuffer, fields: dict[str, Any], ticket: int) -> None:
        """Slow path of ``append``: refuse, queue and wake the agent, or apply ``on_full``."""
        if not self._admit_now(buffer, fields, ticket, self.config.on_full):
            self._wait_for_room(ticket)
            buffer.items.append(fields)
        if self.commit is not None:
            self.commit()

    def admit_nowait(self, buffer: TrackBuffer, fields: dict[str, Any], ticket: int) -> None:
        """Slow path of ``append_nowait``: as :meth:`admit`, but ``block`` raises instead of waiting."""
        policy = self.config.on_full
        self._admit_now(buffer, fields, ticket, "raise" if policy == "block" else policy)

    def admit_async(self, buffer: TrackBuffer, fields: dict[str, Any], ticket: int) -> Awaitable[None]:
        """Slow path of the async face's ``append``: under ``block``, return what to await for room."""
        if self._admit_now(buffer, fields, ticket, self.config.on_full):
            return READY if self.commit is None else self.commit()
        return self._wait_for_room_async(buffer, fields, ticket)

    def _admit_now(self, buffer: TrackBuffer, fields: dict[str, Any], ticket: int, policy: str) -> bool:
        """Refuse, queue, or apply a policy other than ``block``; False if the caller must wait."""
        refusal = self.refusal()
        if refusal is not None:
            self.release(1)
            raise refusal
        if ticket - self.gate.taken < self.config.max_queue:
            buffer.items.append(fields)
            self.wake()
            return True
        if policy == "block":
            return False
        if policy == "raise":
            self.release(1)
            raise QueueFullError(
                f"the queue holds {self.config.max_queue} points and the sink has not caught up; "
                "raise max_queue, flush more often, or choose another on_full policy"
            )
        with self._lock:
            if policy == "drop_oldest" and self._drop_oldest(buffer):
                buffer.items.append(fields)
            self.dropped += 1
            self.gate.taken += 1
        self._warn_drop()
        return True

    def _drop_oldest(self, preferred: TrackBuffer) -> bool:
        """Drop the oldest queued point of ``preferred``, else of the fullest track."""
        victim = preferred if preferred.items else max(
            self.buffers.values(), key=lambda b: len(b.items)
        )
        if not victim.items:
            return False  # everything held is being written: drop the new point instead
        victim.items.popleft()
        return True

    def _wait_for_room(self, ticket: int) -> None:
        with self._room:
            while ticket - self.gate.taken >= self.config.max_queue:
                refusal = self.refusal() or self.failure
                if refusal is not None:
                    self.gate.taken += 1
                    raise refusal
                if self._mark_woken():
                    self.waker()  # non-blocking: it only schedules a callback on the agent's loop
                # The timeout only re-checks the refusal; room is signalled by release().
                self._room.wait(_RECHECK)

    async def _wait_for_room_async(self, buffer: TrackBuffer, fields: dict[str, Any], ticket: int) -> None:
        # The async face runs on the agent's own loop: wait for the event release() sets, never block.
        try:
            while ticket - self.gate.taken >= self.config.max_queue:
                refusal = self.refusal() or self.failure
                if refusal is not None:
                    raise refusal
                with self._lock:
                    woken = self._mark_woken()
                    if self._room_event is None:
                        self._room_event = anyio.Event()
                    room = self._room_event
                if woken:
                    self.waker()
                with anyio.move_on_after(_RECHECK):
                    await room.wait()
        except BaseException:  # refused or cancelled: the ticket leaves, the point was never queued
            self.release(1)
            raise
        buffer.items.append(fields)
        if self.commit is not None:
            await self.commit()

    def _warn_drop(self) -> None:
        if not self._warned_drop:
            self._warned_drop = True
            warnings.warn(
                f"dreamlake dropped points: the queue of {self.config.max_queue} points was full "
                f"(on_full={self.config.on_full!r}); see session.agent_stats()['dropped']",
                RuntimeWarning,
                stacklevel=4,
            )

    def wake(self) -> None:
        """Wake the agent, and keep later calls on the fast path until it has drained."""
        with self._lock:
            woken = self._mark_woken()
        if woken:
            self.waker()

    def _mark_woken(self) -> bool:
        """Whether the caller should wake the agent (it is not already woken). Call with the lock."""
        if not self._open or self._woken:
            return False
        self._woken = True
        self.gate.threshold = self._fast(self.config.max_queue)
        return True

    def pending(self, names: Collection[str] | None = None) -> list[tuple[TrackBuffer, int]]:
        """Snapshot the tracks (of ``names``, or all) with points or fields to write, and how many."""
        out: list[tuple[TrackBuffer, int]] = []
        with self._lock:
            self._woken = False
            if self._open:
                self.gate.threshold = self._fast(self.config.batch_size)  # the next batch wakes it
            for name, buffer in self.buffers.items():
                if names is not None and name not in names:
                    continue
                count = len(buffer.retry) + len(buffer.items)
                if count or buffer.spec_dirty:
                    out.append((buffer, count))
        return out

    def take(self, buffer: TrackBuffer, limit: int) -> list[Any]:
        """Take up to ``limit`` of the track's oldest points (failed ones first) for one write.

        Points stay queued until taken, one write at a time, so ``drop_oldest`` can still drop them.
        """
        with self._lock:
            buffer.spec_dirty = False
            points, buffer.retry = buffer.retry[:limit], buffer.retry[limit:]
            if len(points) < limit:
                points.extend(buffer.items.take(limit - len(points)))
            self.in_flight += len(points)
            return points

    def add_params(self, delta: dict[str, Any]) -> None:
        """Queue a parameter change and wake the agent."""
        with self._lock:
            self.params.append(delta)
        self.wake()

    def take_params(self) -> list[dict[str, Any]]:
        """Take every queued parameter change, oldest first."""
        with self._lock:
            deltas, self.params = self.params, []
            return deltas

    def give_back_params(self, deltas: list[dict[str, Any]]) -> None:
        """Return parameter changes whose write failed; they are written first next time."""
        with self._lock:
            self.params = deltas + self.params

    def give_back(self, buffer: TrackBuffer, points: list[Any]) -> None:
        """Return points whose write failed; they are written first next time."""
        with self._lock:
            buffer.retry = points + buffer.retry
            buffer.spec_dirty = True
            self.in_flight -= len(points)

    def written(self, count: int) -> None:
        """A write of ``count`` taken points finished: they leave memory."""
        with self._lock:
            self.in_flight -= count
        self.release(count)

    def release(self, count: int) -> None:
        """Mark ``count`` points as gone from memory and wake callers waiting for room."""
        with self._lock:
            self.gate.taken += count
            self._room.notify_all()
            event, self._room_event = self._room_event, None
        if event is not None:
            event.set()  # async waiters: always on the loop that calls this (the agent's)
