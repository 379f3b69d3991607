"""What a running server holds: its settings, its two tiers, the reader and the archiver."""

from __future__ import annotations

import dataclasses

from .archiver import Archiver
from .cold.base import ColdTier
from .config import ServerConfig
from .hot.base import HotTier
from .points import PointReader


@dataclasses.dataclass
class Server:
    """The app's state (``app.state.server``); nothing here outlives a restart except in the tiers."""

    config: ServerConfig
    hot: HotTier
    cold: ColdTier
    reader: PointReader
    archiver: Archiver
