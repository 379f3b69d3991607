"""Errors a route raises; the app turns them into ``{"error", "detail"}`` JSON with their status."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A refused request: HTTP ``status``, a short ``error`` and a ``detail`` saying what to do."""

    def __init__(self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


class TierUnavailableError(ConnectionError):
    """A tier's store (MongoDB, S3) cannot be reached or refused the request; answered 503 with
    ``Retry-After``, so clients retry (their journal keeps the data meanwhile)."""
