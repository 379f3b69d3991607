"""Names that become path components: they must never escape the storage root."""

from __future__ import annotations

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
