"""Points on the server: hot-tier batch blobs, cold-tier chunks, and reads that cross both tiers.

A track's points ``0 .. chunked-1`` live in the cold tier as chunks of ``chunk_size`` points (chunk
``k`` holds ``[k*size, (k+1)*size)``); the rest are batches in the hot tier. A read finds its chunks
by arithmetic and takes the rest from the hot tier, so no point is ever read from both.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import msgspec
import zstandard

from .._schema.values import tag_nonfinite, untag_nonfinite
from .cold.base import ColdTier
from .hot.base import Batch, HotTier, TrackRecord

HOT_BATCH = 2048  # points per hot-tier record: a tail read decodes at most this many extra points
_CHUNK_CACHE = 32  # decoded cold chunks kept for repeated reads

_BLOB_ENCODER = msgspec.msgpack.Encoder()
_BLOB_DECODER = msgspec.msgpack.Decoder(list[dict[str, Any]])
_JSON = msgspec.json.Encoder()
_LINES = msgspec.json.Decoder(list[dict[str, Any]])


def to_blobs(points: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
    """Points as hot-tier records of at most ``HOT_BATCH`` points (msgpack keeps NaN and key order)."""
    return [
        (len(part), _BLOB_ENCODER.encode(part))
        for part in (points[i : i + HOT_BATCH] for i in range(0, len(points), HOT_BATCH))
    ]


def chunk_key(track_id: str, chunk: int) -> str:
    """The cold-tier key of a track's chunk."""
    return f"chunks/{track_id}/{chunk:010d}.jsonl.zst"


def encode_chunk(first: int, points: list[dict[str, Any]], created: list[str]) -> bytes:
    """A chunk as zstd-compressed JSON lines, ``{"index", "data", "createdAt"}`` as local ``data.jsonl``
    (non-finite floats tagged, see ``_schema.values``), so it is readable without dreamlake."""
    lines = [
        {"index": i, "data": tag_nonfinite(p), "createdAt": c}
        for i, (p, c) in enumerate(zip(points, created, strict=True), first)
    ]
    return zstandard.ZstdCompressor(level=3).compress(_JSON.encode_lines(lines))


def decode_chunk(blob: bytes) -> list[dict[str, Any]]:
    """The lines of a chunk, non-finite floats restored."""
    raw = zstandard.ZstdDecompressor().decompress(blob)
    lines: list[dict[str, Any]] = _LINES.decode(b"[" + raw.rstrip(b"\n").replace(b"\n", b",") + b"]")
    return [untag_nonfinite(line) if b"$float" in raw else line for line in lines]


def batch_points(batch: Batch) -> list[dict[str, Any]]:
    """The points of a hot-tier batch."""
    return _BLOB_DECODER.decode(batch.blob)


class PointReader:
    """Reads ranges of a track's points across the two tiers, caching recent cold chunks."""

    def __init__(self, hot: HotTier, cold: ColdTier, chunk_size: int) -> None:
        self._hot = hot
        self._cold = cold
        self._size = chunk_size
        self._cache: collections.OrderedDict[str, list[dict[str, Any]]] = collections.OrderedDict()
        self._lock = threading.Lock()

    async def read(self, track: TrackRecord, start: int, limit: int) -> list[dict[str, Any]]:
        """Points ``start .. start+limit-1`` that exist, as ``{"index", "data", "createdAt"}``."""
        while True:
            points = await self._read(track, start, min(start + limit, track.total))
            if points is not None:
                return points
            # The archiver moved hot points to the cold tier under us: read the counters again.
            fresh = await self._hot.get_track(track.session_id, track.name)
            assert fresh is not None
            track = fresh

    async def _read(self, track: TrackRecord, start: int, end: int) -> list[dict[str, Any]] | None:
        out: list[dict[str, Any]] = []
        index = start
        while index < min(end, track.chunked):  # the cold part, chunk by chunk
            chunk = index // self._size
            lines = await self._chunk(track.id, chunk)
            stop = min(end, track.chunked, (chunk + 1) * self._size)
            out.extend(lines[index - chunk * self._size : stop - chunk * self._size])
            index = stop
        for batch in await self._hot.read_batches(track.id, index, end) if index < end else ():
            if batch.start > index:
                return None  # a gap: those points were archived after ``track`` was read
            points = batch_points(batch)
            stop = min(end, batch.start + batch.count)
            out.extend(
                {"index": i, "data": points[i - batch.start], "createdAt": batch.created_at}
                for i in range(index, stop)
            )
            index = stop
        return out if index >= end else None

    async def _chunk(self, track_id: str, chunk: int) -> list[dict[str, Any]]:
        key = chunk_key(track_id, chunk)
        with self._lock:
            lines = self._cache.get(key)
            if lines is not None:
                self._cache.move_to_end(key)
                return lines
        lines = decode_chunk(await self._cold.get(key))
        with self._lock:
            self._cache[key] = lines
            while len(self._cache) > _CHUNK_CACHE:
                self._cache.popitem(last=False)
        return lines
