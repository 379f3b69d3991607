"""``Session``: the synchronous face of the agent, and the ``@dreamlake_session`` decorator.

Its handles live in their own modules: ``track()`` in ``_track.py``, ``parameters()`` in
``_params.py``, ``file()`` in ``_files.py``, and the builder ``log()`` returns in ``_logs.py``.
``log()`` is a hot path, queued like a track's ``append``: its common case is ``LogCore.log`` (C, in
``_hotpath.py``), and everything else is ``Session._log_slow`` here.
"""

from __future__ import annotations

import enum
import functools
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from . import _lifecycle
from ._agent import Agent
from ._config import DEFAULT_LOCAL_PATH, AgentConfig, OnFull
from ._exceptions import (
    ConfigError,
    DreamlakeError,
    InvalidValueError,
    SessionClosedError,
    WriteProtectedError,
)
from ._files import FileHandle
from ._hotpath import LogCore
from ._jsonl import LEVEL, MESSAGE, TIMESTAMP
from ._local import LocalSink
from ._logs import LEVEL_LOOKUP as _LEVELS
from ._logs import LogBuilder, check_level
from ._names import check_name
from ._params import Parameters
from ._queue import PointQueue
from ._runner import AgentThread
from ._sink import TrackSpec
from ._track import Track
from ._values import normalize

T = TypeVar("T")


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Session(LogCore):
    """One experiment run: its tracks, logs, parameters and files, written by a background agent.

    Use it as ``with Session(...) as session:``, or call :meth:`open` and :meth:`close`.
    Local mode writes under ``local_path`` (else ``$DREAMLAKE_LOCAL_PATH``, else ``./.dreamlake``).

    Args:
        name: Session name, unique within the workspace.
        workspace: Workspace name.
        local_path: Root directory of local storage.
        remote: URL of a dreamlake server (not available in this version).
        api_key: Token for ``remote``.
        user_name: User for ``remote``.
        description: Free text stored with the session.
        tags: Tags stored with the session.
        folder: Folder path stored with the session.
        metadata: JSON-able dict stored with the session.
        write_protected: Make the session read-only once created: writes raise
            :class:`WriteProtectedError`. A session stored as write-protected stays so.
        max_queue: See :class:`AgentConfig`; also ``DREAMLAKE_MAX_QUEUE``.
        on_full: See :class:`AgentConfig`; also ``DREAMLAKE_ON_FULL``.
        batch_size: See :class:`AgentConfig`; also ``DREAMLAKE_BATCH_SIZE``.
        flush_interval: See :class:`AgentConfig`; also ``DREAMLAKE_FLUSH_INTERVAL``.
        close_timeout: See :class:`AgentConfig`; also ``DREAMLAKE_CLOSE_TIMEOUT``.
    """

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
        on_full: OnFull | None = None,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        close_timeout: float | None = None,
    ) -> None:
        self.name = check_name("session", name)
        self.workspace = check_name("workspace", workspace)
        if remote is not None:
            raise ConfigError(
                "remote mode is not available in this version of dreamlake; use local_path"
            )
        self.config = AgentConfig.resolve(
            {
                "max_queue": max_queue,
                "on_full": on_full,
                "batch_size": batch_size,
                "flush_interval": flush_interval,
                "close_timeout": close_timeout,
            }
        )
        root = local_path or os.environ.get("DREAMLAKE_LOCAL_PATH") or DEFAULT_LOCAL_PATH
        self.local_path = Path(root)
        self.description = description
        self.tags = tags
        self.folder = folder
        self.metadata = metadata
        self.write_protected = write_protected
        self._state = _State.NEW
        self._state_lock = threading.RLock()
        self._queue = PointQueue(self.config)
        self._queue.refusal = self._refusal
        self._tracks: dict[str, Track] = {}
        self._runner: AgentThread | None = None
        self._parameters = Parameters(self)
        logs = self._queue.logs
        super().__init__(
            self._queue.gate,
            logs.items.append,
            functools.partial(self._queue.admit, logs),
            _LEVELS,
            time.time,
            self._log_slow,
        )

    @property
    def path(self) -> Path:
        """The session's directory in local storage."""
        return self.local_path / self.workspace / self.name

    @property
    def is_open(self) -> bool:
        """Whether the session accepts calls."""
        return self._state is _State.OPEN

    def open(self) -> Session:
        """Create or update the session's storage and start the agent. Returns ``self``."""
        with self._state_lock:
            if self._state is _State.OPEN:
                return self
            if self._state is _State.CLOSED:
                raise SessionClosedError(
                    f"session {self.name!r} was closed; create a new Session to log again"
                )
            self._start_agent()
            self._state = _State.OPEN
        _lifecycle.register(self)
        return self

    def _start_agent(self) -> None:
        session_fields = {
            "name": self.name,
            "description": self.description,
            "tags": self.tags,
            "folder": self.folder,
            "metadata": self.metadata,
            "write_protected": self.write_protected,
        }
        sink = LocalSink(self.local_path, self.workspace, session_fields)
        runner = AgentThread(Agent(self._queue, sink))
        self._queue.waker = runner.wake
        runner.start()
        self._runner = runner
        self.write_protected = sink.write_protected
        if not self.write_protected:
            self._queue.open()

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop the agent. Idempotent.

        Args:
            timeout: Seconds to wait for the queue to drain; defaults to ``close_timeout``.

        Raises:
            FlushTimeoutError: The deadline passed; the error says how many points were not written.
            StorageError: The sink failed; the error says why.
        """
        with self._state_lock:
            if self._state is _State.OPEN:
                self._queue.shut()
            self._state = _State.CLOSED
            runner = self._runner
            if runner is None or runner.stopped:
                return
        # An interrupted wait (timeout, Ctrl-C) leaves the session registered, so the exit hook
        # waits for the same stop again instead of letting the process end with points unwritten.
        try:
            runner.stop(self.config.close_timeout if timeout is None else timeout)
        finally:
            if runner.stopped:
                _lifecycle.unregister(self)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every point appended before this call is written.

        Raises:
            FlushTimeoutError: ``timeout`` seconds passed first.
            StorageError: A write failed; the points are kept and retried.
        """
        self._call(Agent.flush, timeout=timeout)

    def track(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Track:
        """Return the handle of track ``name``; descriptive fields given here are stored with it."""
        track = self._tracks.get(name)
        if track is None or description is not None or tags is not None or metadata is not None:
            self._check_open()
            track = self._new_track(name, description, tags, metadata)
        return track

    def _new_track(
        self,
        name: str,
        description: str | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> Track:
        check_name("track", name)
        with self._state_lock:
            track = self._tracks.get(name)
            if track is None:
                buffer = self._queue.buffer(TrackSpec(name, description, tags, metadata))
                track = self._tracks[name] = Track(self, self._queue, buffer)
            else:
                spec = track._buffer.spec
                spec.description = description if description is not None else spec.description
                spec.tags = tags if tags is not None else spec.tags
                spec.metadata = metadata if metadata is not None else spec.metadata
                track._buffer.spec_dirty = True
            if self.write_protected:  # a handle to read with; its fields are not stored
                track._buffer.spec_dirty = False
            return track

    def _log_slow(
        self,
        message: str | None = None,
        level: str | None = "info",
        metadata: dict[str, Any] | None = None,
        **extra: Any,
    ) -> LogBuilder | None:
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
        self._log_put(entry)
        return None

    def parameters(self) -> Parameters:
        """The session's parameters: ``.set(**params)`` and ``.get(flatten=True)``."""
        self._check_open()
        return self._parameters

    def file(
        self,
        file_path: str | os.PathLike[str] | None = None,
        *,
        prefix: str = "/",
        tags: list[str] | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        file_id: str | None = None,
        dest_path: str | os.PathLike[str] | None = None,
    ) -> FileHandle:
        """A handle on the session's files: ``.save()``, ``.list()``, ``.download()``, ``.delete()``,
        ``.update()``. See :class:`FileHandle` for the arguments."""
        self._check_open()
        return FileHandle(self, file_path, prefix, tags, description, metadata, file_id, dest_path)

    def tracks(self) -> list[dict[str, Any]]:
        """List every track of the session (``trackId, name, description, tags, totalDataPoints``...)."""
        return self._call(Agent.list_tracks)

    def agent_stats(self) -> dict[str, Any]:
        """Counters of the background agent: written, queued, dropped, writeErrors, flushes, lastError."""
        runner = self._runner  # kept after close(), so the final counters stay readable
        if runner is None:
            return {"written": 0, "queued": 0, "dropped": self._queue.dropped, "writeErrors": 0,
                    "flushes": 0, "lastError": None}
        return runner.agent.stats()

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self.workspace}/{self.name} {self._state.value}>"

    # Plumbing shared with Track.

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
        """Why calls are refused now, or ``None``; restarts the agent in a forked child."""
        if self._state is not _State.OPEN:
            return SessionClosedError(
                f"session {self.name!r} is {self._state.value}; use 'with Session(...) as s:' "
                "or call open() first"
            )
        if self._runner is None:  # a forked child's first call: start its own agent
            with self._state_lock:
                if self._runner is None:
                    self._start_agent()
                    _lifecycle.register(self)
        return None

    def _call(
        self, func: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None
    ) -> T:
        """Run an agent coroutine ``func(agent, *args)`` on the agent's loop and wait for it."""
        self._check_open()  # open, with an agent (restarted if this is a forked child)
        runner = self._runner
        assert runner is not None
        return runner.call(func, runner.agent, *args, timeout=timeout)

    def _submit(self, func: Callable[..., Awaitable[T]], *args: Any) -> Future[T]:
        """Start an agent coroutine ``func(agent, *args)``; return a future of its result."""
        self._check_open()
        runner = self._runner
        assert runner is not None
        return runner.submit(func, runner.agent, *args)

    def _after_fork_in_child(self) -> None:
        # The parent's agent thread does not exist here; its queued points are the parent's to write.
        self._queue.after_fork()
        self._runner = None
        self._state_lock = threading.RLock()


F = TypeVar("F", bound=Callable[..., Any])


def dreamlake_session(name: str, workspace: str, **session_kwargs: Any) -> Callable[[F], F]:
    """Decorate a function so it runs inside ``with Session(name, workspace, **kwargs)``.

    The open session is passed to the function as the ``session`` keyword argument.
    """

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with Session(name, workspace, **session_kwargs) as session:
                return func(*args, session=session, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator

