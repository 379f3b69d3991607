"""Timestamps as dreamlake stores them: ISO-8601, UTC, with a ``Z`` (the 0.2.x format)."""

from __future__ import annotations

import datetime
import time


def utc_iso(seconds: float) -> str:
    """Return POSIX ``seconds`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.replace(tzinfo=None).isoformat() + "Z"


def utc_now_iso() -> str:
    """Return the current UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return utc_iso(time.time())
