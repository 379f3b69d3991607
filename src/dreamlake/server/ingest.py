"""The bulk ingest route the SDK's agent uses: ``POST /sessions/{id}/batches``.

One request carries many tracks' points, log entries and parameter changes of one session,
msgpack (``Content-Type: application/msgpack``) or JSON, optionally compressed
(``Content-Encoding: zstd`` or ``gzip``), with an ``Idempotency-Key`` header. It is stored all or
nothing; a replayed key stores nothing and gets the first answer again, with ``"repeat": true``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._exceptions import InvalidArgumentError, InvalidNameError
from .._schema.levels import check_level
from .._schema.names import check_track_name
from .._schema.params import flatten
from .._schema.timestamps import utc_iso
from .._schema.wire import BulkBatch
from .errors import ApiError
from .hot.base import Ingest, TrackWrite
from .http import json_response, read_body, server_of, session_of
from .points import check_lines, lines_to_blobs, to_blobs
from .store import ingest

_MSGPACK = msgspec.msgpack.Decoder(BulkBatch)
_JSON = msgspec.json.Decoder(BulkBatch)
_MAX_KEY = 200


async def post_batch(request: Request) -> Response:
    """Decode, validate everything, then store in one ingest."""
    session = await session_of(request, write=True)
    key = request.headers.get("idempotency-key")
    if not key or len(key) > _MAX_KEY:
        raise ApiError(
            400, "missing idempotency key", f"send an Idempotency-Key header of 1-{_MAX_KEY} chars"
        )
    body = await read_body(request)
    content_type = request.headers.get("content-type", "application/msgpack").split(";")[0].strip()
    decoder = _JSON if content_type == "application/json" else _MSGPACK
    try:
        batch = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid batch", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed body", str(exc)) from None
    server = server_of(request)
    if not await server.archiver.room([(session.id, t.name) for t in batch.tracks]):
        raise ApiError(
            503,
            "archiver behind",
            "a track holds more recent points than the hot tier keeps; retry shortly",
            {"Retry-After": "1"},
        )
    checked = _checked(batch)  # counts the lines as it checks them: no second pass to count
    points = sum(count for t in checked.tracks for count, _ in t.blobs)
    if points > server.config.max_points:
        raise ApiError(413, "too many points", f"at most {server.config.max_points} points per request")
    result = await ingest(server, session, key, checked)
    doc: dict[str, Any] = {
        "repeat": result.repeat,
        "tracks": [
            {"name": t.name, "trackId": track_id, "startIndex": start, "count": total - start}
            for t, (track_id, start, total) in zip(batch.tracks, result.tracks, strict=True)
        ],
        "logs": {"startSequence": result.log_start, "count": result.log_end - result.log_start},
        "parametersVersion": result.parameters_version,
    }
    return json_response(doc, headers={"Idempotent-Replayed": "true"} if result.repeat else None)


def _checked(batch: BulkBatch) -> Ingest:
    """The batch as an ``Ingest``, or a 400/422 naming the first bad part (nothing stored)."""
    out = Ingest()
    try:
        for t in batch.tracks:
            if t.points and t.lines:
                raise ApiError(422, "invalid batch", f"track {t.name!r}: send points or lines, not both")
            try:
                check_lines(t.lines)
            except ValueError as exc:
                raise ApiError(422, "invalid points", f"track {t.name!r}: {exc}") from None
            blobs = lines_to_blobs(t.lines) if t.lines else to_blobs(t.points)
            out.tracks.append(TrackWrite(check_track_name(t.name), blobs, t.description, t.tags, t.metadata))
        for entry in batch.logs:
            stamp = entry.timestamp if isinstance(entry.timestamp, str) else utc_iso(entry.timestamp)
            log: dict[str, Any] = {
                "timestamp": stamp,
                "level": check_level(entry.level),
                "message": entry.message,
            }
            if entry.metadata:
                log["metadata"] = entry.metadata
            out.logs.append(log)
        out.parameters = [flatten(delta) for delta in batch.parameters]
    except InvalidNameError as exc:
        raise ApiError(400, "invalid name", str(exc)) from None
    except InvalidArgumentError as exc:
        raise ApiError(422, "invalid batch", str(exc)) from None
    return out


ROUTES = [Route("/sessions/{session_id}/batches", post_batch, methods=["POST"])]
