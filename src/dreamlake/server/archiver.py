"""The archiver: moves each full chunk of a track's points from the hot tier to the cold tier.

Three steps per chunk, each safe to crash after: (1) write the chunk object (put-if-absent, so a
redo or a second server keeps the first copy, which holds the same points); (2) record the chunk
in the hot tier, which also (3) drops the hot batches wholly inside archived ranges. Until (2)
commits, reads take those points from the hot tier; after it, from the chunk. Either way each
point is read exactly once.

Several servers on one store: each takes a lease on a track in the hot tier (a conditional update)
before archiving it, so normally one server builds a track's chunks; a server killed mid-archive
holds its lease until it expires, then another takes over. The lease only saves work: correctness
rests on the put-if-absent and on ``chunk_archived`` being conditional on the track's ``chunked``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets

import anyio

from .cold.base import ColdTier
from .hot.base import Batch, HotTier, TrackRecord
from .points import build_chunk, chunk_key

log = logging.getLogger("dreamlake.server")

_TRACKS_PER_PASS = 100
_CHUNKS_PER_STEP = 16  # chunks recorded per hot-tier write
_PARALLEL_CHUNKS = 4  # chunks built and stored at once
_PATIENCE = 2.0  # seconds a write to a backlogged track waits for the archiver before a 503


class Archiver:
    """Archives full chunks, woken after ingests and otherwise every ``interval`` seconds."""

    def __init__(
        self,
        hot: HotTier,
        cold: ColdTier,
        chunk_size: int,
        interval: float,
        max_buffered: int,
        lease: float = 10.0,
    ) -> None:
        self._hot = hot
        self._cold = cold
        self._size = chunk_size
        self._interval = interval
        self._max_buffered = max_buffered
        self._lease = lease
        self.owner = secrets.token_hex(8)  # this server, in the hot tier's archiving leases
        #: (session id, track name) of tracks holding more than ``max_buffered`` hot points: the bulk
        #: route answers 503 for them until the archiver catches up, so the hot tier stays bounded.
        self.backlogged: set[tuple[str, str]] = set()
        self._chunked: dict[str, int] = {}  # track id -> archived points, as last seen
        self._wake = anyio.Event()
        self._progress = anyio.Event()  # set after each archiving step
        self._workers = anyio.CapacityLimiter(_PARALLEL_CHUNKS)
        self.chunks_written = 0
        self.failures = 0

    def ingested(self, session_id: str, name: str, track_id: str, total: int) -> None:
        """A write brought a track to ``total`` points: wake up if a chunk filled, and hold the track
        back (503) if it now holds more hot points than allowed, until the archiver catches up."""
        buffered = total - self._chunked.get(track_id, 0)
        if buffered >= self._size:
            self._wake.set()
        if buffered > self._max_buffered:
            self.backlogged.add((session_id, name))

    async def room(self, tracks: list[tuple[str, str]], patience: float = _PATIENCE) -> bool:
        """Whether these ``(session id, name)`` tracks may take more points, waiting up to
        ``patience`` seconds for the archiver to bring a backlogged one back under the bound (a short
        wait smooths the flow; a refusal makes the client wait ``Retry-After`` seconds)."""
        with anyio.move_on_after(patience):
            while any(track in self.backlogged for track in tracks):
                self._wake.set()
                await self._progress.wait()
        return not any(track in self.backlogged for track in tracks)

    async def run(self) -> None:
        """Archive until cancelled; a cancellation lands between steps, never inside a tier write."""
        while True:
            with anyio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                while await self.archive_once():
                    pass
            except Exception:  # a tier that is down: log once per failure, retry next pass
                self.failures += 1
                log.warning("archiver pass failed; retrying", exc_info=True)

    async def archive_once(self) -> int:
        """One pass: the full chunks of each track that has some (at most ``_CHUNKS_PER_STEP`` each, so
        no track waits long behind another); returns the number of chunks archived."""
        tracks = await self._hot.tracks_to_archive(self._size, _TRACKS_PER_PASS)
        self.backlogged = {(t.session_id, t.name) for t in tracks if t.total - t.chunked > self._max_buffered}
        self._chunked.update((t.id, t.chunked) for t in tracks)
        done = 0
        for track in tracks:
            with anyio.CancelScope(shield=True):
                if not await self._hot.lease_track(track.id, self.owner, self._lease):
                    continue  # another server archives it
                try:
                    done += await self._archive(track)
                except Exception:
                    # Give the track back at once: another server (or this one's next try) may
                    # reach a cold tier that this attempt could not.
                    with contextlib.suppress(Exception):  # the original error says more
                        await self._hot.lease_track(track.id, self.owner, 0)
                    raise
        return done  # 0 when nothing moved: the run loop then waits rather than spins

    async def _archive(self, track: TrackRecord) -> int:
        """Write the track's next full chunks to the cold tier, then record them all in one hot-tier
        step (one write transaction per track and pass, however many chunks)."""
        first_chunk = track.chunked // self._size
        count = min((track.total - track.chunked) // self._size, _CHUNKS_PER_STEP)
        first, end = first_chunk * self._size, (first_chunk + count) * self._size
        batches = await self._hot.read_batches(track.id, first, end)
        written: list[int] = []
        failed: list[Exception] = []
        # Chunks are built and stored side by side: compression and the cold tier's fsyncs (or
        # uploads) wait outside the GIL, so one chunk's wait is another's work.
        async with anyio.create_task_group() as tg:
            for k in range(first_chunk, first_chunk + count):
                tg.start_soon(self._put_chunk, track.id, k, batches, written, failed)
        if failed:
            raise failed[0]  # the tier is down: the run loop reports it and tries again later
        if len(written) < count:
            return 0  # another server archived them meanwhile: its record says so
        if not await self._hot.chunk_archived(track.id, first_chunk, self._size, count):
            return 0
        self._chunked[track.id] = end
        if track.total - end <= self._max_buffered:
            self.backlogged.discard((track.session_id, track.name))
        self._progress.set()
        self._progress = anyio.Event()
        self.chunks_written += count
        return count

    async def _put_chunk(
        self, track_id: str, chunk: int, batches: list[Batch], written: list[int], failed: list[Exception]
    ) -> None:
        try:
            async with self._workers:
                blob = await anyio.to_thread.run_sync(build_chunk, chunk * self._size, self._size, batches)
                if blob is not None:
                    await self._cold.put(chunk_key(track_id, chunk), blob)
                    written.append(chunk)
        except Exception as exc:
            failed.append(exc)
