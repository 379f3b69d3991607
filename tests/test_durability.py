"""Durability levels: what reaches the disk when, and what is fsynced."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dreamlake import AsyncSession, ConfigError, Session

from ._subproc import SESSION, WORKSPACE


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every os.fsync call of the process (the agent's threads included)."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ConfigError, match="durability"):
        Session(SESSION, WORKSPACE, durability="paranoid")  # type: ignore[arg-type]


def test_level_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DREAMLAKE_DURABILITY", "flush")
    assert Session(SESSION, WORKSPACE, local_path=tmp_path).config.durability == "flush"
    assert Session(SESSION, WORKSPACE, local_path=tmp_path, durability="sync").config.durability == "sync"


def test_buffered_never_fsyncs(tmp_path: Path, fsyncs: list[int]) -> None:
    with Session(SESSION, WORKSPACE, local_path=tmp_path) as s:
        for i in range(1000):
            s.track("loss").append(step=i)
        s.log("x")
        s.parameters().set(a=1)
        s.flush()
    assert fsyncs == []


def test_flush_level_fsyncs_every_write_and_directory(tmp_path: Path, fsyncs: list[int]) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"w" * 1000)
    with Session(SESSION, WORKSPACE, local_path=tmp_path / "store", durability="flush") as s:
        opened = len(fsyncs)  # session.json and the directories of a new session
        for i in range(1000):
            s.track("loss").append(step=i)
        s.flush()
        after_points = len(fsyncs)
        s.log("x")
        s.parameters().set(a=1)
        s.flush()
        after_logs = len(fsyncs)
        s.file(source).save()
        after_file = len(fsyncs)
    assert opened >= 4  # session.json, its directory, the session and workspace directories
    # data.jsonl, its new directory entry, metadata.json and its directory
    assert after_points - opened >= 4
    assert after_logs - after_points >= 4  # logs.jsonl, .log_sequence, parameters.json (+ dirs)
    assert after_file - after_logs >= 4  # the copy, its directory, files/, the index (+ dir)


def test_sync_level_returns_once_on_disk(tmp_path: Path, fsyncs: list[int]) -> None:
    with Session(SESSION, WORKSPACE, local_path=tmp_path, durability="sync", flush_interval=3600) as s:
        track = s.track("loss")
        data = s.path / "tracks" / "loss" / "data.jsonl"
        for i in range(20):
            before = len(fsyncs)
            track.append(step=i)
            assert lines(data) == i + 1  # no flush() needed: append returned after the write
            assert len(fsyncs) > before
        s.log("now")
        assert lines(s.path / "logs" / "logs.jsonl") == 1
        s.parameters().set(lr=0.1)
        assert json.loads((s.path / "parameters.json").read_text())["data"] == {"lr": 0.1}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_sync_level_on_the_async_face(tmp_path: Path, anyio_backend: Any) -> None:
    async with AsyncSession(SESSION, WORKSPACE, local_path=tmp_path, durability="sync") as s:
        data = s.path / "tracks" / "loss" / "data.jsonl"
        for i in range(10):
            await s.track("loss").append(step=i)
            assert lines(data) == i + 1
        await s.parameters().set(lr=0.1)
        assert (await s.parameters().get()) == {"lr": 0.1}


def test_agent_stats_report_flush_latency_and_land_in_session_json(tmp_path: Path) -> None:
    with Session(SESSION, WORKSPACE, local_path=tmp_path) as s:
        assert s.agent_stats()["flushLatencyMs"]["p99"] is None  # nothing written yet
        for i in range(5000):
            s.track("loss").append(step=i)
        s.flush()
        latency = s.agent_stats()["flushLatencyMs"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    stored = json.loads((s.path / "session.json").read_text())["agent"]
    assert stored["written"] == 5000
    assert stored["queued"] == 0
    assert stored["dropped"] == 0
    assert stored["flushLatencyMs"]["max"] > 0
