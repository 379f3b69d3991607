"""Leftovers of crashed writers (temporary files, partial copies) are swept once old enough."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dreamlake import Session
from dreamlake._disk import sweep
from dreamlake._disk.sweep import LEFTOVER_AGE, sweep_leftovers, sweep_track

LEFTOVERS = [
    ".session.json.4242.139871.tmp",
    ".parameters.json.4242.139871.tmp",
    "logs/.log_sequence.4242.139871.tmp",
    "files/.files_metadata.json.4242.139871.tmp",
    "tracks/loss/.metadata.json.4242.139871.tmp",
    "tracks/train%2Facc/.metadata.json.77.1.tmp",
    "files/0123abcd/.weights.bin.part",
]


def make_leftovers(directory: Path) -> list[Path]:
    paths = [directory / name for name in LEFTOVERS]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    return paths


def make_session(root: Path) -> Session:
    s = Session("run", "ws", local_path=root).open()
    for step in range(5):
        s.track("loss").append(step=step)
        s.track("train/acc").append(step=step)
    s.parameters().set(lr=0.1)
    source = root / ".user.part"  # a real file whose name looks like a leftover
    source.write_bytes(b"data the user saved")
    s.file(source, prefix="/odd").save()
    s.close()
    return s


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def test_old_leftovers_go_and_fresh_ones_stay(tmp_path: Path) -> None:
    s = make_session(tmp_path)
    real = snapshot(s.path)
    leftovers = make_leftovers(s.path)
    tracks = [s.path / "tracks" / "loss", s.path / "tracks" / "train%2Facc"]
    assert sweep_leftovers(s.path) == []  # fresh: a live writer may own them
    assert [sweep_track(t) for t in tracks] == [[], []]
    assert all(p.exists() for p in leftovers)
    gone = sweep_leftovers(s.path, age=-LEFTOVER_AGE)  # as seen an hour from now
    gone += [p for t in tracks for p in sweep_track(t, age=-LEFTOVER_AGE)]
    assert sorted(gone) == sorted(leftovers)
    assert not any(p.exists() for p in leftovers)
    assert snapshot(s.path) == real  # data, metadata and the saved '.user.part' untouched


def test_a_copy_that_kept_its_sources_old_mtime_is_judged_by_its_change_time(tmp_path: Path) -> None:
    part = tmp_path / "files" / "0123abcd" / ".big.iso.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x")
    old = time.time() - 10 * LEFTOVER_AGE
    os.utime(part, (old, old))  # what shutil.copystat does just before the rename
    assert sweep_leftovers(tmp_path) == []
    assert part.exists()


def test_opening_a_session_sweeps_its_old_leftovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = make_session(tmp_path)
    real = snapshot(s.path)
    leftovers = make_leftovers(s.path)
    Session("run", "ws", local_path=tmp_path).open().close()
    assert all(p.exists() for p in leftovers)  # fresh
    monkeypatch.setattr(sweep, "_clock", lambda: time.time() + 2 * LEFTOVER_AGE)
    with Session("run", "ws", local_path=tmp_path) as again:
        assert again.track("loss").read()["total"] == 5  # a track's own leftovers go at first use
        assert again.track("train/acc").read()["total"] == 5
    assert not any(p.exists() for p in leftovers)
    after = snapshot(s.path)
    assert after.keys() == real.keys()
    assert after["tracks/loss/data.jsonl"] == real["tracks/loss/data.jsonl"]
    assert [k for k in after if k.endswith(".user.part")]  # the saved file is data, not a leftover
