"""The embedded cold tier: each object is the file ``root/<key>``.

An object is written to a temporary file beside its final name, made durable (fsync), then given
its name with ``os.link``, which fails rather than replace an existing file: that is the
put-if-absent of :class:`~.base.ColdTier`, atomic across threads and processes, and a crash leaves
either no object or the whole of it. Temporary names start with ``.``, so key parts may not.
Blocking file work runs in worker threads; a stream is read and written in pieces, never whole.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio
import anyio.to_thread

from ..._disk.atomic import fsync_dir
from .base import check_key, check_prefix

if TYPE_CHECKING:
    from .base import ColdTier


# Size of the pieces ``stream`` yields and ``put_stream`` writes: large enough that the thread hop
# per piece is noise, small enough that many concurrent downloads stay cheap.
CHUNK_BYTES = 1 << 20


class DirectoryColdTier:
    """Objects as files under ``root`` (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def start(self) -> None:
        """Create the root directory if it is missing."""
        await anyio.to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))

    async def stop(self) -> None:
        """Nothing to release: files are opened per call."""

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    async def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless the key exists; True if this call stored it."""
        path = self._path(key)
        return await anyio.to_thread.run_sync(self._put, path, data)

    def _put(self, path: Path, data: bytes) -> bool:
        tmp, f = self._open_temp(path)
        try:
            f.write(data)
            return self._commit(f, tmp, path)
        finally:
            self._discard(f, tmp)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store a stream under ``key`` and return its size; ``FileExistsError`` (and the first
        object kept) if the key exists."""
        path = self._path(key)
        tmp, f = await anyio.to_thread.run_sync(self._open_temp, path)
        size, stored = 0, False
        try:
            pending = bytearray()
            async for chunk in chunks:
                pending += chunk
                size += len(chunk)
                if len(pending) >= CHUNK_BYTES:
                    full, pending = pending, bytearray()
                    await anyio.to_thread.run_sync(f.write, full)
            await anyio.to_thread.run_sync(f.write, pending)
            stored = await anyio.to_thread.run_sync(self._commit, f, tmp, path)
        finally:
            with anyio.CancelScope(shield=True):  # a cancelled upload leaves no temporary file
                await anyio.to_thread.run_sync(self._discard, f, tmp)
        if not stored:
            raise FileExistsError(f"object {key!r} exists already; a key is written once")
        return size

    def _open_temp(self, path: Path) -> tuple[Path, BinaryIO]:
        parent = path.parent
        missing = []
        while not parent.is_dir():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir(exist_ok=True)
            fsync_dir(directory.parent)  # the new directory's name is durable before the object's
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        return tmp, open(tmp, "xb")  # closed by _commit or _discard

    @staticmethod
    def _commit(f: BinaryIO, tmp: Path, path: Path) -> bool:
        f.flush()
        os.fsync(f.fileno())
        f.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True

    @staticmethod
    def _discard(f: BinaryIO, tmp: Path) -> None:
        f.close()
        tmp.unlink(missing_ok=True)

    async def get(self, key: str) -> bytes:
        """The whole object; ``KeyError`` if missing."""
        path = self._path(key)
        try:
            return await anyio.to_thread.run_sync(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object in pieces of ``CHUNK_BYTES``; ``KeyError`` on first iteration if missing."""
        path = self._path(key)
        try:
            f = await anyio.to_thread.run_sync(open, path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        try:
            while chunk := await anyio.to_thread.run_sync(f.read, CHUNK_BYTES):
                yield chunk
        finally:
            f.close()

    async def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted (objects being written are not listed)."""
        check_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        return await anyio.to_thread.run_sync(_list_keys, self.root, folder, prefix)

    async def delete(self, key: str) -> None:
        """Remove an object; a missing key is not an error. Emptied directories are kept (a
        concurrent put may be about to write in them)."""
        path = self._path(key)
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))


def _list_keys(root: Path, folder: str, prefix: str) -> list[str]:
    # A module function: inside the class, ``list`` names the method.
    keys: list[str] = []
    for directory, subdirs, files in os.walk(root.joinpath(*folder.split("/")) if folder else root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        relative = Path(directory).relative_to(root).as_posix()
        above = "" if relative == "." else relative + "/"
        keys.extend(above + name for name in files if not name.startswith("."))
    return sorted(key for key in keys if key.startswith(prefix))


if TYPE_CHECKING:

    def _conforms(tier: DirectoryColdTier) -> ColdTier:
        return tier


__all__ = ["CHUNK_BYTES", "DirectoryColdTier"]
