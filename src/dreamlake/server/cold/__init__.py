"""The cold tier: its interface (``base``) and the embedded directory implementation.

Implementations that need optional packages (S3) are imported from their own modules, never from
here.
"""

from .base import ColdTier
from .directory import DirectoryColdTier

__all__ = ["ColdTier", "DirectoryColdTier"]
