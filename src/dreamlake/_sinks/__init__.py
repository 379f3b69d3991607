"""Where the agent's batches go: the :class:`~.base.Sink` interface, and :func:`make_sink` to pick one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._config import AgentConfig
from .base import Sink
from .local import LocalSink

__all__ = ["LocalSink", "Sink", "make_sink"]


def make_sink(
    config: AgentConfig, local_path: Path, workspace: str, session: Mapping[str, Any]
) -> Sink:
    """The sink a session writes to: today the local session directory."""
    return LocalSink(local_path, workspace, session, fsync=config.durability != "buffered")
