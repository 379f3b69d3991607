"""JSON text for the hot tiers' free-form values (metadata, tags, parameters, session fields).

Strict JSON with NaN and ±Infinity in the tagged form of ``_schema.values``, so they come back
exactly, and so MongoDB stores user keys as a string (keys holding ``.`` or ``$``, integers beyond
64 bits) rather than refusing them as a sub-document.
"""

from __future__ import annotations

import json
from typing import Any

from ..._schema.values import tag_nonfinite, untag_nonfinite


def dump(value: Any) -> str:
    """``value`` as compact JSON text."""
    return json.dumps(tag_nonfinite(value), separators=(",", ":"), ensure_ascii=False)


def dump_optional(value: Any) -> str | None:
    """``dump`` that keeps None."""
    return None if value is None else dump(value)


def load(text: str | None) -> Any:
    """Back from ``dump``; None stays None."""
    return None if text is None else untag_nonfinite(json.loads(text))


__all__ = ["dump", "dump_optional", "load"]
