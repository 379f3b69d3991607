"""Test doubles for the local sink: one that can be stalled, one that can be made to fail.

They wrap the real LocalSink (so what does get written is real) and are installed with
``install(monkeypatch, sink_class)``; the Session then builds them instead of LocalSink.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

import dreamlake._sinks
from dreamlake._sinks.base import TrackSpec
from dreamlake._sinks.local import LocalSink


class GatedSink(LocalSink):
    """Writes only while ``gate`` is set; ``entered`` is set once a write is waiting at the gate."""

    gate = threading.Event()
    entered = threading.Event()

    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        GatedSink.entered.set()
        await anyio.to_thread.run_sync(GatedSink.gate.wait)
        await super().write_track(spec, points)


class FailingSink(LocalSink):
    """Raises ENOSPC from every write while ``failing`` is set."""

    failing = threading.Event()

    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        if FailingSink.failing.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        await super().write_track(spec, points)


def install(monkeypatch: pytest.MonkeyPatch, sink: type[LocalSink]) -> None:
    monkeypatch.setattr(dreamlake._sinks, "LocalSink", sink)


class SlowFirstWriteSink(LocalSink):
    """The first non-empty write blocks until ``release`` is set (a disk that hiccups once)."""

    release = threading.Event()
    slowed = threading.Event()

    async def write_track(self, spec: TrackSpec, points: Sequence[dict[str, Any]]) -> None:
        if points and not SlowFirstWriteSink.slowed.is_set():
            SlowFirstWriteSink.slowed.set()
            await anyio.to_thread.run_sync(SlowFirstWriteSink.release.wait, 60, abandon_on_cancel=True)
        await super().write_track(spec, points)
