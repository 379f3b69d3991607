"""The hot tier: its interface (``base``) and the embedded SQLite implementation.

Implementations that need optional packages (MongoDB) are imported from their own modules, never
from here, so that ``--data DIR`` needs nothing beyond the standard library.
"""

from .base import Batch, HotTier, Ingest, IngestResult, SessionRecord, Token, TrackRecord, TrackWrite
from .sqlite import SQLiteHotTier

__all__ = [
    "Batch", "HotTier", "Ingest", "IngestResult", "SQLiteHotTier", "SessionRecord", "Token", "TrackRecord",
    "TrackWrite",
]
