"""Request and response plumbing shared by the routes: bodies within limits, JSON that 0.2.x
clients write and read (bare ``NaN``/``Infinity``), and the caller's session, checked against
the caller's token."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from typing import Any

import msgspec
import zstandard
from starlette.requests import Request
from starlette.responses import Response

from .._exceptions import InvalidNameError
from .._schema.names import check_name, check_track_name
from .auth import Grant, authenticate
from .errors import ApiError
from .hot.base import SessionRecord
from .state import Server

_JSON = msgspec.json.Encoder()


def server_of(request: Request) -> Server:
    """The app's tiers and settings."""
    server: Server = request.app.state.server
    return server


async def read_body(request: Request) -> bytes:
    """The request body, decompressed (``Content-Encoding`` gzip or zstd), refused with 413 as soon as
    it, or what it inflates to, passes the limit: never read whole first."""
    limit = server_of(request).config.max_body
    too_big = ApiError(413, "body too large", f"the limit is {limit} bytes (also after decompression)")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        inflate: Any = zlib.decompressobj(wbits=31)
    elif encoding == "zstd":
        inflate = zstandard.ZstdDecompressor().decompressobj()
    elif encoding in ("identity", ""):
        inflate = None
    else:
        raise ApiError(415, "unsupported content encoding", "use gzip, zstd or none")
    parts: list[bytes] = []
    size = received = 0
    async for piece in request.stream():
        if not piece:
            continue  # the stream's end; a finished zstd frame refuses further input
        received += len(piece)
        if received > limit:
            raise too_big
        try:
            out = inflate.decompress(piece) if inflate is not None else piece
        except (zlib.error, zstandard.ZstdError) as exc:
            raise ApiError(400, "bad compressed body", str(exc)) from None
        size += len(out)
        if size > limit:
            raise too_big
        parts.append(out)
    return b"".join(parts)


def parse_json(body: bytes) -> Any:
    """JSON as 0.2.x clients send it: strict JSON, or Python's bare ``NaN``/``Infinity`` tokens."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ApiError(400, "malformed JSON", str(exc)) from None


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object."""
    doc = parse_json(await read_body(request))
    if not isinstance(doc, dict):
        raise ApiError(400, "bad body", "the body must be a JSON object")
    return doc


def json_response(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``doc`` as JSON; non-finite floats as Python's bare ``NaN``/``Infinity``, which 0.2.x parses."""
    blob = _JSON.encode(doc)
    if b"null" in blob and _has_nonfinite(doc):  # msgspec writes them as null
        blob = json.dumps(doc, separators=(",", ":")).encode()
    return Response(blob, status, headers, media_type="application/json")


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nonfinite(v) for v in value)
    return False


async def grant_of(request: Request) -> Grant:
    """The caller's grant (401 without a valid token)."""
    server = server_of(request)
    return await authenticate(server.hot, server.config, request.headers.get("authorization"))


async def session_of(request: Request, write: bool = False) -> SessionRecord:
    """The session named in the path, if the caller's token reaches it (else 404, as if it did not
    exist); with ``write``, also 403 for a read-only token or a write-protected session."""
    grant = await grant_of(request)
    session = await server_of(request).hot.get_session(request.path_params["session_id"])
    if session is None or not grant.reaches(session.workspace):
        raise ApiError(404, "unknown session", request.path_params["session_id"])
    if write:
        grant.check_write()
        if session.fields.get("writeProtected"):
            raise ApiError(403, "session is write-protected", session.id)
    return session


def name_param(request: Request, kind: str = "track") -> str:
    """A name from the path, checked by the same rule as local storage (400 if refused)."""
    name = request.path_params["name"] if kind == "track" else request.path_params[kind]
    try:
        return check_track_name(name) if kind == "track" else check_name(kind, name)
    except InvalidNameError as exc:
        raise ApiError(400, "invalid name", str(exc)) from None


def int_param(request: Request, name: str, default: int, low: int = 0, high: int | None = None) -> int:
    """An integer query parameter within ``[low, high]`` (400 otherwise)."""
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise ApiError(400, f"bad {name}", f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(400, f"bad {name}", f"{name} must be {bound}, got {value}")
    return value
