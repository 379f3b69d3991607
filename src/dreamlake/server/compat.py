"""The 0.2.x REST routes, unchanged on the wire, so the original client works against this server.

Response shapes and types are those dreamlake 0.2.1 returns in local mode (strings for most
counters and indices, as its users rely on). Names arrive unencoded from 0.2.x (a track name with
``/`` still routes: the route's suffix says where the name ends).
"""

from __future__ import annotations

import hashlib
import mimetypes
import secrets
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .._disk.filestore import is_under
from .._exceptions import InvalidArgumentError, InvalidNameError
from .._schema.levels import check_level
from .._schema.names import check_name, check_prefix
from .._schema.params import flatten
from .._schema.timestamps import utc_now_iso
from .errors import ApiError
from .hot.base import Ingest, SessionRecord, TrackRecord, TrackWrite
from .http import (
    grant_of,
    int_param,
    json_body,
    json_response,
    name_param,
    parse_json,
    server_of,
    session_of,
)
from .points import to_blobs
from .store import ingest

_SESSION_FIELDS = {"description": str, "folder": str, "tags": list, "metadata": dict, "writeProtected": bool}


def session_doc(session: SessionRecord) -> dict[str, Any]:
    """A session as the routes return it."""
    return {
        "id": session.id,
        "name": session.name,
        "workspace": session.workspace,
        **{key: session.fields.get(key) for key in _SESSION_FIELDS},
        "createdAt": session.created_at,
        "updatedAt": session.updated_at,
    }


async def upsert_session(request: Request) -> Response:
    """``POST /workspaces/{ws}/sessions``: create or update; a read-only token may only open one."""
    grant = await grant_of(request)
    workspace = name_param(request, "workspace")
    if not grant.reaches(workspace):
        raise ApiError(403, "workspace not allowed", f"this token does not reach workspace {workspace!r}")
    body = await json_body(request)
    try:
        name = check_name("session", body.get("name"))
    except InvalidNameError as exc:
        raise ApiError(400, "invalid name", str(exc)) from None
    fields = {}
    for key, kind in _SESSION_FIELDS.items():
        value = body.get(key)
        if value is not None and not isinstance(value, kind):
            raise ApiError(400, f"bad {key}", f"{key} must be a {kind.__name__}")
        fields[key] = value
    hot = server_of(request).hot
    session = await hot.upsert_session(
        workspace, name, {} if grant.read_only else fields, not grant.read_only
    )
    if session is None:
        raise ApiError(
            403, "read-only token", "a read-only token may open an existing session, not create one"
        )
    return json_response({"session": session_doc(session), "workspace": {"name": workspace}})


def _point(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ApiError(422, "invalid point", f"{where} must be a JSON object")
    return doc


def _track_write(name: str, body: dict[str, Any], points: list[dict[str, Any]]) -> TrackWrite:
    tags = body.get("tags")
    metadata = body.get("metadata")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise ApiError(422, "bad tags", "tags must be a list of strings")
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError(422, "bad metadata", "metadata must be an object")
    description = body.get("description")
    return TrackWrite(name, to_blobs(points), description, tags, metadata)


async def append(request: Request) -> Response:
    """``POST /sessions/{id}/tracks/{name}/append``: one point."""
    session = await session_of(request, write=True)
    name = name_param(request)
    body = await json_body(request)
    point = _point(body.get("data"), "data")
    result = await ingest(
        server_of(request), session, None, Ingest(tracks=[_track_write(name, body, [point])])
    )
    track_id, start, _ = result.tracks[0]
    return json_response(
        {
            "trackId": track_id,
            "index": str(start),
            "bufferedDataPoints": str(await _buffered(request, session, name)),
            "chunkSize": _size(request),
        }
    )


async def _buffered(request: Request, session: SessionRecord, name: str) -> int:
    track = await server_of(request).hot.get_track(session.id, name)
    return track.total - track.chunked if track else 0


async def append_batch(request: Request) -> Response:
    """``POST /sessions/{id}/tracks/{name}/append-batch``: many points, all or none."""
    session = await session_of(request, write=True)
    name = name_param(request)
    body = await json_body(request)
    points = body.get("dataPoints")
    if not isinstance(points, list) or not points:
        raise ApiError(422, "invalid points", "dataPoints must be a non-empty list of objects")
    if len(points) > server_of(request).config.max_points:
        raise ApiError(413, "too many points", f"at most {server_of(request).config.max_points} per request")
    checked = [_point(p, f"dataPoints[{i}]") for i, p in enumerate(points)]
    result = await ingest(
        server_of(request), session, None, Ingest(tracks=[_track_write(name, body, checked)])
    )
    track_id, start, total = result.tracks[0]
    return json_response(
        {
            "trackId": track_id,
            "startIndex": str(start),
            "endIndex": str(total - 1),
            "count": len(checked),
            "bufferedDataPoints": str(await _buffered(request, session, name)),
            "chunkSize": _size(request),
        }
    )


def _size(request: Request) -> int:
    return server_of(request).config.chunk_size


async def read_data(request: Request) -> Response:
    """``GET .../tracks/{name}/data?startIndex=&limit=``: a page; a missing track reads as empty."""
    session = await session_of(request)
    name = name_param(request)
    server = server_of(request)
    start = int_param(request, "startIndex", 0)
    limit = int_param(request, "limit", 1000, 1, server.config.max_read)
    track = await server.hot.get_track(session.id, name)
    points = await server.reader.read(track, start, limit) if track else []
    total = track.total if track else 0
    return json_response(
        {
            "data": points,
            "startIndex": start,
            "endIndex": start + len(points) - 1,
            "total": len(points),
            "hasMore": start + len(points) < total,
        }
    )


async def _track_or_404(request: Request, session: SessionRecord) -> TrackRecord:
    track = await server_of(request).hot.get_track(session.id, name_param(request))
    if track is None:
        raise ApiError(404, "unknown track", request.path_params["name"])
    return track


async def stats(request: Request) -> Response:
    """``GET .../tracks/{name}/stats``: counters of both tiers, 404 for a missing track."""
    session = await session_of(request)
    track = await _track_or_404(request, session)
    size = _size(request)
    return json_response(
        {
            "trackId": track.id,
            "name": track.name,
            "description": track.description,
            "tags": track.tags,
            "metadata": track.metadata,
            "totalDataPoints": str(track.total),
            "bufferedDataPoints": str(track.total - track.chunked),
            "chunkedDataPoints": str(track.chunked),
            "totalChunks": track.chunked // size,
            "chunkSize": size,
            "firstDataAt": track.first_data_at,
            "lastDataAt": track.last_data_at,
            "createdAt": track.created_at,
            "updatedAt": track.updated_at,
        }
    )


async def list_tracks(request: Request) -> Response:
    """``GET /sessions/{id}/tracks``."""
    session = await session_of(request)
    tracks = await server_of(request).hot.list_tracks(session.id)
    return json_response(
        {
            "tracks": [
                {
                    "trackId": t.id,
                    "name": t.name,
                    "description": t.description,
                    "tags": t.tags,
                    "totalDataPoints": str(t.total),
                    "createdAt": t.created_at,
                }
                for t in tracks
            ]
        }
    )


async def write_logs(request: Request) -> Response:
    """``POST /sessions/{id}/logs``: ``{"logs": [...]}``, numbered gap-free per session."""
    session = await session_of(request, write=True)
    body = await json_body(request)
    entries = body.get("logs")
    if not isinstance(entries, list) or not entries:
        raise ApiError(422, "invalid logs", "logs must be a non-empty list of objects")
    logs = [_log_entry(entry, i) for i, entry in enumerate(entries)]
    server = server_of(request)
    result = await ingest(server, session, None, Ingest(logs=logs))
    return json_response(
        {
            "created": len(logs),
            "startSequence": result.log_start,
            "endSequence": result.log_end - 1,
            "sessionId": session.id,
        }
    )


def _log_entry(entry: Any, i: int) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("message"), str):
        raise ApiError(422, "invalid log entry", f"logs[{i}] must be an object with a string message")
    try:
        level = check_level(entry.get("level"))
    except InvalidArgumentError as exc:
        raise ApiError(422, "invalid log entry", f"logs[{i}]: {exc}") from None
    timestamp = entry.get("timestamp") or utc_now_iso()
    metadata = entry.get("metadata")
    if not isinstance(timestamp, str) or (metadata is not None and not isinstance(metadata, dict)):
        raise ApiError(422, "invalid log entry", f"logs[{i}]: timestamp is a string, metadata an object")
    out = {"timestamp": timestamp, "level": level, "message": entry["message"]}
    if metadata:
        out["metadata"] = metadata
    return out


async def read_logs(request: Request) -> Response:
    """``GET /sessions/{id}/logs?startSequence=&limit=`` (ours: 0.2.x had no way to read logs)."""
    session = await session_of(request)
    server = server_of(request)
    start = int_param(request, "startSequence", 0)
    limit = int_param(request, "limit", 1000, 1, server.config.max_read)
    logs = await server.hot.read_logs(session.id, start, limit + 1)
    return json_response(
        {
            "logs": logs[:limit],
            "startSequence": start,
            "endSequence": start + len(logs[:limit]) - 1,
            "total": len(logs[:limit]),
            "hasMore": len(logs) > limit,
        }
    )


async def set_parameters(request: Request) -> Response:
    """``POST /sessions/{id}/parameters``: ``{"data": {...}}`` merged into the flat dotted keys."""
    session = await session_of(request, write=True)
    body = await json_body(request)
    data = body.get("data")
    if not isinstance(data, dict):
        raise ApiError(422, "invalid parameters", "data must be an object")
    try:
        delta = flatten(data)
    except InvalidArgumentError as exc:
        raise ApiError(422, "invalid parameters", str(exc)) from None
    await ingest(server_of(request), session, None, Ingest(parameters=[delta]))
    return await get_parameters(request)


async def get_parameters(request: Request) -> Response:
    """``GET /sessions/{id}/parameters``: 404 until something is set."""
    session = await session_of(request)
    doc = await server_of(request).hot.get_parameters(session.id)
    if doc is None:
        raise ApiError(404, "no parameters", "nothing was set in this session yet")
    return json_response({"id": session.id, "sessionId": session.id, **doc})


def _file_key(session_id: str, meta: dict[str, Any]) -> str:
    return f"files/{session_id}/{meta['id']}"


async def upload_file(request: Request) -> Response:
    """``POST /sessions/{id}/files`` (multipart): the bytes are streamed to the cold tier and
    hashed on the way; a ``checksum``/``sizeBytes`` that does not match refuses the upload."""
    session = await session_of(request, write=True)
    server = server_of(request)
    async with request.form(max_files=1, max_fields=20) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "no file", "send the bytes as the multipart field 'file'")
        try:
            prefix = check_prefix(form.get("prefix") or "/")
            filename = upload.filename or "file"
            if filename in (".", "..") or "/" in filename or "\\" in filename or "\x00" in filename:
                raise InvalidNameError(f"file name {filename!r} is not one path component")
        except InvalidNameError as exc:
            raise ApiError(400, "invalid name", str(exc)) from None
        meta = _file_meta(session, form, prefix, filename, upload.content_type)
        digest = hashlib.sha256()

        async def chunks() -> AsyncIterator[bytes]:
            while piece := await upload.read(1 << 20):
                digest.update(piece)
                yield piece

        key = _file_key(session.id, meta)
        size = await server.cold.put_stream(key, chunks())
    expected = (form.get("checksum"), form.get("sizeBytes"))
    if (expected[0] and expected[0] != digest.hexdigest()) or (expected[1] and expected[1] != str(size)):
        await server.cold.delete(key)
        raise ApiError(400, "checksum mismatch", "the bytes received do not match checksum/sizeBytes")
    meta.update(sizeBytes=size, checksum=digest.hexdigest())
    replaced = await server.hot.put_file(session.id, meta)
    if replaced is not None:
        await server.cold.delete(_file_key(session.id, replaced))
    return json_response(meta)


def _file_meta(
    session: SessionRecord, form: Any, prefix: str, filename: str, content_type: str | None
) -> dict[str, Any]:
    tags = [t for t in (form.get("tags") or "").split(",") if t]
    metadata = parse_metadata(form.get("metadata"))
    now = utc_now_iso()
    return {
        "id": secrets.token_hex(8),
        "sessionId": session.id,
        "path": prefix,
        "filename": filename,
        "description": form.get("description") or None,
        "tags": tags,
        "contentType": content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream",
        "sizeBytes": 0,
        "checksum": "",
        "metadata": metadata,
        "uploadedAt": now,
        "updatedAt": now,
        "deletedAt": None,
    }


def parse_metadata(raw: Any) -> dict[str, Any] | None:
    """The ``metadata`` form field (JSON), or 400."""
    if not raw:
        return None
    doc = parse_json(raw.encode() if isinstance(raw, str) else b"")
    if not isinstance(doc, dict):
        raise ApiError(400, "bad metadata", "metadata must be a JSON object")
    return doc


async def list_files(request: Request) -> Response:
    """``GET /sessions/{id}/files?prefix=&tags=``: files not deleted, by folder and any tag."""
    session = await session_of(request)
    prefix = request.query_params.get("prefix")
    tags = [t for t in request.query_params.get("tags", "").split(",") if t]
    try:
        folder = check_prefix(prefix) if prefix else None
    except InvalidNameError as exc:
        raise ApiError(400, "invalid prefix", str(exc)) from None
    files = [
        f
        for f in await server_of(request).hot.list_files(session.id)
        if f.get("deletedAt") is None
        and (folder is None or is_under(f["path"], folder))
        and (not tags or any(t in (f.get("tags") or []) for t in tags))
    ]
    return json_response({"files": files})


async def _file(request: Request, session: SessionRecord) -> dict[str, Any]:
    file_id = request.path_params["file_id"]
    for f in await server_of(request).hot.list_files(session.id):
        if f["id"] == file_id and f.get("deletedAt") is None:
            return f
    raise ApiError(404, "unknown file", file_id)


async def get_file(request: Request) -> Response:
    """``GET /sessions/{id}/files/{fid}``: the file's metadata."""
    session = await session_of(request)
    return json_response(await _file(request, session))


async def download_file(request: Request) -> Response:
    """``GET /sessions/{id}/files/{fid}/download``: the bytes, streamed from the cold tier."""
    session = await session_of(request)
    meta = await _file(request, session)
    return StreamingResponse(
        server_of(request).cold.stream(_file_key(session.id, meta)),
        media_type=meta.get("contentType") or "application/octet-stream",
        headers={"Content-Length": str(meta["sizeBytes"]), "X-Checksum-Sha256": meta["checksum"]},
    )


async def update_file(request: Request) -> Response:
    """``PATCH /sessions/{id}/files/{fid}``: description, tags, metadata."""
    session = await session_of(request, write=True)
    await _file(request, session)
    body = await json_body(request)
    changes = {k: body[k] for k in ("description", "tags", "metadata") if body.get(k) is not None}
    if "tags" in changes and not (
        isinstance(changes["tags"], list) and all(isinstance(t, str) for t in changes["tags"])
    ):
        raise ApiError(422, "bad tags", "tags must be a list of strings")
    changes["updatedAt"] = utc_now_iso()
    meta = await server_of(request).hot.update_file(session.id, request.path_params["file_id"], changes)
    return json_response(meta)


async def delete_file(request: Request) -> Response:
    """``DELETE /sessions/{id}/files/{fid}``: marked deleted in the index (0.2.x); bytes removed."""
    session = await session_of(request, write=True)
    meta = await _file(request, session)
    now = utc_now_iso()
    await server_of(request).hot.update_file(session.id, meta["id"], {"deletedAt": now, "updatedAt": now})
    await server_of(request).cold.delete(_file_key(session.id, meta))
    return json_response({"id": meta["id"], "deletedAt": now})


_TRACK = "/sessions/{session_id}/tracks/{name:path}"
ROUTES = [
    Route("/workspaces/{workspace}/sessions", upsert_session, methods=["POST"]),
    Route("/sessions/{session_id}/logs", write_logs, methods=["POST"]),
    Route("/sessions/{session_id}/logs", read_logs, methods=["GET"]),
    Route("/sessions/{session_id}/parameters", set_parameters, methods=["POST"]),
    Route("/sessions/{session_id}/parameters", get_parameters, methods=["GET"]),
    Route("/sessions/{session_id}/files", upload_file, methods=["POST"]),
    Route("/sessions/{session_id}/files", list_files, methods=["GET"]),
    Route("/sessions/{session_id}/files/{file_id}", get_file, methods=["GET"]),
    Route("/sessions/{session_id}/files/{file_id}", update_file, methods=["PATCH"]),
    Route("/sessions/{session_id}/files/{file_id}", delete_file, methods=["DELETE"]),
    Route("/sessions/{session_id}/files/{file_id}/download", download_file, methods=["GET"]),
    Route("/sessions/{session_id}/tracks", list_tracks, methods=["GET"]),
    Route(_TRACK + "/append", append, methods=["POST"]),
    Route(_TRACK + "/append-batch", append_batch, methods=["POST"]),
    Route(_TRACK + "/data", read_data, methods=["GET"]),
    Route(_TRACK + "/stats", stats, methods=["GET"]),
]
