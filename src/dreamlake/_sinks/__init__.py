"""Where the agent's batches go: the :class:`~.base.Sink` interface, and :func:`make_sink` to pick one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._config import AgentConfig
from .base import Sink
from .local import LocalSink

__all__ = ["LocalSink", "Sink", "make_sink"]

#: Set by ``dreamlake.testing``: builds the sink instead, given the sink :func:`build_sink` would build.
override: Callable[[Sink, str, Mapping[str, Any]], Sink] | None = None


def make_sink(
    config: AgentConfig,
    local_path: Path,
    workspace: str,
    session: Mapping[str, Any],
    *,
    remote: str | None = None,
    api_key: str | None = None,
    hybrid: bool = False,
) -> Sink:
    """The sink a session writes to (see :func:`build_sink`), unless ``dreamlake.testing`` says otherwise."""
    sink = build_sink(config, local_path, workspace, session, remote=remote, api_key=api_key, hybrid=hybrid)
    return sink if override is None else override(sink, workspace, session)


def build_sink(
    config: AgentConfig,
    local_path: Path,
    workspace: str,
    session: Mapping[str, Any],
    *,
    remote: str | None = None,
    api_key: str | None = None,
    hybrid: bool = False,
) -> Sink:
    """The sink a session writes to: its local directory, a server (through a journal under
    ``local_path``), or both (hybrid)."""
    fsync = config.durability != "buffered"
    if remote is None:
        return LocalSink(local_path, workspace, session, fsync=fsync)
    # Imported here: httpx takes longer to import than the rest of dreamlake, and local mode needs none of it.
    from .hybrid import HybridSink
    from .remote import RemoteSink

    sink = RemoteSink(
        remote, api_key or "", workspace, session, local_path, fsync=fsync, journal_bytes=config.max_journal
    )
    if hybrid:
        return HybridSink(LocalSink(local_path, workspace, session, fsync=fsync), sink)
    return sink
