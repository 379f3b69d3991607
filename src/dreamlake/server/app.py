"""The ASGI app: routes, the tiers' lifespan (and the archiver's), errors as JSON, a log line per request."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import compat, ingest
from .archiver import Archiver
from .cold.base import ColdTier
from .cold.directory import DirectoryColdTier
from .config import ServerConfig
from .errors import ApiError, TierUnavailableError
from .hot.base import HotTier
from .hot.sqlite import SQLiteHotTier
from .http import json_response
from .points import PointReader
from .state import Server

log = logging.getLogger("dreamlake.server")


def open_hot(config: ServerConfig) -> HotTier:
    """MongoDB for ``--hot mongodb://...``, else SQLite under ``--data`` (pymongo imported only then)."""
    if config.hot is not None:
        from .hot.mongo import MongoHotTier

        return MongoHotTier(config.hot, config.chunk_size)
    config.data.mkdir(parents=True, exist_ok=True)
    return SQLiteHotTier(config.hot_path)


def open_cold(config: ServerConfig) -> ColdTier:
    """S3 for ``--cold s3://...``, else a directory under ``--data`` (obstore imported only then)."""
    if config.cold is not None:
        from .cold.s3 import S3ColdTier

        return S3ColdTier(config.cold)
    config.data.mkdir(parents=True, exist_ok=True)
    return DirectoryColdTier(config.cold_path)


def open_tiers(config: ServerConfig) -> tuple[HotTier, ColdTier]:
    """The tiers the config names (not started)."""
    return open_hot(config), open_cold(config)


async def health(request: Request) -> Response:
    """``GET /health``: 200 once the tiers are up; no token needed."""
    return json_response({"status": "ok"})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.status >= 500 and exc.status != 503:  # 503 is back-pressure, asked for and retried
        log.warning("%s %s: %s", request.method, request.url.path, exc.error)
    return json_response({"error": exc.error, "detail": exc.detail}, exc.status, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_response({"error": exc.detail, "detail": None}, exc.status_code, exc.headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return json_response({"error": "storage unavailable", "detail": str(exc)}, 503, {"Retry-After": "1"})


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.warning("%s %s failed", request.method, request.url.path, exc_info=exc)
    return json_response({"error": "internal error", "detail": type(exc).__name__}, 500)


class RequestLog:
    """One debug line per request: method, path, status, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.DEBUG):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_status)
        ms = (time.perf_counter() - start) * 1000
        log.debug("%s %s %d %.1fms", scope["method"], scope["path"], status, ms)


def create_app(config: ServerConfig | None = None) -> Starlette:
    """The server as an ASGI app (``uvicorn --factory dreamlake.server:create_app`` uses the defaults)."""
    config = config or ServerConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hot, cold = open_tiers(config)
        try:
            await hot.start()
            await cold.start()
        except TierUnavailableError as exc:
            # Said once, plainly, before uvicorn's traceback: the usual cause is a URL or a secret.
            print(f"dreamlake serve: cannot start: {exc}", file=sys.stderr, flush=True)
            await hot.stop()
            raise
        archiver = Archiver(
            hot,
            cold,
            config.chunk_size,
            config.archive_interval,
            config.max_buffered_chunks * config.chunk_size,
            config.archive_lease,
        )
        app.state.server = Server(config, hot, cold, PointReader(hot, cold, config.chunk_size), archiver)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(archiver.run)
                yield
                tg.cancel_scope.cancel()  # lands between archiver steps (each step is shielded)
        finally:
            await cold.stop()
            await hot.stop()

    app = Starlette(
        routes=[Route("/health", health), *compat.ROUTES, *ingest.ROUTES],
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            TierUnavailableError: _unavailable,
            Exception: _unexpected,
        },
    )
    app.add_middleware(RequestLog)
    return app
