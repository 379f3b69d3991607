"""The S3 cold tier (``--cold s3://bucket/prefix``), on obstore.

obstore (Rust's ``object_store``) because the server is async: its calls are native coroutines
that hold no Python thread; it has no Python dependencies (aiobotocore pins botocore); it reads the
standard ``AWS_*`` variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT_URL`` for S3-compatible stores, ``AWS_ALLOW_HTTP`` for a plain-HTTP endpoint); and
a conditional create (``If-None-Match: *``) surfaces as ``AlreadyExistsError``, which is the
put-if-absent two archivers need to write a chunk once. Like pymongo's async client it runs on
asyncio only. It cannot create buckets: that is the operator's job (and the test fixture's).

File bytes are streamed from the request: a small file is one conditional put, a large one a
multipart upload. obstore's multipart upload is not conditional (seen here: a second one replaces
the first), so for those ``put_stream`` checks the key first; file keys hold a fresh random id, so
that check never races in practice.
"""

from __future__ import annotations

import datetime
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError, PermissionDeniedError
from obstore.store import S3Store

from ..errors import TierUnavailableError
from .base import check_key, check_prefix

if TYPE_CHECKING:
    from obstore.store import RetryConfig

    from .base import ColdTier

PART_BYTES = 8 << 20  # multipart part size (S3's minimum is 5 MiB); smaller files are one put
STREAM_BYTES = 1 << 20  # pieces ``stream`` yields, as the directory tier's
# How long a request keeps retrying an unreachable store before the caller sees the failure (the
# default, 3 minutes, would hold reads and the archiver's pass that long).
_RETRY_SECONDS = 10
_PROBE = "chunks/"


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → ``(bucket, prefix)``; ``ValueError`` for anything else."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"--cold {url!r} is not s3://bucket[/prefix]")
    return parts.netloc, parts.path.strip("/")


class S3ColdTier:
    """Objects under ``prefix`` in an S3 bucket; endpoint and credentials from ``AWS_*``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self._store: S3Store | None = None

    def _s3(self) -> S3Store:
        if self._store is None:
            raise RuntimeError("the S3 cold tier is not started; call start() first")
        return self._store

    def _failed(self, what: str, exc: BaseError) -> TierUnavailableError:
        return TierUnavailableError(f"S3 {what} in {self.url} failed: {str(exc).splitlines()[0]}")

    async def start(self) -> None:
        """Check the bucket answers to these credentials (one listing); a clear error if not."""
        retry: RetryConfig = {"max_retries": 3, "retry_timeout": datetime.timedelta(seconds=_RETRY_SECONDS)}
        self._store = S3Store(self.bucket, prefix=self.prefix or None, retry_config=retry)
        try:
            await obstore.list(self._store, _PROBE, chunk_size=1).__anext__()
        except StopAsyncIteration:
            pass  # an empty bucket
        except BaseError as exc:
            text = str(exc)
            if isinstance(exc, PermissionDeniedError) or "403" in text or "SignatureDoesNotMatch" in text:
                hint = "S3 refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            elif "NoSuchBucket" in text:
                hint = f"bucket {self.bucket!r} does not exist: create it first"
            else:
                hint = "cannot reach S3: check AWS_ENDPOINT_URL (and AWS_ALLOW_HTTP for http://)"
            raise TierUnavailableError(f"--cold {self.url}: {hint} ({text.splitlines()[0]})") from None

    async def stop(self) -> None:
        """Drop the client (obstore holds no connections that need closing)."""
        self._store = None

    async def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless the key exists (a conditional create); True if stored."""
        try:
            await obstore.put_async(self._s3(), check_key(key), data, mode="create", use_multipart=False)
        except AlreadyExistsError:
            return False
        except BaseError as exc:
            raise self._failed(f"put of {key}", exc) from exc
        return True

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store a stream and return its size; ``FileExistsError`` if the key exists. Up to
        ``PART_BYTES`` it is one conditional put; beyond, a multipart upload in parts of that size
        (never the whole stream in memory). An error from the stream itself is raised as it was."""
        store = self._s3()
        check_key(key)
        source = aiter(chunks)
        head = bytearray()
        async for chunk in source:
            head += chunk
            if len(head) >= PART_BYTES:
                break
        else:  # the whole stream fits in one part
            if not await self.put(key, bytes(head)):
                raise FileExistsError(f"object {key!r} exists already; a key is written once")
            return len(head)
        try:
            await obstore.head_async(store, key)
        except (NotFoundError, FileNotFoundError):  # obstore raises either, depending on the call
            pass
        except BaseError as exc:
            raise self._failed(f"head of {key}", exc) from exc
        else:
            raise FileExistsError(f"object {key!r} exists already; a key is written once")
        size = 0
        broken: list[BaseException] = []

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            size += len(head)
            yield bytes(head)
            try:
                async for chunk in source:
                    size += len(chunk)
                    yield chunk
            except BaseException as exc:  # kept, so the caller sees the stream's own error
                broken.append(exc)
                raise

        try:
            await obstore.put_async(store, key, counted(), chunk_size=PART_BYTES, max_concurrency=4)
        except BaseException as exc:
            if broken:
                raise broken[0] from None
            if isinstance(exc, BaseError):
                raise self._failed(f"upload of {key}", exc) from exc
            raise
        return size

    async def get(self, key: str) -> bytes:
        """The whole object; ``KeyError`` if missing."""
        try:
            found = await obstore.get_async(self._s3(), check_key(key))
            return bytes(await found.bytes_async())
        except (NotFoundError, FileNotFoundError):  # obstore raises either, depending on the call
            raise KeyError(key) from None
        except BaseError as exc:
            raise self._failed(f"get of {key}", exc) from exc

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object in pieces; ``KeyError`` on first iteration if missing."""
        try:
            found = await obstore.get_async(self._s3(), check_key(key))
        except (NotFoundError, FileNotFoundError):  # obstore raises either, depending on the call
            raise KeyError(key) from None
        except BaseError as exc:
            raise self._failed(f"get of {key}", exc) from exc
        async for piece in found.stream(min_chunk_size=STREAM_BYTES):
            yield bytes(piece)

    async def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted (S3 lists by whole path segments, so the listing
        is of the enclosing folder, filtered here)."""
        folder = check_prefix(prefix).rpartition("/")[0]
        keys: list[str] = []
        try:
            async for batch in obstore.list(self._s3(), folder or None):
                keys.extend(meta["path"] for meta in batch if meta["path"].startswith(prefix))
        except BaseError as exc:
            raise self._failed(f"listing of {prefix}", exc) from exc
        return sorted(keys)

    async def delete(self, key: str) -> None:
        """Remove an object; a missing key is not an error."""
        try:
            await obstore.delete_async(self._s3(), check_key(key))
        except (NotFoundError, FileNotFoundError):  # obstore raises either, depending on the call
            pass
        except BaseError as exc:
            raise self._failed(f"delete of {key}", exc) from exc


if TYPE_CHECKING:

    def _conforms(tier: S3ColdTier) -> ColdTier:
        return tier


__all__ = ["PART_BYTES", "STREAM_BYTES", "S3ColdTier", "parse_url"]
