"""Log levels, and the keys of a queued log entry's own fields."""

from __future__ import annotations

from .._exceptions import InvalidArgumentError

# A queued entry is one flat dict: its metadata keys, and these int keys, which no metadata key can be.
TIMESTAMP, LEVEL, MESSAGE = 0, 1, 2

LEVELS = ("debug", "info", "warn", "error", "fatal")
# Exact spellings first, so the common call needs one dict lookup and no str.lower(); None is
# "info", as in 0.2.x.
LEVEL_LOOKUP: dict[str | None, str] = {
    None: "info", **{name: name for name in LEVELS}, **{name.upper(): name for name in LEVELS}
}


def check_level(level: object) -> str:
    """Return the canonical spelling of ``level`` (case-insensitive; ``None`` is info), or raise."""
    if level is None:
        return "info"
    if isinstance(level, str):
        canonical = LEVEL_LOOKUP.get(level) or LEVEL_LOOKUP.get(level.lower())
        if canonical is not None:
            return canonical
    raise InvalidArgumentError(
        f"invalid log level {level!r}: use one of {', '.join(LEVELS)} (case-insensitive)"
    )
