"""Where the agent's batches go: the :class:`~.base.Sink` interface, and :func:`make_sink` to pick one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._config import AgentConfig
from .base import Sink
from .local import LocalSink

__all__ = ["LocalSink", "Sink", "make_sink"]

#: Set by ``dreamlake.testing``: given the sink a session would get, returns the one it gets.
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
    """The sink a session writes to: its local directory, a server, or both (hybrid); unless
    ``dreamlake.testing`` says otherwise."""
    fsync = config.durability != "buffered"
    if remote is None:
        sink: Sink = LocalSink(local_path, workspace, session, fsync=fsync)
    else:
        # Imported here: httpx takes longer to import than the rest of dreamlake; local mode needs none.
        from .hybrid import HybridSink
        from .remote import RemoteSink

        # Batches waiting for the server hold at most what the spool holds (two halves, see
        # _agent/spool.half_bytes); without a spool this is their only bound.
        unsent = 2 * max(4 << 20, config.max_queue * 64)
        to_server = RemoteSink(
            remote, api_key or "", workspace, session, local_path, fsync, unsent, config.batch_size
        )
        sink = (
            HybridSink(LocalSink(local_path, workspace, session, fsync=fsync), to_server)
            if hybrid
            else to_server
        )
    return sink if override is None else override(sink, workspace, session)
