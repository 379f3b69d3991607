import datetime
import math
from typing import Any

import numpy as np
import pytest

from dreamlake import InvalidValueError
from dreamlake._schema.values import normalize, tag_nonfinite, untag_nonfinite


def test_plain_json_values_pass_unchanged() -> None:
    point = {"a": 1, "b": 2.5, "c": True, "d": None, "e": "x", "f": [1, [2]], "g": {"h": {"i": 1}}}
    assert normalize(point) == point


def test_numpy_scalars_and_0d_arrays_become_builtins() -> None:
    out = normalize({"a": np.float32(0.5), "b": np.int64(3), "c": np.bool_(True), "d": np.array(2.0)})
    assert out == {"a": 0.5, "b": 3, "c": True, "d": 2.0}
    assert [type(v) for v in out.values()] == [float, int, bool, float]


def test_numpy_array_is_rejected_naming_the_field() -> None:
    with pytest.raises(InvalidValueError, match=r"tolist"):
        normalize({"weights": np.zeros(3)})


def test_datetimes_become_iso_8601() -> None:
    utc = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    naive = datetime.datetime(2024, 5, 1, 12, 0)
    out = normalize({"utc": utc, "naive": naive, "day": datetime.date(2024, 5, 1)})
    assert out == {"utc": "2024-05-01T12:00:00Z", "naive": "2024-05-01T12:00:00", "day": "2024-05-01"}


def test_tuple_becomes_list() -> None:
    assert normalize({"t": (1, 2)}) == {"t": [1, 2]}


@pytest.mark.parametrize(
    ("point", "where"),
    [
        ({"obj": object()}, "'obj'"),
        ({"nested": {"deep": [1, {"bad": {1, 2}}]}}, r"'nested.deep\[1\].bad'"),
        ({"b": b"bytes"}, "'b'"),
    ],
)
def test_unsupported_values_raise_type_error_naming_the_field(point: dict[str, Any], where: str) -> None:
    with pytest.raises(TypeError, match=where):
        normalize(point)


def test_non_str_keys_are_rejected() -> None:
    with pytest.raises(InvalidValueError, match="must be str"):
        normalize({"m": {1: "x"}})


def test_normalize_copies_nested_containers() -> None:
    inner = [1, 2]
    out = normalize({"l": inner})
    inner.append(3)
    assert out == {"l": [1, 2]}


def test_nonfinite_round_trip_is_lossless() -> None:
    value = {
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "ok": 1.0,
        "l": [math.nan, {"x": -math.inf}],
    }
    tagged = tag_nonfinite(value)
    assert tagged["nan"] == {"$float": "NaN"}
    assert tagged["inf"] == {"$float": "Infinity"}
    assert tagged["ninf"] == {"$float": "-Infinity"}
    back = untag_nonfinite(tagged)
    assert math.isnan(back["nan"])
    assert back["inf"] == math.inf
    assert back["ninf"] == -math.inf
    assert math.isnan(back["l"][0])
    assert back["l"][1]["x"] == -math.inf
    assert back["ok"] == 1.0
