"""Replace a JSON file atomically, so a reader or a crash never sees half of it."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to a temporary file beside ``path``, then rename it over."""
    write_bytes_atomic(path, msgspec.json.format(_ENCODER.encode(obj), indent=2))


def write_bytes_atomic(path: Path, blob: bytes) -> None:
    """Write ``blob`` to a temporary file beside ``path``, then rename it over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """Return the decoded JSON in ``path``, or ``None`` when the file does not exist."""
    try:
        return msgspec.json.decode(path.read_bytes())
    except FileNotFoundError:
        return None
