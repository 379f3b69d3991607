"""Points on the server: hot-tier batch blobs, cold-tier chunks, and reads that cross both tiers.

A track's points ``0 .. chunked-1`` live in the cold tier as chunks of ``chunk_size`` points (chunk
``k`` holds ``[k*size, (k+1)*size)``); the rest are batches in the hot tier. A read finds its chunks
by arithmetic and takes the rest from the hot tier, so no point is ever read from both.

Both tiers hold points as JSON lines (strict JSON, non-finite floats tagged as in ``_schema.values``),
encoded once at ingest: archiving a chunk only slices hot blobs at line ends, numbers the lines
(``{"index": i, "data": ...}``, as local ``data.jsonl``) and compresses them, and a read decodes only
the lines it returns.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import zstandard

from .._disk.jsonl import encode_points, frame_lines
from .._schema.values import untag_nonfinite
from .cold.base import ColdTier
from .hot.base import Batch, HotTier, TrackRecord

HOT_BATCH = 2048  # points per hot-tier record: a tail read decodes at most this many extra lines
_CHUNK_CACHE = 32  # cold chunks kept (as their lines) for repeated reads
_ZSTD_LEVEL = 1  # 1.1 ms and ~30 KB per 10,000-point chunk here; level 3 saves 4 % for 35 % more time

_JSON = msgspec.json.Encoder()
_HEADER = msgspec.json.Decoder()
_LINES = msgspec.json.Decoder(list[dict[str, Any]])


class _Object(msgspec.Struct, gc=False):
    """Any JSON object, its fields skipped unread: validating lines builds no points."""


_OBJECTS = msgspec.json.Decoder(list[_Object])


def to_blobs(points: Sequence[dict[str, Any]]) -> list[tuple[int, bytes]]:
    """Points as hot-tier records of at most ``HOT_BATCH`` points each."""
    return lines_to_blobs(encode_points(points))


def lines_to_blobs(lines: bytes) -> list[tuple[int, bytes]]:
    """JSON lines (each ending in a newline) as hot-tier records of at most ``HOT_BATCH`` lines."""
    parts = lines.split(b"\n")
    parts.pop()  # after the last newline
    return [
        (len(parts[i : i + HOT_BATCH]), b"\n".join(parts[i : i + HOT_BATCH]) + b"\n")
        for i in range(0, len(parts), HOT_BATCH)
    ]


def check_lines(lines: bytes) -> int:
    """The number of points in ``lines``; ``ValueError`` unless each line is one JSON object and the
    last ends in a newline (checked without building the points)."""
    if not lines:
        return 0
    if not lines.endswith(b"\n"):
        raise ValueError("lines must end with a newline")
    # Every newline made a comma: a newline between tokens of a value (or a blank line) leaves a
    # comma where JSON allows none, and one inside a string (raw, so not JSON) is caught by the
    # count. So the lines are valid exactly when this parses as one object per newline.
    try:
        objects = _OBJECTS.decode(b"[" + lines[:-1].replace(b"\n", b",") + b"]")
    except msgspec.ValidationError:
        raise ValueError("each line must hold one JSON object") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"lines are not JSON: {exc}") from None
    count = lines.count(b"\n")
    if len(objects) != count:
        raise ValueError("each line must hold one JSON object")
    return count


def decode_lines(lines: Sequence[bytes]) -> list[Any]:
    """JSON lines (without their newlines) back to values, non-finite floats restored."""
    if not lines:
        return []
    joined = b"[" + b",".join(lines) + b"]"
    values = _LINES.decode(joined)
    return [untag_nonfinite(v) for v in values] if b'"$float"' in joined else values


def chunk_key(track_id: str, chunk: int) -> str:
    """The cold-tier key of a track's chunk."""
    return f"chunks/{track_id}/{chunk:010d}.jsonl.zst"


def build_chunk(first: int, size: int, batches: Sequence[Batch]) -> bytes | None:
    """Chunk ``[first, first+size)`` from the hot batches holding it, or None if they do not (another
    server archived it meanwhile). One header line, ``{"first", "count", "createdAt": [[index, time],
    ...]}`` (the time each run of points was stored), then ``{"index": i, "data": ...}`` lines."""
    parts: list[bytes] = []
    created: list[tuple[int, str]] = []
    index = first
    for batch in batches:
        if index == first + size:
            break
        if batch.start > index:
            return None
        lo, hi = index - batch.start, min(first + size, batch.start + batch.count) - batch.start
        if hi <= lo:
            continue
        if lo == 0 and hi == batch.count:
            parts.append(batch.blob)  # most batches lie wholly inside: no need to split them
        else:
            parts.append(b"\n".join(batch.blob.split(b"\n")[lo:hi]) + b"\n")
        created.append((index, batch.created_at))
        index = batch.start + hi
    if index != first + size:
        return None
    header = _JSON.encode({"first": first, "count": size, "createdAt": created})
    body = frame_lines(first, b"".join(parts))
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(b"".join((header, b"\n", body)))


class _Chunk:
    """A cold chunk as its raw lines, and when each run of its points was stored."""

    def __init__(self, blob: bytes) -> None:
        raw = zstandard.ZstdDecompressor().decompress(blob)
        header, _, body = raw.partition(b"\n")
        meta = _HEADER.decode(header)
        self.first: int = meta["first"]
        self.created: list[list[Any]] = meta["createdAt"]
        self.lines = body.split(b"\n")

    def read(self, start: int, end: int) -> list[dict[str, Any]]:
        lines = decode_lines(self.lines[start - self.first : end - self.first])
        runs = self.created
        run = 0
        for line in lines:
            while run + 1 < len(runs) and runs[run + 1][0] <= line["index"]:
                run += 1
            line["createdAt"] = runs[run][1]
        return lines


def _hot_read(batch: Batch, start: int, end: int) -> list[dict[str, Any]]:
    points = decode_lines(batch.blob.split(b"\n")[start - batch.start : end - batch.start])
    return [{"index": i, "data": p, "createdAt": batch.created_at} for i, p in enumerate(points, start)]


class PointReader:
    """Reads ranges of a track's points across the two tiers, caching recent cold chunks."""

    def __init__(self, hot: HotTier, cold: ColdTier, chunk_size: int) -> None:
        self._hot = hot
        self._cold = cold
        self._size = chunk_size
        self._cache: collections.OrderedDict[str, _Chunk] = collections.OrderedDict()
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
            chunk = await self._chunk(track.id, index // self._size)
            stop = min(end, track.chunked, chunk.first + self._size)
            out.extend(await anyio.to_thread.run_sync(chunk.read, index, stop))
            index = stop
        batches = await self._hot.read_batches(track.id, index, end) if index < end else []
        for batch in batches:
            if batch.start > index:
                return None  # a gap: those points were archived after ``track`` was read
            stop = min(end, batch.start + batch.count)
            out.extend(_hot_read(batch, index, stop))
            index = stop
        return out if index >= end else None

    async def _chunk(self, track_id: str, chunk: int) -> _Chunk:
        key = chunk_key(track_id, chunk)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        loaded = await anyio.to_thread.run_sync(_Chunk, await self._cold.get(key))
        with self._lock:
            self._cache[key] = loaded
            while len(self._cache) > _CHUNK_CACHE:
                self._cache.popitem(last=False)
        return loaded
