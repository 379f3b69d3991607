"""Timestamps as dreamlake stores them: ISO-8601, UTC, with a ``Z``."""

from __future__ import annotations

import datetime


def utc_now_iso() -> str:
    """Return the current UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat() + "Z"
