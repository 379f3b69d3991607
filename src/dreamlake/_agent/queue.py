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

Bytes are bounded the same way: the hot path adds each point's estimate (``point_bytes``) to
``gate.bytes`` and admits while it is below ``gate.byte_threshold`` (``config.batch_bytes`` asleep,
``max_queue_bytes`` woken). :meth:`take` notes the bytes of each write and :meth:`stored` takes
them away, so ``gate.bytes`` counts what is queued, retried and being written, as ``held`` does.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from typing import Any

import anyio

from .._config import AgentConfig
from .._exceptions import DreamlakeError, QueueFullError, StorageError
from .._sinks.base import TrackSpec
from .hotpath import Fifo, Gate, Ready, point_bytes, points_bytes
from .spool import LOGS_ID, PARAMS_ID, Spool


class TrackBuffer:
    """Points of one track waiting for the agent.

    Each point has a number (its seq): the count of points appended to the track before it. The
    spool's mark for the track is the seq of its oldest point not yet stored (or dropped).
    """

    __slots__ = (
        "acked", "due", "flight_bytes", "handed", "id", "in_flight", "items", "retry", "retry_seqs",
        "spec", "spec_dirty",
    )  # fmt: skip

    def __init__(self, spec: TrackSpec) -> None:
        self.spec = spec
        self.items = Fifo()
        # taken by a write that failed, written first next time, and their seqs (empty: a shared
        # tuple, not two lists per track for every full garbage collection of a wide session)
        self.retry: Sequence[dict[str, Any]] = ()
        self.retry_seqs: Sequence[int] = ()
        self.in_flight: tuple[Sequence[int], int, int] = _IDLE  # seqs of the chunk being written
        self.flight_bytes = 0  # its estimated bytes (point_bytes)
        self.spec_dirty = True
        self.due = 0  # points the agent's flush in progress is to write (see PointQueue.pending)
        self.id: int | None = None  # in the spool
        # Sending to a server: the seq up to which points were handed to it, and acknowledged.
        self.handed = self.acked = 0

    def held(self) -> int:
        """Points queued or to be retried (an estimate from another thread than the agent's)."""
        return len(self.items) + len(self.retry)

    def unstored(self) -> int:
        """The seq of the oldest point neither stored nor dropped (with no write in flight)."""
        return self.retry_seqs[0] if self.retry_seqs else self.items.appended - len(self.items)

    def kept_from(self, acks_later: bool) -> int:
        """The seq of the oldest point the spool must keep: the oldest not stored for good."""
        if acks_later and self.handed > self.acked:
            return self.acked  # handed to the server, not yet acknowledged
        return self.unstored()


_IDLE: tuple[tuple[int, ...], int, int] = ((), 0, 0)  # TrackBuffer.in_flight without a write
LOGS = "\x00logs"  # the log entries' buffer; no track name can hold NUL (_schema.names)
READY = Ready()  # what the async face's append returns when the point is queued without waiting
#: Queued points per track (of the tracks holding some) that wake the agent when that is more than
#: ``batch_size`` (a wide session, see :meth:`PointQueue._widen`).
WIDE_POINTS = 25
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
        self.spool: Spool | None = None
        # Set by the agent when its sink sends to a server: a point is stored for good once the
        # server acknowledged it (:meth:`acked`), not when it was handed over.
        self.acks_later = False
        self._by_id: dict[int, TrackBuffer] = {}
        self._unspooled = 0  # of spools let go
        self.buffers: dict[str, TrackBuffer] = {}
        self.logs = self.buffer(TrackSpec(LOGS))
        self.logs.spec_dirty = False
        self.params = TrackBuffer(TrackSpec("\x00parameters"))  # its points are parameter changes

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
            self.gate.byte_threshold = self.config.batch_bytes

    def shut(self) -> None:
        """Send every later ``append`` to :meth:`admit`, which asks ``refusal`` why."""
        with self._room:
            self._open = False
            self.gate.threshold = -1
            self._room.notify_all()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's points, spool and (possibly held) locks."""
        for buffer in (*self.buffers.values(), self.params):
            buffer.items.clear()
            buffer.retry, buffer.retry_seqs = (), ()
            buffer.handed = buffer.acked = 0
            buffer.spec_dirty = buffer is not self.logs and buffer is not self.params
        if self.spool is not None:
            self.spool.forget()  # the child starts its own when it logs
            self.attach(None)
        self._reset()

    def attach(self, spool: Spool | None) -> None:
        """Record every later point in ``spool`` (or stop recording)."""
        with self._lock:
            self.spool = spool
            for buffer in (*self.buffers.values(), self.params):
                self._attach(buffer)

    def _attach(self, buffer: TrackBuffer) -> None:
        spool = self.spool
        if spool is None:
            buffer.id = None
        elif buffer is self.logs or buffer is self.params:
            buffer.id = LOGS_ID if buffer is self.logs else PARAMS_ID
        else:
            buffer.id = spool.track_id(buffer.spec.name)
        if buffer.id is None:
            buffer.items.attach(None)
        else:
            assert spool is not None
            buffer.items.attach(spool.core, buffer.id)
            self._by_id[buffer.id] = buffer

    @property
    def unspooled(self) -> int:
        """Points queued without a spool record (too many fields, too big, the spool's names full)."""
        spool = self.spool
        return self._unspooled + (0 if spool is None else spool.core.skipped)

    def close_spool(self) -> None:
        """Let go of the spool; delete it if everything recorded there is stored."""
        spool, self.spool = self.spool, None
        if spool is not None:
            with self._lock:
                stored = self.held == 0 and not self.params.retry and not len(self.params.items)
                if self.acks_later:
                    stored = stored and all(b.handed <= b.acked for b in self._by_id.values())
                for buffer in (*self.buffers.values(), self.params):
                    buffer.items.attach(None)
            self._unspooled += spool.core.skipped
            spool.close(remove=stored)

    def rotate_spool(self) -> None:
        """Seal the spool's active half (a flush begins), if the other one is free."""
        if self.spool is not None:
            with self._lock:
                self.spool.core.rotate()

    def free_spool(self) -> None:
        """Free the spool's sealed half if every point in it is stored, and wake waiters for room."""
        spool = self.spool
        if spool is None:
            return
        with self._lock:
            half = spool.core.sealed
            if half is None:
                return
            for buffer in (*self.buffers.values(), self.params):
                last = buffer.items.last_in(half)
                if last >= 0 and (
                    buffer.in_flight[2] or buffer.in_flight[0] or buffer.kept_from(self.acks_later) <= last
                ):
                    return
            spool.core.free(half)
        self.release(0)

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
                if self.spool is not None:
                    self._attach(buffer)
            return buffer

    @property
    def held(self) -> int:
        """Points in memory: queued or being written (callable from any thread)."""
        # list() copies in one step under the GIL; iterating the live dict races with buffer().
        return self.in_flight + sum(len(b.items) + len(b.retry) for b in list(self.buffers.values()))

    @property
    def held_bytes(self) -> int:
        """The estimated bytes of the points :attr:`held` (see ``hotpath.point_bytes``)."""
        return self.gate.bytes

    def _fast(self, threshold: int) -> int:
        """The fast path's threshold: none under ``durability="sync"``, where every call commits."""
        return 0 if self.commit is not None else threshold

    def admit(self, buffer: TrackBuffer, fields: dict[str, Any], ticket: int) -> None:
        """Slow path of ``append``: refuse, queue and wake the agent, or apply ``on_full``."""
        if not self._admit_now(buffer, fields, ticket, self.config.on_full):
            self._wait_for_room(buffer, fields, ticket)
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
        spool_full = False
        if self._room_for(ticket):
            spool_full = buffer.items.append(fields) is False
            # The agent frees the spool's sealed half once it has stored it; but what a server has
            # yet to acknowledge, only its acknowledgement frees: a flush with nothing queued would
            # not help, and every refused append would start one.
            if spool_full:
                if not (self.acks_later and ticket == self.gate.taken):
                    self.wake()
            else:
                self._crossed()
            if not spool_full:
                self.gate.add_bytes(point_bytes(fields))
                return True
        if policy == "block":
            return False
        if policy == "raise":
            self.release(1)
            raise QueueFullError(
                f"the queue holds {self.config.max_queue} points or {self.config.max_queue_bytes} "
                f"bytes{' (its spool is full)' if spool_full else ''} and the sink has not caught up; "
                "raise max_queue or max_queue_bytes, flush more often, or choose another on_full policy"
            )
        with self._lock:
            # Dropping a queued point frees no room in the spool: with it full, drop the new one.
            if policy == "drop_oldest" and not spool_full and self._drop_oldest(buffer):
                # A heavy point takes the room of as many old ones as it needs.
                size = point_bytes(fields)
                while self.gate.bytes + size > self.config.max_queue_bytes and self._drop_oldest(buffer):
                    self.dropped += 1
                    self.gate.taken += 1
                if buffer.items.append(fields) is False:  # the spool filled meanwhile
                    buffer.items.push(fields)
                self.gate.add_bytes(size)
            self.dropped += 1
            self.gate.taken += 1
        self._warn_drop(spool_full)
        return True

    def _room_for(self, ticket: int) -> bool:
        """Whether the queue has room for the point holding ``ticket``, in points and in bytes."""
        config = self.config
        return ticket - self.gate.taken < config.max_queue and self.gate.bytes < config.max_queue_bytes

    def _drop_oldest(self, preferred: TrackBuffer) -> bool:
        """Drop the oldest queued point of ``preferred``, else of the fullest track."""
        victim = preferred if preferred.items else max(
            self.buffers.values(), key=lambda b: len(b.items)
        )
        if not victim.items:
            return False  # everything held is being written: drop the new point instead
        self.gate.add_bytes(-point_bytes(victim.items.popleft()))
        return True

    def _wait_for_room(self, buffer: TrackBuffer, fields: dict[str, Any], ticket: int) -> None:
        with self._room:
            while not self._put(buffer, fields, ticket):
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
            while not self._put(buffer, fields, ticket):
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
        if self.commit is not None:
            await self.commit()

    def _put(self, buffer: TrackBuffer, fields: dict[str, Any], ticket: int) -> bool:
        """Queue the point if there is room for it, in the queue and in the spool."""
        if self._room_for(ticket) and buffer.items.append(fields) is not False:
            self.gate.add_bytes(point_bytes(fields))
            return True
        return False

    def _warn_drop(self, spool_full: bool) -> None:
        if not self._warned_drop:
            self._warned_drop = True
            full = "its spool" if spool_full else (
                f"the queue of {self.config.max_queue} points or {self.config.max_queue_bytes} bytes"
            )
            warnings.warn(
                f"dreamlake dropped points: {full} was full "
                f"(on_full={self.config.on_full!r}); see session.agent_stats()['dropped']",
                RuntimeWarning,
                stacklevel=4,
            )

    def _crossed(self) -> None:
        """A point was queued past a threshold: wake the agent, unless the queue is wide and its
        batch is not full yet (:meth:`_widen`)."""
        with self._lock:
            woken = not self._widen() and self._mark_woken()
        if woken:
            self.waker()

    def _widen(self) -> bool:
        """Raise the asleep thresholds to :data:`WIDE_POINTS` points per track with queued points
        (at most half of ``max_queue`` and ``max_queue_bytes``); True if what is held stays below
        the raised ones, so the agent need not wake yet. Call with the lock.

        A batch of ``batch_size`` points spread over 10,000 tracks is 5 points per track, and each
        track written costs a file open, lock and write whatever it holds: waking at 25 per track
        halves the writes of a wide session. The bounds (``max_queue``, the bytes, the spool) and
        ``flush_interval`` are unchanged; only the early wake-up comes later.
        """
        config, gate = self.config, self.gate
        if not self._open or self._woken or self.commit is not None:
            return False
        cap = config.max_queue // 2
        if gate.threshold >= cap or WIDE_POINTS * len(self.buffers) <= gate.threshold:
            return False  # already raised as far as it goes, or too few tracks to matter
        active = sum(1 for b in list(self.buffers.values()) if b.items)
        threshold = min(cap, WIDE_POINTS * active)
        byte_threshold = min(config.max_queue_bytes // 2, config.batch_bytes * threshold // config.batch_size)
        if threshold <= gate.threshold or self.held >= threshold or gate.bytes >= byte_threshold:
            return False
        gate.threshold, gate.byte_threshold = threshold, byte_threshold
        return True

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
        self.gate.byte_threshold = self.config.max_queue_bytes
        return True

    def pending(self, names: Collection[str] | None = None) -> list[TrackBuffer]:
        """Snapshot the tracks (of ``names``, or all) with points or fields to write; each buffer's
        ``due`` is how many points it holds now."""
        out: list[TrackBuffer] = []
        with self._lock:
            self._woken = False
            if self._open:
                self.gate.threshold = self._fast(self.config.batch_size)  # the next batch wakes it
                self.gate.byte_threshold = self.config.batch_bytes
            for name, buffer in self.buffers.items():
                if names is not None and name not in names:
                    continue
                count = len(buffer.retry) + len(buffer.items)
                if count or buffer.spec_dirty:
                    buffer.due = count
                    out.append(buffer)
        return out

    def take(self, buffer: TrackBuffer, limit: int) -> list[Any]:
        """Take up to ``limit`` of the track's oldest points (failed ones first) for one write.

        Points stay queued until taken, one write at a time, so ``drop_oldest`` can still drop them.
        """
        with self._lock:
            buffer.spec_dirty = False
            items = buffer.items
            head = items.appended - len(items)
            if not buffer.retry:  # the usual case, kept short: a wide session takes per track
                points = items.take(limit)
                if buffer is not self.params:
                    self.in_flight += len(points)
                    # what the Fifo took, by the sizes it noted at append: not by walking the points
                    # again, which in a wide session costs a cache miss each
                    buffer.flight_bytes = items.taken_bytes
                buffer.in_flight = ((), head, len(points))
                return points
            points, buffer.retry = list(buffer.retry[:limit]), buffer.retry[limit:]
            seqs, buffer.retry_seqs = buffer.retry_seqs[:limit], buffer.retry_seqs[limit:]
            taken = items.take(limit - len(points)) if len(points) < limit else []
            if buffer is not self.params:
                self.in_flight += len(points) + len(taken)
                buffer.flight_bytes = points_bytes(points) + (items.taken_bytes if taken else 0)
            points.extend(taken)
            buffer.in_flight = (seqs, head, len(points) - len(seqs))
            return points

    def add_params(self, delta: dict[str, Any]) -> None:
        """Queue a parameter change and wake the agent."""
        with self._lock:
            if self.params.items.append(delta) is False:
                self.params.items.push(delta)  # a few small changes: not worth blocking for
        self.wake()

    def take_params(self) -> list[dict[str, Any]]:
        """Take every queued parameter change, oldest first."""
        return self.take(self.params, len(self.params.retry) + len(self.params.items))

    def give_back(self, buffer: TrackBuffer, points: list[Any]) -> None:
        """Return points whose write failed; they are written first next time."""
        with self._lock:
            seqs, head, count = buffer.in_flight
            buffer.in_flight = _IDLE
            buffer.retry = [*points, *buffer.retry]
            buffer.retry_seqs = [*seqs, *range(head, head + count), *buffer.retry_seqs]
            if buffer is not self.params:
                buffer.spec_dirty = True
                self.in_flight -= len(points)

    def stored(self, writes: Sequence[tuple[TrackBuffer, int]]) -> None:
        """Writes of ``count`` taken points of each buffer finished (one group write, or one
        buffer's): they leave memory, and the spool unless a server has yet to acknowledge them
        (then ``buffer.handed`` is what it will acknowledge). One lock and one wake-up of callers
        waiting for room for the whole group."""
        total = 0
        with self._lock:
            spool = self.spool
            for buffer, count in writes:
                buffer.in_flight = _IDLE
                buffer.handed = buffer.unstored()
                if buffer.id is not None and spool is not None:
                    spool.mark(buffer.id, buffer.handed)  # in the local files (remote mode: unused)
                if buffer is not self.params:
                    self.gate.add_bytes(-buffer.flight_bytes)
                    total += count
            self.in_flight -= total
        if total:
            self.release(total)

    def acked(self, ends: dict[int, int]) -> None:
        """The server acknowledged each spooled track's points up to ``ends[id]``: free the spool."""
        spool = self.spool
        if spool is None:
            return
        with self._lock:
            spool.acked(ends)
            for track_id, end in ends.items():
                buffer = self._by_id.get(track_id)
                if buffer is not None:
                    buffer.acked = max(buffer.acked, end)
        self.free_spool()

    def release(self, count: int) -> None:
        """Mark ``count`` points as gone from memory and wake callers waiting for room."""
        with self._lock:
            self.gate.taken += count
            self._room.notify_all()
            event, self._room_event = self._room_event, None
        if event is not None:
            event.set()  # async waiters: always on the loop that calls this (the agent's)
