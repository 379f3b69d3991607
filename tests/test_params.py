"""``session.parameters()``: flattening, merging, conflicts, and two processes setting at once."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamlake import (
    InvalidArgumentError,
    InvalidValueError,
    ParameterConflictError,
    Session,
)
from dreamlake._schema.params import KeySet, flatten, merge, unflatten

from ._subproc import SESSION, WORKSPACE, Child, block, make_script, no_errors


def stored(session: Session) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((session.path / "parameters.json").read_text())
    return doc


def test_flatten_and_unflatten_are_inverse() -> None:
    nested = {"model": {"lr": 0.1, "layers": {"hidden": 128}}, "opt": "adam", "tags": [1, {"x": 2}]}
    flat = flatten(nested)
    assert flat == {"model.lr": 0.1, "model.layers.hidden": 128, "opt": "adam", "tags": [1, {"x": 2}]}
    assert unflatten(flat) == nested


def test_unflatten_keeps_both_values_of_a_conflicting_file() -> None:
    # Only files written by other tools can hold both; neither value may be lost.
    assert unflatten({"a": 1, "a.b": 2}) == {"a": 1, "a.b": 2}


def test_conflicts_find_values_that_are_also_groups() -> None:
    assert KeySet(["a"]).conflicts(["a.b"]) == [("a.b", "a")]
    assert KeySet(["a.b.c"]).conflicts(["a"]) == [("a", "a.*")]
    assert KeySet(["a.b.c"]).conflicts(["a.b.c", "a.b.d"]) == []
    assert KeySet(["a.b"]).conflicts(["a.c", "ab"]) == []
    assert KeySet().conflicts(["x", "x.y"]) == [("x", "x.*"), ("x.y", "x")]  # within one change


def test_merge_lets_the_later_change_win_a_conflict() -> None:
    data = {"a": 1, "x": 0, "g.h": 1, "g.i": 2}
    assert merge(data, [{"a.b": 2}, {"g": 3}, {"a.c": 4}]) == ["a", "g.h", "g.i"]
    assert data == {"x": 0, "a.b": 2, "g": 3, "a.c": 4}


def test_set_flattens_merges_and_versions(tmp_path: Path) -> None:
    with Session("p", "w", local_path=tmp_path) as s:
        params = s.parameters()
        assert params.get() == {}
        params.set(model={"lr": 0.1, "layers": 3}, optimizer="adam")
        params.set(model={"lr": 0.01})  # merges: model.layers stays
        params.set(**{"data.path": "/d", "seed": np.int64(7), "ratio": np.float64(0.5)})
        assert params.get() == {
            "model.lr": 0.01, "model.layers": 3, "optimizer": "adam", "data.path": "/d", "seed": 7,
            "ratio": 0.5,
        }
        assert params.get(flatten=False) == {
            "model": {"lr": 0.01, "layers": 3}, "optimizer": "adam", "data": {"path": "/d"}, "seed": 7,
            "ratio": 0.5,
        }
    doc = stored(s)
    assert doc["version"] == 3
    assert doc["data"]["seed"] == 7
    assert type(doc["data"]["seed"]) is int
    assert doc["updatedAt"].endswith("Z")


def test_set_returns_the_handle_for_chaining(tmp_path: Path) -> None:
    with Session("p", "w", local_path=tmp_path) as s:
        s.parameters().set(a=1).set(b=2)
        assert s.parameters().get() == {"a": 1, "b": 2}


def test_nonfinite_values_round_trip_as_strict_json(tmp_path: Path) -> None:
    with Session("p", "w", local_path=tmp_path) as s:
        s.parameters().set(clip=math.inf, bad=math.nan)
        got = s.parameters().get()
    assert got["clip"] == math.inf
    assert math.isnan(got["bad"])
    text = (s.path / "parameters.json").read_text()
    assert "NaN" not in text.replace('"NaN"', "")  # only the tagged string form
    json.loads(text)  # strict JSON


@pytest.mark.parametrize(
    ("first", "second"),
    [({"a": 1}, {"a": {"b": 2}}), ({"a": {"b": 2}}, {"a": 1}), ({"a": {"b": {"c": 1}}}, {"a.b": 2})],
)
def test_a_value_cannot_become_a_group(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any]
) -> None:
    with Session("p", "w", local_path=tmp_path) as s:
        s.parameters().set(**first)
        with pytest.raises(ParameterConflictError, match="conflicts with"):
            s.parameters().set(**second)
        assert s.parameters().get() == flatten(first)  # nothing of the refused call was stored
    assert stored(s)["version"] == 1


def test_conflict_with_a_parameter_of_an_earlier_run(tmp_path: Path) -> None:
    with Session("p", "w", local_path=tmp_path) as s:
        s.parameters().set(lr=0.1)
    with Session("p", "w", local_path=tmp_path) as s:
        s.parameters().set(epochs=3)  # merges with the earlier run
        with pytest.raises(ParameterConflictError):
            s.parameters().set(lr={"start": 0.1})
        assert s.parameters().get() == {"lr": 0.1, "epochs": 3}
    assert stored(s)["version"] == 2


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"a": object()}, InvalidValueError),
        ({"a": {"b": {1, 2}}}, InvalidValueError),
        ({"a..b": 1}, InvalidArgumentError),
        ({"a": {"": 1}}, InvalidArgumentError),
    ],
)
def test_bad_parameters_are_refused_and_nothing_is_stored(
    tmp_path: Path, params: dict[str, Any], error: type[Exception]
) -> None:
    with Session("p", "w", local_path=tmp_path) as s:
        s.parameters().set(ok=1)
        with pytest.raises(error):
            s.parameters().set(**params)
        assert s.parameters().get() == {"ok": 1}


def test_get_reads_what_another_writer_has_flushed(tmp_path: Path) -> None:
    with Session("p", "w", local_path=tmp_path) as a, Session("p", "w", local_path=tmp_path) as b:
        a.parameters().set(x=1)
        b.parameters().set(y=2)
        b.flush()  # b's agent, not a's, holds b's change until then
        assert a.parameters().get() == {"x": 1, "y": 2}


SETTER = """
with Session(NAME, WS, local_path=ROOT, flush_interval=0.01) as s:
    params = s.parameters()
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for i in range(KEYS):
        params.set(**{f"p{WRITER}": {f"k{i}": i}})
        if i % 10 == 0:
            s.flush()  # many separate writes, so that the two processes interleave
print("done", flush=True)
"""


def test_two_processes_setting_parameters_at_once_lose_neither(tmp_path: Path) -> None:
    keys = 200
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(
                Child(
                    make_script(
                        block(SETTER), ROOT=str(tmp_path), NAME=SESSION, WS=WORKSPACE, KEYS=keys, WRITER=w
                    ),
                    stdin=True,
                )
            )
            for w in range(2)
        ]
        for child in children:
            child.expect("ready", timeout=60)
        for child in children:
            child.send("go\n")
        for child in children:
            assert child.wait(60) == 0, child.stderr
            no_errors(child.stderr)
    doc = json.loads((tmp_path / WORKSPACE / SESSION / "parameters.json").read_text())
    assert doc["data"] == {f"p{w}.k{i}": i for w in range(2) for i in range(keys)}
    assert doc["version"] == 2 * keys  # one version per set() call, whoever wrote it
