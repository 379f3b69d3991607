"""Shapes that cross a boundary: between the session and its sink, and between client and server."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class TrackSpec:
    """A track's name and the descriptive fields given to ``session.track(...)``."""

    name: str
    description: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
