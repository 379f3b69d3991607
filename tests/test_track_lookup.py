"""``session.track(name)``: a name seen before is a lookup (C, or the Python twin); the rest is checked."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from dreamlake import AsyncSession, InvalidNameError, Session, SessionClosedError
from dreamlake._agent import hotpath

CORES = [hotpath.PyLogCore, *([hotpath.LogCore] if hotpath.COMPILED else [])]


@pytest.mark.parametrize("core_type", CORES, ids=lambda t: t.__module__)
def test_the_lookup_answers_known_plain_names_and_passes_the_rest_on(core_type: Any) -> None:
    tracks: dict[str, Any] = {"known": "handle"}
    slow_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def slow(*args: Any, **kwargs: Any) -> Any:
        slow_calls.append((args, kwargs))
        return "made"

    core = core_type(hotpath.Gate(), [].append, None, {}, time.time, None, None, tracks, slow)

    class Name(str):
        pass

    assert core.track("known") == "handle"
    assert slow_calls == []
    assert core.track("new") == "made"
    assert core.track("known", description="d") == "made"
    assert core.track(Name("known")) == "made"  # not a plain str: the slow path decides
    assert core.track(["unhashable"]) == "made"
    assert slow_calls == [
        (("new",), {}), (("known",), {"description": "d"}), (("known",), {}), ((["unhashable"],), {})
    ]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_session_hands_out_one_handle_per_name_and_checks_new_names(tmp_path: Path) -> None:
    with Session("s", "w", local_path=tmp_path) as s:
        loss = s.track("train/loss")
        assert s.track("train/loss") is loss
        for step in range(3):
            s.track("train/loss").append(step=step)
        with pytest.raises(InvalidNameError):
            s.track("..")
        with pytest.raises(InvalidNameError, match="must be a str"):
            s.track(["x"])  # type: ignore[arg-type]
        assert s.track("train/loss", description="the loss") is loss  # fields still stored
    meta = json.loads((s.path / "tracks" / "train%2Floss" / "metadata.json").read_text())
    assert (meta["description"], meta["totalDataPoints"]) == ("the loss", 3)
    with pytest.raises(SessionClosedError):
        s.track("train/loss").append(step=3)  # the cached handle still refuses on a closed session
    with pytest.raises(SessionClosedError):
        s.track("another")


@pytest.mark.anyio
async def test_an_async_session_hands_out_one_handle_per_name(tmp_path: Path) -> None:
    async with AsyncSession("s", "w", local_path=tmp_path) as s:
        assert s.track("loss") is s.track("loss")
        await s.track("loss").append(step=0)
        with pytest.raises(InvalidNameError):
            s.track("")
        assert (await s.track("loss").read())["total"] == 1
