"""What ``Session`` and ``AsyncSession`` share, and nothing that waits: the options, the lifecycle
state, the queue, the track buffers, the slow path of ``log()``, and why a call is refused.

``log()`` is a hot path, queued like a track's ``append``: its common case is ``LogCore.log`` (C, in
``_agent/hotpath.py``), everything else is :meth:`SessionCore._log_slow`. Both return what the queue's
admit returns: ``None`` for the synchronous face, something to await for the asynchronous one.
"""

from __future__ import annotations

import enum
import functools
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._agent.agent import Agent
from .._agent.hotpath import LogCore
from .._agent.queue import READY, PointQueue, TrackBuffer
from .._agent.spool import Spool, half_bytes
from .._config import DEFAULT_LOCAL_PATH, AgentConfig, Durability, OnFull
from .._exceptions import (
    ConfigError,
    DreamlakeError,
    InvalidValueError,
    SessionClosedError,
    WriteProtectedError,
)
from .._schema.levels import LEVEL, LEVEL_LOOKUP, MESSAGE, TIMESTAMP, check_level
from .._schema.names import check_name, check_track_name
from .._schema.values import normalize
from .._sinks import Sink, make_sink
from .._sinks.base import TrackSpec
from .logs import LogBuilder


class State(enum.Enum):
    """Where a session is in its life; every call checks it."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class SessionCore(LogCore):
    """The constructor and the I/O-free parts of a session; see :class:`~dreamlake.Session`."""

    _ASYNC = False  # the asynchronous face: append()/log() return something to await

    def __init__(
        self,
        name: str,
        workspace: str,
        *,
        local_path: str | os.PathLike[str] | None = None,
        remote: str | None = None,
        api_key: str | None = None,
        user_name: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        folder: str | None = None,
        metadata: dict[str, Any] | None = None,
        write_protected: bool = False,
        max_queue: int | None = None,
        max_queue_bytes: int | None = None,
        on_full: OnFull | None = None,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        close_timeout: float | None = None,
        durability: Durability | None = None,
        spool: bool | None = None,
    ) -> None:
        self.name = check_name("session", name)
        self.workspace = check_name("workspace", workspace)
        # Remote when ``remote`` (or DREAMLAKE_REMOTE) is set; hybrid when ``local_path`` is given too.
        self.remote = remote or (None if local_path is not None else os.environ.get("DREAMLAKE_REMOTE"))
        self._api_key = api_key or os.environ.get("DREAMLAKE_API_KEY")
        if self.remote is not None and not self._api_key and user_name:
            from .._sinks.sender import legacy_token  # remote mode only: httpx is slow to import

            self._api_key = legacy_token(user_name)  # as 0.2.x did; only a --dev server takes it
        self._hybrid = self.remote is not None and local_path is not None
        if self.remote is not None and not self._api_key:
            raise ConfigError(
                "remote mode needs api_key= or DREAMLAKE_API_KEY; make a token with "
                "'dreamlake token create --workspace WS' on the server"
            )
        self.config = AgentConfig.resolve(
            {
                "max_queue": max_queue,
                "max_queue_bytes": max_queue_bytes,
                "on_full": on_full,
                "batch_size": batch_size,
                "flush_interval": flush_interval,
                "close_timeout": close_timeout,
                "durability": durability,
                "spool": spool,
            }
        )
        root = local_path or os.environ.get("DREAMLAKE_LOCAL_PATH") or DEFAULT_LOCAL_PATH
        self.local_path = Path(root)
        self.description = description
        self.tags = tags
        self.folder = folder
        self.metadata = metadata
        self.write_protected = write_protected
        self._state = State.NEW
        self._state_lock = threading.RLock()
        self._queue = PointQueue(self.config)
        self._queue.refusal = self._refusal
        self._buffers: dict[str, TrackBuffer] = {}
        # The handles by name: ``track(name)`` of a name seen before is a lookup here, in C.
        self._tracks: dict[str, Any] = {}
        logs = self._queue.logs
        super().__init__(
            self._queue.gate,
            logs.items.append,
            functools.partial(self._queue_admit, logs),
            LEVEL_LOOKUP,
            time.time,
            self._log_slow,
            READY if self._ASYNC else None,
            self._tracks,
            self._track_slow,
        )
        self._setup()

    @property
    def _queue_admit(self) -> Callable[[TrackBuffer, dict[str, Any], int], Any]:
        """The queue's slow path for this face's ``append``/``log``."""
        return self._queue.admit_async if self._ASYNC else self._queue.admit

    @property
    def path(self) -> Path:
        """The session's directory in local storage."""
        return self.local_path / self.workspace / self.name

    @property
    def is_open(self) -> bool:
        """Whether the session accepts calls."""
        return self._state is State.OPEN

    def agent_stats(self) -> dict[str, Any]:
        """Counters of the background agent: written, queued, queuedBytes, dropped, writeErrors,
        flushes, lastError, and flushLatencyMs (p50, p90, p99, max). Recorded in session.json at close."""
        agent = self._agent  # kept after close(), so the final counters stay readable
        if agent is None:
            return {"written": 0, "queued": 0, "queuedBytes": 0, "dropped": self._queue.dropped,
                    "writeErrors": 0, "flushes": 0, "recovered": 0, "unspooled": 0, "lastError": None,
                    "flushLatencyMs": dict.fromkeys(("p50", "p90", "p99", "max"))}
        return agent.stats()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.workspace}/{self.name} {self._state.value}>"

    # For the faces.

    def _setup(self) -> None:
        """Set up what the face adds (its handles, its agent's host); the end of ``__init__``."""
        raise NotImplementedError

    @property
    def _agent(self) -> Agent | None:
        raise NotImplementedError

    def _start_spool(self, sink: Sink) -> None:
        """Record every point accepted from now on in a spool, so that kill -9 loses none."""
        # In remote and hybrid mode the spool is also the journal: points stay until acknowledged.
        if sink.in_memory or not self.config.spool:
            return
        identity = {"workspace": self.workspace, "session": self.name, **sink.identity}
        try:
            spool = Spool(self.local_path, identity, half_bytes(self.config.max_queue))
        except OSError as exc:
            warnings.warn(
                f"dreamlake: cannot create a spool under {self.local_path} ({exc}); points still "
                "queued if this process is killed will be lost",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self._queue.attach(spool)

    def _new_sink(self) -> Sink:
        fields = {
            "name": self.name,
            "description": self.description,
            "tags": self.tags,
            "folder": self.folder,
            "metadata": self.metadata,
            "write_protected": self.write_protected,
        }
        return make_sink(
            self.config,
            self.local_path,
            self.workspace,
            fields,
            remote=self.remote,
            api_key=self._api_key,
            hybrid=self._hybrid,
        )

    def _sink_opened(self, sink: Sink) -> None:
        """The agent has opened ``sink``: let writes in, unless the session is write-protected."""
        self.write_protected = sink.write_protected
        if not self.write_protected:
            self._queue.open()

    def _track_slow(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Make (or update) the handle of track ``name``; ``track()`` calls it for what its fast path
        does not take: a new name, descriptive fields, a name that is not a plain str."""
        raise NotImplementedError

    def _track_buffer(
        self,
        name: str,
        description: str | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> tuple[TrackBuffer, bool]:
        """The buffer of track ``name`` (updating its descriptive fields), and whether it is new."""
        check_track_name(name)
        with self._state_lock:
            buffer = self._buffers.get(name)
            created = buffer is None
            if buffer is None:
                buffer = self._buffers[name] = self._queue.buffer(
                    TrackSpec(name, description, tags, metadata)
                )
            else:
                spec = buffer.spec
                spec.description = description if description is not None else spec.description
                spec.tags = tags if tags is not None else spec.tags
                spec.metadata = metadata if metadata is not None else spec.metadata
                buffer.spec_dirty = True
            if self.write_protected:  # a handle to read with; its fields are not stored
                buffer.spec_dirty = False
            return buffer, created

    def _log_slow(
        self,
        message: str | None = None,
        level: str | None = "info",
        metadata: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Any:
        """``session.log()``: queue a log entry (fire-and-forget, like ``append``), or return a builder.

        ``session.log("epoch done", level="info", epoch=3)`` logs at once; without a message,
        ``session.log(metadata={...})`` returns a builder: ``.info("...")``, ``.error("...")``...

        Args:
            message: The text; ``None`` returns a :class:`LogBuilder` instead.
            level: ``debug``, ``info``, ``warn``, ``error`` or ``fatal``, in any case (``None``: info).
            metadata: JSON-able dict stored with the entry; ``extra`` keywords are merged into it.

        Raises:
            InvalidArgumentError: Unknown level (a ``ValueError``).
            InvalidValueError: ``message`` is not a str, or metadata is not JSON-able.
            WriteProtectedError: The session is write-protected.
        """
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidValueError(f"log metadata must be a dict, got {type(metadata).__name__}")
        if extra:
            metadata = {**metadata, **extra} if metadata else extra
        if message is None:
            self._check_writable()
            return LogBuilder(self, metadata)
        if not isinstance(message, str):
            raise InvalidValueError(f"log message must be a str, got {type(message).__name__}")
        level = check_level(level)
        if metadata:
            try:
                metadata = normalize(metadata)
            except InvalidValueError as exc:
                raise InvalidValueError(f"log metadata: {exc}") from None
        # The timestamp is taken now and formatted by the agent (see _jsonl.encode_log_lines).
        entry: dict[Any, Any] = metadata or {}  # normalize() made it a copy
        entry[TIMESTAMP], entry[LEVEL], entry[MESSAGE] = time.time(), level, str(message)
        return self._log_put(entry)

    def _check_open(self) -> None:
        error = self._closed()
        if error is not None:
            raise error

    def _check_writable(self) -> None:
        error = self._refusal()
        if error is not None:
            raise error

    def _refusal(self) -> DreamlakeError | None:
        """Why writes are refused now, or ``None`` (the queue asks this on its slow path)."""
        error = self._closed()
        if error is None and self.write_protected:
            error = WriteProtectedError(
                f"session {self.workspace}/{self.name} is write-protected: its parameters, logs, "
                "tracks and files are read-only"
            )
        return error

    def _closed(self) -> DreamlakeError | None:
        """Why calls are refused now, or ``None``."""
        if self._state is not State.OPEN:
            return SessionClosedError(
                f"session {self.name!r} is {self._state.value}; use 'with {type(self).__name__}(...) "
                "as s:' or open() it first"
            )
        return None
