"""A session's ``files/`` directory in the 0.2.x layout; blocking, run in the agent's worker threads.

```
files/.files_metadata.json     {"files": [{id, path, filename, sizeBytes, checksum, ...}]}
files/<id>/<filename>          the saved bytes
```
Bytes are streamed in chunks, hashed while they are copied, and renamed into place before the index
names them; the index is rewritten under a file lock (other threads and processes save too), and a
replaced or deleted file's bytes are removed only after the index no longer points at them. A crash
can therefore leave an unindexed directory behind, never an index entry without its bytes.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from .._exceptions import ChecksumError, FileMissingError
from .._schema.timestamps import utc_now_iso
from .atomic import fsync_dir, read_json, write_json_atomic
from .filelock import FileLock

CHUNK = 1 << 20  # bytes per read: large enough for fast hashing, small enough to keep RSS flat


class FileStore:
    """The saved files of one session."""

    def __init__(self, directory: Path, session_id: str, fsync: bool = False) -> None:
        self.directory = directory
        self.index_path = directory / ".files_metadata.json"
        self.lock = FileLock(directory / ".files.lock")
        self._session_id = session_id
        self._fsync = fsync

    def save(
        self,
        source: Path,
        prefix: str,
        description: str | None,
        tags: list[str],
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Copy ``source`` in; replace an earlier file with the same prefix and name."""
        file_id, file_dir = self._new_directory()
        try:
            size, checksum = _copy(source, file_dir / source.name, self._fsync)
            if self._fsync:
                fsync_dir(self.directory)  # the new files/<id> directory
            now = utc_now_iso()
            entry = {
                "id": file_id,
                "sessionId": self._session_id,
                "path": prefix,
                "filename": source.name,
                "description": description,
                "tags": tags,
                "contentType": mimetypes.guess_type(source.name)[0] or "application/octet-stream",
                "sizeBytes": size,
                "checksum": checksum,
                "metadata": metadata,
                "uploadedAt": now,
                "updatedAt": now,
                "deletedAt": None,
            }
            with self.lock:
                files = self._files()
                replaced = [
                    i for i, f in enumerate(files)
                    if f.get("path") == prefix and f.get("filename") == source.name
                    and f.get("deletedAt") is None
                ]
                if replaced:  # 0.2.x keeps the replaced file's place in the list
                    old = files[replaced[0]]
                    files[replaced[0]] = entry
                    for i in reversed(replaced[1:]):
                        del files[i]
                else:
                    files.append(entry)
                    old = None
                self._write(files)
        except BaseException:
            shutil.rmtree(file_dir, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(self.directory / old["id"], ignore_errors=True)
        return entry

    def find(self, prefix: str | None, tags: list[str] | None) -> list[dict[str, Any]]:
        """Files not deleted, under ``prefix`` and carrying any of ``tags`` (when given)."""
        files = [f for f in self._files() if f.get("deletedAt") is None]
        if prefix:
            files = [f for f in files if is_under(f.get("path", "/"), prefix)]
        if tags:
            files = [f for f in files if any(tag in (f.get("tags") or []) for tag in tags)]
        return files

    def download(self, file_id: str, dest: Path | None) -> Path:
        """Copy a file out to ``dest`` (a path, a directory, or the current directory)."""
        entry = self._entry(self._files(), file_id)
        target, tmp = download_target(entry["filename"], dest)
        try:
            _, checksum = _copy(self.directory / file_id / entry["filename"], tmp)
            check_download(entry, checksum)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def delete(self, file_id: str) -> dict[str, Any]:
        """Mark a file deleted in the index (as 0.2.x does), then remove its bytes."""
        with self.lock:
            files = self._files()
            entry = self._entry(files, file_id)
            entry["deletedAt"] = entry["updatedAt"] = utc_now_iso()
            self._write(files)
        shutil.rmtree(self.directory / file_id, ignore_errors=True)
        return {"id": file_id, "deletedAt": entry["deletedAt"]}

    def update(self, file_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Set ``description``, ``tags`` or ``metadata`` of a file."""
        with self.lock:
            files = self._files()
            entry = self._entry(files, file_id)
            entry.update(changes)
            entry["updatedAt"] = utc_now_iso()
            self._write(files)
        return entry

    def close(self) -> None:
        """Release the lock's descriptor."""
        self.lock.close()

    def _files(self) -> list[dict[str, Any]]:
        index = read_json(self.index_path)
        files: list[dict[str, Any]] = index.get("files", []) if index else []
        return files

    def _write(self, files: list[dict[str, Any]]) -> None:
        write_json_atomic(self.index_path, {"files": files}, self._fsync)

    @staticmethod
    def _entry(files: list[dict[str, Any]], file_id: str) -> dict[str, Any]:
        for entry in files:
            if entry.get("id") == file_id and entry.get("deletedAt") is None:
                return entry
        raise FileMissingError(f"the session has no file with id {file_id!r} (or it was deleted)")

    def _new_directory(self) -> tuple[str, Path]:
        """A fresh ``files/<id>``; ids are 0.2.x-style: milliseconds << 12 | 12 random bits."""
        while True:
            file_id = str((time.time_ns() // 1_000_000) << 12 | random.getrandbits(12))
            path = self.directory / file_id
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return file_id, path


def download_target(filename: str, dest: Path | None) -> tuple[Path, Path]:
    """Where a download of ``filename`` lands (``dest`` is a path, a directory, or None for the
    current directory), and the temporary name it is written under until its checksum is checked."""
    target = Path(filename) if dest is None else dest
    if target.is_dir():
        target = target / filename
    return target, target.with_name(f".{target.name}.{os.getpid()}.download")


def check_download(entry: dict[str, Any], checksum: str) -> None:
    """Raise :class:`ChecksumError` unless the bytes read match the file's SHA-256."""
    if checksum != entry["checksum"]:
        raise ChecksumError(
            f"file {entry['id']} ({entry['filename']}) does not match its SHA-256: the stored "
            f"copy is damaged (expected {entry['checksum']}, read {checksum})"
        )


def is_under(path: str, prefix: str) -> bool:
    """Whether logical ``path`` is ``prefix`` or inside it."""
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _copy(source: Path, dest: Path, fsync: bool = False) -> tuple[int, str]:
    """Stream ``source`` to ``dest`` (via a temporary name); return its size and SHA-256."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    size = 0
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as out:
            while n := src.readinto(buffer):
                digest.update(view[:n])
                out.write(view[:n])
                size += n
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        shutil.copystat(source, tmp)
        os.replace(tmp, dest)
        if fsync:
            fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()
