"""Sending batches to ``dreamlake serve``: one request per sealed batch, in order, retried until the
server stores it or refuses it for good. Used by the remote sink and by ``dreamlake sync``.

Connection errors, timeouts, 5xx, 408 and 429 are retried with exponential backoff and jitter,
honouring ``Retry-After``; a 401 is a token the server no longer accepts (the batch stays sendable);
any other 4xx refuses the batch for good: it is moved aside (``Outbox.refuse``).
"""

from __future__ import annotations

import gzip
import hashlib
import random
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt

from .._exceptions import StorageError
from .._schema.wire import DEV_JWT_SECRET
from .outbox import Batch, Outbox

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_BACKOFF_FIRST, _BACKOFF_MAX = 0.2, 10.0  # seconds
_COMPRESS_ABOVE = 16 * 1024  # bytes; smaller bodies go as they are


class RemoteError(StorageError):
    """The server refused a request for good (``status`` is its HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TokenRejected(RemoteError):
    """The server does not accept the token (401): batches stay sendable with another token."""


def legacy_token(user_name: str) -> str:
    """The token dreamlake 0.2.x makes from ``user_name`` (same claims, same placeholder secret):
    accepted only by a ``dreamlake serve --dev`` server."""
    user_id = str(int(hashlib.sha256(user_name.encode()).hexdigest()[:16], 16))[:10]
    now = int(time.time())
    claims = {"userId": user_id, "userName": user_name, "iat": now, "exp": now + 30 * 24 * 3600}
    return jwt.encode(claims, DEV_JWT_SECRET, algorithm="HS256")


def sync_command(root: Path, url: str) -> str:
    """The command that sends what the spools under ``root`` still hold."""
    return f"dreamlake sync --local-path {root} --remote {url}"


class Sender:
    """Sends one outbox's sealed batches to the server, in order, until each is acknowledged.

    ``head`` names the session (``workspace``, and ``session``: the fields its creation sends);
    ``where`` is the spool the batches wait in, for messages; refused batches go under ``root``.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        outbox: Outbox,
        head: dict[str, Any],
        root: Path,
        where: str,
        warn: bool = True,
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.head = head
        self.root = root
        self.where = where
        self._warned = not warn  # a failing server is warned about once; stats() shows the rest
        self.session_id: str | None = None
        self.sent_requests = 0
        self.retries = 0
        self.last_error: str | None = None

    def quiet(self) -> None:
        """Warn no more (the sink is closing and says itself what it leaves)."""
        self._warned = True

    async def session(self) -> str:
        """The server's id of the session (created or updated on first use)."""
        if self.session_id is None:
            response = await self._request(
                "POST", f"/workspaces/{self.head['workspace']}/sessions", json=self.head["session"]
            )
            self.session_id = str(response.json()["session"]["id"])
        return self.session_id

    def prepare(self, batch: Batch) -> tuple[bytes, dict[str, str]]:
        """The request for one sealed batch: msgpack, compressed. Blocking: run it in a worker thread."""
        body = batch.body()
        headers = {
            "Content-Type": "application/msgpack",
            "Idempotency-Key": f"{self.outbox.writer}:{batch.number}",
        }
        if len(body) > _COMPRESS_ABOVE:
            body, headers["Content-Encoding"] = _compress(body)
        return body, headers

    async def send(self, batch: Batch, request: tuple[bytes, dict[str, str]] | None = None) -> None:
        """Send one sealed batch (``request``: what :meth:`prepare` made of it) until the server
        stores it, or refuses it for good."""
        if request is None:
            request = await anyio.to_thread.run_sync(self.prepare, batch)
        body, headers = request
        session_id = await self.session()
        self.outbox.sending(batch)
        try:
            await self._request("POST", f"/sessions/{session_id}/batches", content=body, headers=headers)
        except TokenRejected:
            raise  # not the batch's fault: it stays sendable
        except RemoteError as exc:
            path = self.outbox.refuse(batch, self.root, str(exc))
            raise RemoteError(f"{exc} (the batch is kept in {path})", exc.status) from None
        self.outbox.acked(batch)
        self.sent_requests += 1

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried while the failure may pass; a refusal for good raises RemoteError."""
        delay = _BACKOFF_FIRST
        while True:
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.TransportError as exc:  # refused, reset, timed out: the server may come back
                wait = delay
                self.last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    self.last_error = None
                    return response
                if response.status_code not in _RETRY_STATUS:
                    status = response.status_code
                    kind = TokenRejected if status == 401 else RemoteError
                    raise kind(f"the server refused {method} {url}: {status} {response.text[:300]}", status)
                wait = _retry_after(response) or delay
                self.last_error = f"HTTP {response.status_code}"
            self.retries += 1
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"dreamlake: {self.client.base_url} failed ({self.last_error}); retrying with backoff. "
                    f"Nothing is lost: batches wait in {self.where}",
                    RuntimeWarning,
                    stacklevel=1,
                )
            await anyio.sleep(wait * random.uniform(0.5, 1.0) if wait == delay else wait)
            delay = min(delay * 2, _BACKOFF_MAX)


def _compress(body: bytes) -> tuple[bytes, str]:
    """zstd (level 1) where the optional ``zstandard`` is installed, else gzip (level 1)."""
    try:
        import zstandard
    except ImportError:
        return gzip.compress(body, 1), "gzip"
    return zstandard.ZstdCompressor(level=1).compress(body), "zstd"


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    try:
        return min(max(float(raw), 0.0), 60.0)
    except ValueError:
        return None
