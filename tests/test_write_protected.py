"""``write_protected=True``: parameters, logs, tracks and files become read-only; reads still work."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dreamlake import Session, WriteProtectedError


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (lock files aside) and its bytes."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


@pytest.fixture
def earlier_run(tmp_path: Path) -> Path:
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(1000))
    with Session("p", "w", local_path=tmp_path / "store", description="first") as s:
        s.track("loss").append(value=1.0)
        s.parameters().set(lr=0.1)
        s.log("hello")
        s.file(source).save()
    return tmp_path


WRITES = {
    "append": lambda s, src: s.track("loss").append(value=2.0),
    "append to a new track": lambda s, src: s.track("new").append(value=2.0),
    "append_batch": lambda s, src: s.track("loss").append_batch([{"value": 2.0}]),
    "log": lambda s, src: s.log("x"),
    "fluent log": lambda s, src: s.log(metadata={"a": 1}),
    "parameters": lambda s, src: s.parameters().set(lr=0.2),
    "file save": lambda s, src: s.file(src).save(),
    "file delete": lambda s, src: s.file(file_id=s.file().list()[0]["id"]).delete(),
    "file update": lambda s, src: s.file(file_id=s.file().list()[0]["id"]).update(tags=["x"]),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_every_write_is_refused_and_nothing_changes(earlier_run: Path, write: Any) -> None:
    store = earlier_run / "store"
    session_json = store / "w" / "p" / "session.json"
    doc = json.loads(session_json.read_text())
    doc["write_protected"] = True  # protected after the fact, as 0.2.x would store it
    session_json.write_text(json.dumps(doc))
    before = snapshot(store)
    # The flag stored with the session wins over the default write_protected=False.
    with Session("p", "w", local_path=store, description="changed?") as s:
        assert s.write_protected is True
        with pytest.raises(WriteProtectedError, match="write-protected"):
            write(s, earlier_run / "model.bin")
        # Reads work.
        assert s.track("loss").read()["data"][0]["data"] == {"value": 1.0}
        assert s.parameters().get() == {"lr": 0.1}
        assert len(s.file().list()) == 1
    assert snapshot(store) == before


def test_a_new_protected_session_is_created_then_read_only(tmp_path: Path) -> None:
    with Session("p", "w", local_path=tmp_path, write_protected=True, tags=["t"]) as s:
        with pytest.raises(WriteProtectedError):
            s.track("loss").append(value=1.0)
        with pytest.raises(RuntimeError):  # 0.2.x raised RuntimeError; still caught by that
            s.parameters().set(a=1)
    stored = json.loads((s.path / "session.json").read_text())
    assert stored["write_protected"] is True
    assert stored["tags"] == ["t"]
    assert list((s.path / "tracks").iterdir()) == []
    assert not (s.path / "parameters.json").exists()


def test_protecting_an_existing_session(earlier_run: Path) -> None:
    store = earlier_run / "store"
    with Session("p", "w", local_path=store, write_protected=True) as s:
        with pytest.raises(WriteProtectedError):
            s.log("x")
    with Session("p", "w", local_path=store) as s:  # stays protected
        assert s.write_protected is True
        with pytest.raises(WriteProtectedError):
            s.log("x")
