"""Replace a JSON file atomically, so a reader or a crash never sees half of it; and fsync helpers
for the ``"flush"`` and ``"sync"`` durability levels."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import msgspec

from .._schema.values import tag_nonfinite, untag_nonfinite

_ENCODER = msgspec.json.Encoder()


def write_json_atomic(path: Path, obj: Any, fsync: bool = False) -> None:
    """Write ``obj`` as indented JSON to a temporary file beside ``path``, then rename it over.

    NaN and ±Infinity are written in their tagged form (``_schema/values.py``): strict JSON, not ``null``.
    """
    write_bytes_atomic(path, msgspec.json.format(_ENCODER.encode(tag_nonfinite(obj)), indent=2), fsync)


def write_bytes_atomic(path: Path, blob: bytes, fsync: bool = False) -> None:
    """Write ``blob`` to a temporary file beside ``path``, then rename it over.

    With ``fsync``, the bytes reach the disk before the rename, and the rename before returning.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the names in directory ``path`` (a file just created or renamed there) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """Return the decoded JSON in ``path`` (NaN and ±Infinity as floats), or ``None`` if it is absent."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return untag_nonfinite(msgspec.json.decode(blob))
    except msgspec.DecodeError:
        return json.loads(blob)  # bare NaN/Infinity, as dreamlake 0.2.x writes them
