"""The agent: an anyio task that moves queued points, log entries and parameter changes into the
sink in batches, and runs the session's file operations.

It sleeps until the queue crosses ``batch_size`` (the hot path wakes it once), ``flush_interval``
passes, or someone awaits :meth:`Agent.flush` (``flush()``, ``read()``, ``close()``). Writes are
serialised by one lock, so a flush covers every point appended before it began. A failed write keeps
its points (they stay counted against ``max_queue``) and is retried on the next cycle; the error is
warned about once and raised from the next ``flush()``/``close()``. File saves run concurrently
with all that (each in a worker thread); a flush also waits for the saves started before it.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import anyio

from .._exceptions import DreamlakeError, StorageError
from .._sinks.advice import advice
from .._sinks.base import FileRequest, GroupWriteError, Sink, TrackSpec
from .hotpath import release_interleaved
from .queue import PointQueue, TrackBuffer
from .recovery import outbox_of
from .spool import LOGS_ID, PARAMS_ID, Orphan, Spool, orphans, sides


class Agent:
    """Drains a :class:`PointQueue` into a :class:`Sink`."""

    def __init__(self, queue: PointQueue, sink: Sink, max_chunk: int | None = None) -> None:
        self.queue = queue
        self.sink = sink
        self._config = queue.config
        # Points per write: batch_size, or fewer where taking and freeing a chunk runs on a loop
        # that must stay responsive (AsyncSession's).
        self.max_chunk = min(max_chunk or queue.config.batch_size, queue.config.batch_size)
        self._stopping = False
        self.written = 0
        self.write_errors = 0
        self.flushes = 0
        self.recovered = 0  # items stored from dead runs' spools at open
        self._last_error: StorageError | None = None
        self._warned = False
        self._latencies: deque[float] = deque(maxlen=1024)  # seconds, of flushes that wrote
        self._saves: set[anyio.Event] = set()  # one per file save in progress, set when it ends
        self._save_error: DreamlakeError | None = None  # of a save nobody waited for

    def wake(self) -> None:
        """Wake the run loop; call on the agent's event loop."""
        self._wakeup.set()

    async def open(self) -> None:
        """Create or update the session's storage. Call first, on the agent's event loop."""
        # Made here, not in __init__: anyio picks their backend from the loop they are made in,
        # and a Session may be created inside a trio program while its agent runs on asyncio.
        self._wakeup = anyio.Event()
        self._write_lock = anyio.Lock()
        self._done = anyio.Event()
        self._closed = anyio.Event()
        try:
            await self.sink.open()
        except BaseException as exc:
            self.queue.close_spool()  # nothing was accepted yet: it goes
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open the session's storage ({exc}): {advice(exc)}") from exc
            raise
        spool = self.queue.spool
        if spool is not None:
            await self._recover(spool)
            self.sink.intent = spool.intent_of
            if self.sink.acks_later:
                self.queue.acks_later = True
                self.sink.attach_spool(spool, self.queue.acked)

    async def _recover(self, spool: Spool) -> None:
        """Store what dead runs of this session left in their spools, before anything new: their
        local part now, their server's part in the sink's background; point out the spools of other
        sessions (a killed run's session is seldom opened again)."""
        root = spool.path.parent.parent
        local, remote = sides(spool.identity)
        url = spool.identity.get("url")
        others: list[str] = []

        def ours(identity: dict[str, Any]) -> bool:
            theirs = sides(identity)
            if (identity.get("workspace"), identity.get("session")) == (
                spool.identity["workspace"], spool.identity["session"]
            ) and ((local and theirs[0]) or (remote and identity.get("url") == url)):
                return True
            others.append(f"{identity.get('workspace')}/{identity.get('session')}")
            return False

        for orphan in orphans(root, ours):
            try:
                if local and sides(orphan.identity)[0]:
                    for track_id in list(orphan.records):
                        await self._store_orphan(orphan, track_id)
            except BaseException:
                orphan.release()  # left for the next open or 'dreamlake recover'
                raise
            if remote and orphan.identity.get("url") == url:
                outbox = outbox_of(orphan, self._config.batch_size)
                self.recovered += sum(batch.size for batch in outbox.sealed)
                self.sink.adopt(outbox, orphan.identity, str(orphan.path), orphan.finish)
            else:
                orphan.finish()
        if others:
            warnings.warn(
                f"dreamlake: killed runs left points that were accepted but not yet stored in "
                f"{len(others)} spool(s) under {root / '.spool'} "
                f"(sessions {', '.join(sorted(set(others)))}); "
                f"they are stored when those sessions are opened again, or now with "
                f"'dreamlake recover --local-path {root}' (local files) or "
                f"'dreamlake sync --local-path {root}' (a server)",
                RuntimeWarning,
                stacklevel=1,
            )

    async def _store_orphan(self, orphan: Orphan, track_id: int) -> None:
        """Write a dead run's records of one track that its local files lack, exactly once."""
        pending = orphan.unstored(track_id)
        if not pending:
            return
        seqs = [seq for seq, _ in pending]
        records = [fields for _, fields in pending]
        sink = self.sink.local_files
        assert sink is not None

        def mark(count: int) -> None:  # the first ``count`` of these are in the files
            orphan.mark(track_id, seqs[count] if count < len(seqs) else seqs[-1] + 1)

        if track_id == PARAMS_ID:  # merging a change twice changes nothing
            await sink.write_parameters(records)
            mark(len(records))
            self.recovered += len(records)
            return
        name = None if track_id == LOGS_ID else orphan.names[track_id]
        done = 0
        first = orphan.intent_at(track_id)
        if first is not None:  # the dead writer was writing these: did it get that far?
            done = await sink.stored_prefix(name, first, records)
            if done:
                mark(done)
        self.recovered += len(records) - done
        sink.intent = lambda _name, first: orphan.intent(track_id, first)
        try:
            while done < len(records):
                chunk = records[done : done + self.max_chunk]
                if name is None:
                    await sink.write_logs(chunk)
                else:
                    await sink.write_track(TrackSpec(name), chunk)
                done += len(chunk)
                mark(done)
        finally:
            sink.intent = None

    async def run(self) -> None:
        """Flush on every wake-up or interval until :meth:`stop`; the sink's own background work
        (sending, for a remote sink) runs beside it until the sink is closed."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.sink.run)
            try:
                while not self._stopping:
                    with anyio.move_on_after(self._config.flush_interval):
                        await self._wakeup.wait()
                    self._wakeup = anyio.Event()
                    if not self._stopping:
                        await self._flush(None, raise_errors=False, yield_to_stop=True)
            finally:
                self._done.set()
            await self._closed.wait()
            tg.cancel_scope.cancel()

    async def flush(self, names: Collection[str] | None = None) -> None:
        """Write everything queued so far (of tracks ``names``, or all) and wait until the sink has
        stored it for good; raise what failed.

        Parameter changes are always written; log entries and file saves only by a full flush.
        """
        await self.hand_over(names)
        try:
            await self.sink.settle(names)
        except OSError as exc:
            raise StorageError(
                f"writing the tracks' metadata.json failed ({exc}): {advice(exc)}. The points are "
                "stored; the metadata is written again on the next flush(), read or close()"
            ) from exc
        await self.sink.drain()

    async def hand_over(self, names: Collection[str] | None = None) -> None:
        """Write everything queued so far to the sink (for a remote sink: into its journal)."""
        if names is None:
            await self._wait_for_saves()
        await self._flush(names, raise_errors=True)

    async def drain(self) -> None:
        """Wait until the sink has stored for good what it was handed (a remote sink: acknowledged)."""
        await self.sink.drain()

    async def stop(self, budget: float | None = None) -> None:
        """Write everything, close the sink (which may send for ``budget`` more seconds) and
        end :meth:`run`."""
        deadline = None if budget is None else time.monotonic() + budget
        self.sink.closing()  # nothing accepted waits on a bound now: it all goes to the sink
        self._stopping = True
        self._wakeup.set()
        await self._done.wait()
        # Set only now, not with closing(): a flush still running then would write the metadata
        # of its tracks, and this last one again.
        self.sink.last_writes()
        try:
            await self.hand_over(None)
        finally:
            try:
                await self.sink.close(self.stats(), deadline)
            finally:
                self._closed.set()
                self.queue.close_spool()

    async def read(self, name: str, start_index: int, limit: int) -> dict[str, Any]:
        """Flush ``name``, then read it from the sink."""
        await self.flush((name,))
        return await self.sink.read_track(name, start_index, limit)

    async def track_stats(self, name: str) -> dict[str, Any]:
        """Flush ``name``, then return its stats."""
        await self.flush((name,))
        return await self.sink.track_stats(name)

    async def list_tracks(self) -> list[dict[str, Any]]:
        """Flush everything, then list the session's tracks."""
        await self.flush()
        return await self.sink.list_tracks()

    async def read_parameters(self) -> dict[str, Any]:
        """Write queued parameter changes, then return the stored parameters."""
        await self.flush(())
        return await self.sink.read_parameters()

    async def save_file(self, request: FileRequest, background: bool) -> dict[str, Any]:
        """Save a file; if nobody waits for it (``background``), a failure is raised from flush()."""
        done = anyio.Event()
        self._saves.add(done)
        try:
            return await self.sink.save_file(request)
        except Exception as exc:
            error = exc if isinstance(exc, DreamlakeError) else StorageError(
                f"saving {str(request.source)!r} failed: {exc}"
            )
            if background and self._save_error is None:
                self._save_error = error
                warnings.warn(str(error), RuntimeWarning, stacklevel=1)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._saves.discard(done)
            done.set()

    async def list_files(self, prefix: str | None, tags: list[str] | None) -> list[dict[str, Any]]:
        """List the session's files, including saves started before this call."""
        await self._wait_for_saves()
        return await self.sink.list_files(prefix, tags)

    async def download_file(self, file_id: str, dest: Path | None) -> Path:
        """Copy a stored file out, verifying its checksum."""
        return await self.sink.download_file(file_id, dest)

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete a stored file."""
        return await self.sink.delete_file(file_id)

    async def update_file(self, file_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a stored file's description, tags or metadata."""
        return await self.sink.update_file(file_id, changes)

    async def _wait_for_saves(self) -> None:
        for done in list(self._saves):
            await done.wait()
        error, self._save_error = self._save_error, None
        if error is not None:
            raise error

    def stats(self) -> dict[str, Any]:
        """Counters of this agent: what was written, dropped, failed, and is still held, and how
        long flushes that wrote something took (percentiles of the last 1,024, in ms)."""
        latencies = sorted(self._latencies)
        return {
            "written": self.written,
            "queued": self.queue.held,
            "queuedBytes": self.queue.held_bytes,  # the estimate max_queue_bytes bounds
            "dropped": self.queue.dropped,
            "writeErrors": self.write_errors,
            "flushes": self.flushes,
            "recovered": self.recovered,
            "unspooled": self.queue.unspooled,
            "lastError": None if self._last_error is None else str(self._last_error),
            "flushLatencyMs": {
                name: round(_percentile(latencies, q) * 1000, 3) if latencies else None
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
            **self.sink.stats(),
        }

    async def _flush(
        self, names: Collection[str] | None, *, raise_errors: bool, yield_to_stop: bool = False
    ) -> None:
        """Write what is pending; with ``yield_to_stop``, leave what is not taken yet once
        :meth:`stop` begins, for its last writes (they bring the metadata in step as they write)."""
        async with self._write_lock:
            started, written_before = time.monotonic(), self.written
            error: StorageError | None = None
            self.queue.rotate_spool()  # what is queued now can be freed from the spool after this flush
            deltas = self.queue.take_params()
            if deltas:
                try:
                    await self.sink.write_parameters(deltas)
                except BaseException as exc:
                    self.queue.give_back(self.queue.params, deltas)
                    if not isinstance(exc, Exception):
                        raise
                    error = self._failed(exc, "parameters")
                else:
                    self._stored([(self.queue.params, deltas)])
            error = await self._write_pending(names, yield_to_stop) or error
            await self.sink.flushed()
            self.queue.free_spool()
            self.flushes += 1
            if self.written > written_before:
                self._latencies.append(time.monotonic() - started)
            self.queue.failure = error
            if error is None:
                self._last_error = None
            elif raise_errors:
                raise error

    async def _write_pending(self, names: Collection[str] | None, yield_to_stop: bool) -> StorageError | None:
        """Write what is pending in each buffer (of the tracks pending now, so a busy producer cannot
        stall a flush): the chunks of many tracks go to the sink as one group of up to ``max_chunk``
        points, so a wide session costs a sink call per batch, not per track. Each track is written
        once with what it holds when its turn comes (points appended since the snapshot too, up to
        ``max_chunk``), and only a track holding more than ``max_chunk`` is written again, after
        the others: a write costs per track as well as per point. Return the last failure."""
        queue, error = self.queue, None
        # buffers, not (buffer, count) pairs: thousands of pairs living through a flush would be
        # promoted by the collector, and trigger full collections of everything
        todo: deque[TrackBuffer] = deque(queue.pending(names))  # with what each is due to write
        while todo and not (yield_to_stop and self._stopping):
            buffer = todo.popleft()
            if buffer is queue.logs:
                chunk = queue.take(buffer, min(buffer.due, self.max_chunk))
                try:
                    if chunk:
                        await self.sink.write_logs(chunk)
                except BaseException as exc:
                    queue.give_back(buffer, chunk)  # all or none was stored
                    if not isinstance(exc, Exception):
                        raise  # cancellation (a close() past its deadline), after the give-back
                    error = self._failed(exc, "logs")
                    continue
                self._stored([(buffer, chunk)])
                self._rest_after(todo, buffer, chunk)
                continue
            buffers, chunks = [buffer], [queue.take(buffer, self.max_chunk)]
            points = len(chunks[0])
            while todo and todo[0] is not queue.logs:
                buffer = todo[0]
                room = self.max_chunk - points
                if room < max(1, buffer.held()):
                    break  # the track starts the next group rather than be split over two
                todo.popleft()
                chunk = queue.take(buffer, room)
                buffers.append(buffer)
                chunks.append(chunk)
                points += len(chunk)
            writes = [(b.spec, chunk) for b, chunk in zip(buffers, chunks, strict=True)]
            start = 0
            while start < len(buffers):
                try:
                    done = start + await self.sink.write_tracks(writes[start:])
                    failure: Exception | None = None
                except GroupWriteError as exc:
                    done, failure = start + exc.done, exc.cause
                except BaseException:
                    for b, chunk in zip(buffers[start:], chunks[start:], strict=True):
                        queue.give_back(b, chunk)  # all or none of each was stored
                    raise  # cancellation (a close() past its deadline), after the give-back
                self._stored(list(zip(buffers[start:done], chunks[start:done], strict=True)))
                # Freed track by track, a wide session's points cost a cache miss each: they lie
                # in memory in the order they were appended (sinks keep no list they were given).
                release_interleaved(chunks[start:done])
                for b, chunk in zip(buffers[start:done], chunks[start:done], strict=True):
                    self._rest_after(todo, b, chunk)
                if failure is not None:
                    queue.give_back(buffers[done], chunks[done])
                    error = self._failed(failure, f"track {buffers[done].spec.name!r}")
                start = done + 1  # one failing track does not hold back the others
        return error

    @staticmethod
    def _rest_after(todo: deque[TrackBuffer], buffer: TrackBuffer, chunk: list[Any]) -> None:
        """``chunk`` of what ``buffer`` was due to write is written: the rest goes after the others."""
        buffer.due -= len(chunk)
        if buffer.due > 0 and chunk:
            todo.append(buffer)

    def _stored(self, group: Sequence[tuple[TrackBuffer, list[Any]]]) -> None:
        """The writes of ``group`` (one buffer's, or a group write's tracks) finished."""
        self.written += sum(len(chunk) for b, chunk in group if b is not self.queue.params)
        self.queue.stored([(b, len(chunk)) for b, chunk in group])
        if self.queue.acks_later:
            for b, _ in group:
                if b.id is not None:
                    self.sink.handed(b.id, b.handed)  # the spool keeps them until acknowledged

    def _failed(self, exc: Exception, what: str) -> StorageError:
        self.write_errors += 1
        error = StorageError(
            f"writing {what} failed ({exc}): {advice(exc)}. {self.queue.held} points are kept in "
            "memory and will be retried; flush() raises until then"
        )
        error.__cause__ = exc
        self._last_error = error
        if not self._warned:
            self._warned = True
            warnings.warn(str(error), RuntimeWarning, stacklevel=1)
        return error


def _what(buffer: TrackBuffer, queue: PointQueue) -> str:
    return "logs" if buffer is queue.logs else f"track {buffer.spec.name!r}"


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank)."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
