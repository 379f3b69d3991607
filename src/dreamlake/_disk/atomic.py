"""Replace a JSON file atomically, so a reader or a crash never sees half of it; and fsync helpers
for the ``"flush"`` and ``"sync"`` durability levels."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any

import msgspec

from .._schema.values import tag_nonfinite, untag_nonfinite

_ENCODER = msgspec.json.Encoder()


def json_bytes(obj: Any, plain: bool = False) -> bytes:
    """``obj`` as indented JSON, NaN and ±Infinity in their tagged form (``_schema/values.py``):
    strict JSON, not ``null``. ``plain``: ``obj`` holds no float (the tagging pass is skipped)."""
    return msgspec.json.format(_ENCODER.encode(obj if plain else tag_nonfinite(obj)), indent=2)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, fsync: bool = False) -> os.stat_result:
    """Write ``obj`` as :func:`json_bytes` to a temporary file beside ``path``, then rename it over."""
    return write_bytes_atomic(path, json_bytes(obj), fsync)


def write_bytes_atomic(
    path: str | os.PathLike[str], blob: bytes, fsync: bool = False, tmp: str | None = None
) -> os.stat_result:
    """Write ``blob`` to a temporary file beside ``path`` (``tmp``: :func:`temporary_beside`'s by
    default), then rename it over; return the new file's ``fstat``.

    With ``fsync``, the bytes reach the disk before the rename, and the rename before returning.
    """
    # os.open and os.write, not open(): a wide session replaces thousands of these at close, and the
    # buffered io layer cost more than the write itself.
    tmp = tmp or temporary_beside(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            done = 0
            while done < len(blob):  # pwrite from 0: the file was just truncated
                done += os.pwrite(fd, memoryview(blob)[done:], done)
            if fsync:
                os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(os.path.dirname(tmp))
    return st


def temporary_beside(path: str | os.PathLike[str]) -> str:
    """The temporary file an atomic replace of ``path`` writes first (``sweep.py`` knows the shape)."""
    head, name = os.path.split(os.fspath(path))
    return os.path.join(head, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the names in directory ``path`` (a file just created or renamed there) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Return the decoded JSON in ``path`` (NaN and ±Infinity as floats), or ``None`` if it is absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        parts = []
        size = os.fstat(fd).st_size + 1  # one read for the whole file, one more to see its end
        while chunk := os.read(fd, size):
            parts.append(chunk)
        blob = b"".join(parts)
    finally:
        os.close(fd)
    try:
        return untag_nonfinite(msgspec.json.decode(blob))
    except msgspec.DecodeError:
        return json.loads(blob)  # bare NaN/Infinity, as dreamlake 0.2.x writes them
