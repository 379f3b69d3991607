"""The cold tier's interface: immutable objects by key (archived chunks of points, file bytes).

Keys are ``/``-separated and made by the server, never by users. ``put`` never replaces: a second
put of a key keeps the first object, which is what lets two archivers race on one chunk safely.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol


def check_key(key: str) -> str:
    """``key`` if it is ``/``-separated non-empty names without NUL that do not start with ``.``
    (so no ``..``, and the directory tier's temporary names cannot clash); ``ValueError`` if not."""
    for part in key.split("/"):
        if not part or part.startswith(".") or "\0" in part:
            raise ValueError(
                f"object key {key!r} is not a '/'-separated list of non-empty names without NUL "
                "that do not start with '.'"
            )
    return key


def check_prefix(prefix: str) -> str:
    """``prefix`` unless it holds NUL or a ``..`` segment (``ValueError``)."""
    if "\0" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"object key prefix {prefix!r} holds NUL or '..'")
    return prefix


class ColdTier(Protocol):
    """Immutable objects by key."""

    async def start(self) -> None:
        """Check the store is reachable and create what is missing."""

    async def stop(self) -> None:
        """Release connections."""

    async def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless the key exists; True if this call stored it."""

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store a stream under ``key`` and return its size; a key is written once, so
        ``FileExistsError`` (the first object kept) if it exists. A stream that fails stores nothing."""

    async def get(self, key: str) -> bytes:
        """The whole object; ``KeyError`` if missing."""

    def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object in chunks; ``KeyError`` (on first iteration) if missing."""

    async def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""

    async def delete(self, key: str) -> None:
        """Remove an object; a missing key is not an error."""
