"""What a point may hold, and how non-JSON values are made storable.

``append`` checks each top-level value against :data:`SCALAR_TYPES` inline (the common case costs a
set lookup per field); anything else goes through :func:`normalize`, which copies the point into
plain JSON types or raises :class:`InvalidValueError` naming the field.

Strict JSON has no NaN or Infinity, so non-finite floats are stored as the tagged object
``{"$float": "NaN" | "Infinity" | "-Infinity"}`` and turned back into floats on read.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any

from .._exceptions import InvalidValueError

SCALAR_TYPES: frozenset[type] = frozenset({int, float, str, bool, type(None)})

FLOAT_TAG = "$float"
_NONFINITE_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# Array libraries whose scalars and 0-d arrays become plain numbers; matched by module name so
# that dreamlake never imports them.
_ARRAY_MODULES = ("numpy", "torch", "jax", "jaxlib", "cupy", "tensorflow")


def normalize(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """Return a copy of ``fields`` holding only JSON types, or raise naming the bad field."""
    if not isinstance(fields, Mapping):
        raise InvalidValueError(f"a point must be a dict of fields, got {type(fields).__name__}")
    return _mapping(fields, "")


def _mapping(value: Mapping[Any, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            where = f" in field {path!r}" if path else ""
            raise InvalidValueError(f"field names must be str, got {key!r}{where}")
        out[key] = _value(item, f"{path}.{key}" if path else key)
    return out


def _value(value: Any, path: str) -> Any:
    kind = type(value)
    if kind in SCALAR_TYPES:
        return value
    if isinstance(value, Mapping):
        return _mapping(value, path)
    if isinstance(value, (list, tuple)):
        return [_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None and value.utcoffset() == datetime.timedelta(0):
            return value.replace(tzinfo=None).isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    # Subclasses of the builtins (numpy.float64, IntEnum, ...) become the builtin itself.
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    scalar = _array_scalar(value)
    if scalar is not None:
        return scalar
    raise InvalidValueError(
        f"field {path!r} has a value of type {kind.__module__}.{kind.__qualname__}, which cannot "
        "be stored; use int, float, bool, str, None, a list or a dict of those"
    )


def _array_scalar(value: Any) -> bool | int | float | None:
    """Return the number inside a numpy/torch/jax scalar or 0-d array, else ``None``."""
    module = type(value).__module__.partition(".")[0]
    if module not in _ARRAY_MODULES or not hasattr(value, "item"):
        return None
    if getattr(value, "ndim", 0) != 0:
        shape = getattr(value, "shape", "?")
        raise InvalidValueError(
            f"an array of shape {tuple(shape) if shape != '?' else shape} is not a scalar; "
            "log a number (x.item()) or a list (x.tolist())"
        )
    item = value.item()
    return item if type(item) in (bool, int, float) else None


def tag_nonfinite(value: Any) -> Any:
    """Return ``value`` with every NaN/±Infinity float replaced by its tagged object."""
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return value
        return {FLOAT_TAG: "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")}
    if kind is dict:
        return {k: tag_nonfinite(v) for k, v in value.items()}
    if kind is list:
        return [tag_nonfinite(v) for v in value]
    return value


def untag_nonfinite(value: Any) -> Any:
    """Inverse of :func:`tag_nonfinite`, applied to decoded JSON."""
    kind = type(value)
    if kind is dict:
        if len(value) == 1 and FLOAT_TAG in value and value[FLOAT_TAG] in _NONFINITE_NAMES:
            return _NONFINITE_NAMES[value[FLOAT_TAG]]
        return {k: untag_nonfinite(v) for k, v in value.items()}
    if kind is list:
        return [untag_nonfinite(v) for v in value]
    return value
