"""Names that become path components: they must never escape the storage root."""

from __future__ import annotations

import re

from .._exceptions import InvalidNameError

_MAX_NAME_BYTES = 255  # the usual NAME_MAX of Linux and macOS file systems


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is safe as one path component, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str):
        raise InvalidNameError(f"{kind} name must be a str, got {type(name).__name__}")
    if not name or not name.strip():
        raise InvalidNameError(f"{kind} name must not be empty")
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise InvalidNameError(
            f"{kind} name {name!r} is not allowed: it must be one path component "
            "(no '/', '\\', NUL, '.' or '..')"
        )
    if name.startswith("."):
        raise InvalidNameError(f"{kind} name {name!r} must not start with '.' (reserved)")
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        raise InvalidNameError(f"{kind} name is longer than {_MAX_NAME_BYTES} bytes")
    return name


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` as ``/a/b`` (a logical folder), or raise if it could escape the session."""
    if not isinstance(prefix, str):
        raise InvalidNameError(f"file prefix must be a str, got {type(prefix).__name__}")
    parts = [part for part in prefix.split("/") if part]
    for part in parts:
        if part in (".", "..") or "\\" in part or "\x00" in part:
            raise InvalidNameError(
                f"file prefix {prefix!r} is not allowed: use '/'-separated names without "
                "'.', '..', '\\' or NUL"
            )
    return "/" + "/".join(parts)


# A track name may hold anything printable, '/' included, as wandb users write them (``train/loss``).
# Refused: control characters (C0, DEL, C1: NUL, newline, tab...), the line and paragraph separators,
# lone surrogates (no UTF-8 form, so no file name) and '\' (a separator on Windows). A fixed class
# rather than str.isprintable(), whose answer moves with the Unicode version: client and server must
# agree on every name, whatever Python each runs.
_TRACK_REFUSED = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029\ud800-\udfff]")
_TRACK_RULE = (
    "a track name is any printable text, '/' included (e.g. 'train/loss'), without control "
    "characters (NUL, newline, tab...) or '\\', and not empty, blank, '.' or '..'"
)
_UNESCAPE = re.compile("%(25|2F)")
_UNESCAPED = {"25": "%", "2F": "/"}


def check_track_name(name: object) -> str:
    """Return ``name`` if it is a valid track name, else raise :class:`InvalidNameError`.

    A track name is a name, not a path: ``train/loss`` and even ``a/../b`` are allowed, and are stored
    flat under ``tracks/`` as :func:`track_dirname` escapes them. The escaped name must fit in
    255 bytes of UTF-8.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"track name must be a str, got {type(name).__name__}")
    if not name.strip() or name in (".", ".."):
        raise InvalidNameError(f"track name {name!r} is not allowed: {_TRACK_RULE}")
    bad = _TRACK_REFUSED.search(name)
    if bad is not None:
        raise InvalidNameError(
            f"track name {name!r} holds {bad.group()!r} at position {bad.start()}: {_TRACK_RULE}"
        )
    size = len(track_dirname(name).encode("utf-8"))
    if size > _MAX_NAME_BYTES:
        raise InvalidNameError(
            f"track name {name[:40]!r}... is too long: it is stored as a directory name of {size} "
            f"bytes (UTF-8, with '/', '%' and a leading '.' escaped as 3 bytes each); at most "
            f"{_MAX_NAME_BYTES} are allowed"
        )
    return name


def track_dirname(name: str) -> str:
    """The directory under ``tracks/`` that holds track ``name``: one path component, never hidden.

    ``%`` becomes ``%25``, ``/`` becomes ``%2F`` and a leading ``.`` becomes ``%2E``; nothing else
    changes, so a plain name (``loss``) is its own directory, as in dreamlake 0.2.x. Reversed by
    :func:`track_name_from_dirname`. Call it on a name :func:`check_track_name` accepted.
    """
    escaped = name.replace("%", "%25").replace("/", "%2F")
    return "%2E" + escaped[1:] if escaped.startswith(".") else escaped


def track_name_from_dirname(dirname: str) -> str:
    """The track name that :func:`track_dirname` turned into ``dirname``."""
    if dirname.startswith("%2E"):
        dirname = "." + dirname[3:]
    return _UNESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], dirname)
