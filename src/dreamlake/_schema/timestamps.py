"""Timestamps as dreamlake stores them: ISO-8601, UTC, with a ``Z`` (the 0.2.x format)."""

from __future__ import annotations

import math
import time

# Seconds formatted lately: log entries come in bursts within the same second, and formatting the
# date part is most of the cost (datetime.isoformat takes ~10x as long). A few seconds, not one: a
# track's metadata alternates between its first write's second and now.
_SECONDS: dict[int, str] = {}
_SECONDS_KEPT = 64


def utc_iso(seconds: float) -> str:
    """Return POSIX ``seconds`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (no fraction when it is zero,
    like ``datetime.isoformat``)."""
    fraction, whole_float = math.modf(seconds)  # rounded as datetime.fromtimestamp rounds
    whole, micros = int(whole_float), round(fraction * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    text = _SECONDS.get(whole)
    if text is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        text = _SECONDS[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{text}.{micros:06d}Z" if micros else f"{text}Z"


def utc_now_iso() -> str:
    """Return the current UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return utc_iso(time.time())
