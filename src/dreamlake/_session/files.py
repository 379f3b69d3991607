"""``session.file(...)``: save, list, download, delete and update a session's files (0.2.x API).

Everything is checked on the caller's thread (the source exists and is a regular file, the prefix
stays inside the session, metadata is JSON); the copying and hashing run on the agent's worker
threads. ``save()`` waits for them and returns the file's metadata; ``save(wait=False)`` returns a
``concurrent.futures.Future`` of it at once, and ``flush()``/``close()`` wait for it (and raise if it
failed).
"""

from __future__ import annotations

import builtins
import os
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from .._agent.agent import Agent
from .._exceptions import FileMissingError, InvalidArgumentError, InvalidValueError
from .._schema.names import check_prefix
from .._schema.values import normalize
from .._sinks.base import FileRequest

if TYPE_CHECKING:
    from .async_session import AsyncSession
    from .core import SessionCore
    from .session import Session


def _check_tags(tags: object) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)) or not all(
        isinstance(tag, str) for tag in tags
    ):
        raise InvalidValueError(f"tags must be a list of str, got {tags!r}")
    return list(tags)


def _check_metadata(metadata: object) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        return normalize(metadata)
    except InvalidValueError as exc:
        raise InvalidValueError(f"metadata: {exc}") from None


class _FileArgs:
    """The checked arguments of ``session.file(...)``, shared by both faces."""

    def __init__(
        self,
        file_path: str | os.PathLike[str] | None = None,
        prefix: str = "/",
        tags: builtins.list[str] | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        file_id: str | None = None,
        dest_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._file_path = file_path
        self._prefix = check_prefix(prefix)
        self._tags = _check_tags(tags)
        self._description = description
        self._metadata = _check_metadata(metadata)
        self._file_id = file_id
        self._dest_path = dest_path

    def _save_request(self, session: SessionCore) -> FileRequest:
        session._check_writable()
        if self._file_path is None:
            raise InvalidArgumentError("save() needs file_path: session.file(file_path=...).save()")
        source = Path(self._file_path).absolute()  # the caller may chdir before the copy runs
        if not source.exists():
            raise FileMissingError(f"cannot save {str(source)!r}: no such file")
        if not source.is_file():
            raise InvalidArgumentError(f"cannot save {str(source)!r}: it is not a regular file")
        return FileRequest(source, self._prefix, self._description, self._tags or [], self._metadata)

    def _list_args(self) -> tuple[str | None, builtins.list[str] | None]:
        return (None if self._prefix == "/" else self._prefix), self._tags

    def _download_args(self, dest: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
        target = dest if dest is not None else self._dest_path
        return self._need_id("download"), None if target is None else Path(target).absolute()

    def _update_args(
        self,
        description: str | None,
        tags: builtins.list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> tuple[str, dict[str, Any]]:
        changes = {
            "description": description if description is not None else self._description,
            "tags": _check_tags(tags) if tags is not None else self._tags,
            "metadata": _check_metadata(metadata) if metadata is not None else self._metadata,
        }
        return self._need_id("update"), {key: value for key, value in changes.items() if value is not None}

    def _need_id(self, action: str) -> str:
        if not self._file_id:
            raise InvalidArgumentError(f"{action}() needs file_id: session.file(file_id=...).{action}()")
        return self._file_id


class FileHandle(_FileArgs):
    """What ``session.file(...)`` returns. Keyword arguments follow dreamlake 0.2.x.

    Args:
        file_path: The file to save (for :meth:`save`).
        prefix: Logical folder, ``"/"`` by default; filters :meth:`list`.
        tags: Tags of the saved file; filter :meth:`list` (any of them).
        description: Free text stored with the file.
        metadata: JSON-able dict stored with the file.
        file_id: The file to download, delete or update.
        dest_path: Where :meth:`download` writes (default: the file's name, in the current directory).
    """

    def __init__(self, session: Session, *args: Any) -> None:
        super().__init__(*args)
        self._session = session

    @overload
    def save(self, wait: Literal[True] = ...) -> dict[str, Any]: ...

    @overload
    def save(self, wait: Literal[False]) -> Future[dict[str, Any]]: ...

    def save(self, wait: bool = True) -> dict[str, Any] | Future[dict[str, Any]]:
        """Copy ``file_path`` into the session; the source is only read.

        Saving the same prefix and file name again replaces the earlier file.

        Args:
            wait: If false, return a ``Future`` of the metadata at once; the copy runs in the
                background, and ``flush()``/``close()`` wait for it. Do not change the source until
                the future is done.

        Returns:
            ``id, filename, path, sizeBytes, checksum`` (SHA-256), ``contentType, tags, description,
            metadata, uploadedAt, updatedAt, deletedAt``.

        Raises:
            FileMissingError: ``file_path`` does not exist.
            InvalidArgumentError: ``file_path`` is missing or not a regular file.
            WriteProtectedError: The session is write-protected.
        """
        request = self._save_request(self._session)
        future = self._session._submit(Agent.save_file, request, not wait)
        return future.result() if wait else future

    def list(self) -> builtins.list[dict[str, Any]]:
        """Files of the session under ``prefix`` with any of ``tags`` (all files by default)."""
        return self._session._call(Agent.list_files, *self._list_args())

    def download(self, dest: str | os.PathLike[str] | None = None) -> str:
        """Copy the file ``file_id`` to ``dest`` (a path or a directory) and verify its SHA-256.

        Returns:
            The path written.

        Raises:
            FileMissingError: No file with that id.
            ChecksumError: The stored copy does not match its checksum (nothing is left at ``dest``).
        """
        return str(self._session._call(Agent.download_file, *self._download_args(dest)))

    def delete(self) -> dict[str, Any]:
        """Delete the file ``file_id``; returns ``{"id", "deletedAt"}``."""
        self._session._check_writable()
        return self._session._call(Agent.delete_file, self._need_id("delete"))

    def update(
        self,
        *,
        description: str | None = None,
        tags: builtins.list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Change the description, tags or metadata of ``file_id`` (given here or to ``file()``)."""
        self._session._check_writable()
        return self._session._call(Agent.update_file, *self._update_args(description, tags, metadata))


class AsyncFileHandle(_FileArgs):
    """What ``AsyncSession.file(...)`` returns: :class:`FileHandle`'s methods, awaitable.

    ``await save()`` copies and hashes in a worker thread; to save in the background, run it in a
    task of your own (``close()`` waits for saves that have started).
    """

    def __init__(self, session: AsyncSession, *args: Any) -> None:
        super().__init__(*args)
        self._session = session

    async def save(self) -> dict[str, Any]:
        """As :meth:`FileHandle.save`."""
        result: dict[str, Any] = await self._session._acall(
            Agent.save_file, self._save_request(self._session), False
        )
        return result

    async def list(self) -> builtins.list[dict[str, Any]]:
        """As :meth:`FileHandle.list`."""
        result: builtins.list[dict[str, Any]] = await self._session._acall(
            Agent.list_files, *self._list_args()
        )
        return result

    async def download(self, dest: str | os.PathLike[str] | None = None) -> str:
        """As :meth:`FileHandle.download`."""
        return str(await self._session._acall(Agent.download_file, *self._download_args(dest)))

    async def delete(self) -> dict[str, Any]:
        """As :meth:`FileHandle.delete`."""
        self._session._check_writable()
        result: dict[str, Any] = await self._session._acall(Agent.delete_file, self._need_id("delete"))
        return result

    async def update(
        self,
        *,
        description: str | None = None,
        tags: builtins.list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """As :meth:`FileHandle.update`."""
        self._session._check_writable()
        result: dict[str, Any] = await self._session._acall(
            Agent.update_file, *self._update_args(description, tags, metadata)
        )
        return result
