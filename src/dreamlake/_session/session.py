"""``Session``: the synchronous face of the agent, and the ``@dreamlake_session`` decorator.

The agent runs on an event loop in a background thread (``_agent/hosts.py``); this face reaches it
through a blocking portal. What both faces share is in ``core.py``; the handles are in
their own modules: ``track()`` in ``track.py``, ``parameters()`` in ``params.py``, ``file()`` in
``files.py``, and the builder ``log()`` returns in ``logs.py``.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .._agent import lifecycle as _lifecycle
from .._agent.agent import Agent
from .._agent.hosts import AgentThread
from .._exceptions import DreamlakeError, SessionClosedError
from .core import SessionCore, State
from .files import FileHandle
from .params import Parameters
from .track import Track

T = TypeVar("T")


class Session(SessionCore):
    """One experiment run: its tracks, logs, parameters and files, written by a background agent.

    Use it as ``with Session(...) as session:``, or call :meth:`open` and :meth:`close`.
    Local mode writes under ``local_path`` (else ``$DREAMLAKE_LOCAL_PATH``, else ``./.dreamlake``).

    Args:
        name: Session name, unique within the workspace.
        workspace: Workspace name.
        local_path: Root directory of local storage (with ``remote`` too: hybrid mode, both get
            everything); also ``DREAMLAKE_LOCAL_PATH``.
        remote: URL of a dreamlake server (remote mode); also ``DREAMLAKE_REMOTE``.
        api_key: Token for ``remote``; also ``DREAMLAKE_API_KEY``.
        user_name: 0.2.x's way to authenticate, accepted only by a ``--dev`` server.
        description: Free text stored with the session.
        tags: Tags stored with the session.
        folder: Folder path stored with the session.
        metadata: JSON-able dict stored with the session.
        write_protected: Make the session read-only once created: writes raise
            :class:`WriteProtectedError`. A session stored as write-protected stays so.
        max_queue: See :class:`AgentConfig`; also ``DREAMLAKE_MAX_QUEUE``.
        max_queue_bytes: See :class:`AgentConfig`; also ``DREAMLAKE_MAX_QUEUE_BYTES``.
        on_full: See :class:`AgentConfig`; also ``DREAMLAKE_ON_FULL``.
        batch_size: See :class:`AgentConfig`; also ``DREAMLAKE_BATCH_SIZE``.
        flush_interval: See :class:`AgentConfig`; also ``DREAMLAKE_FLUSH_INTERVAL``.
        close_timeout: See :class:`AgentConfig`; also ``DREAMLAKE_CLOSE_TIMEOUT``.
        durability: ``"buffered"`` (default), ``"flush"`` or ``"sync"``; see :class:`AgentConfig`;
            also ``DREAMLAKE_DURABILITY``.
        spool: See :class:`AgentConfig`; also ``DREAMLAKE_SPOOL``.
    """

    def _setup(self) -> None:
        self._runner: AgentThread | None = None
        self._parameters = Parameters(self)

    def open(self) -> Session:
        """Create or update the session's storage and start the agent. Returns ``self``."""
        with self._state_lock:
            if self._state is State.OPEN:
                return self
            if self._state is State.CLOSED:
                raise SessionClosedError(
                    f"session {self.name!r} was closed; create a new Session to log again"
                )
            self._start_agent()
            self._state = State.OPEN
        _lifecycle.register(self)
        return self

    def _start_agent(self) -> None:
        sink = self._new_sink()
        self._start_spool(sink)
        runner = AgentThread(Agent(self._queue, sink))
        self._queue.waker = runner.wake
        runner.start()
        self._runner = runner
        if self.config.durability == "sync":
            self._queue.commit = functools.partial(self._call, Agent.flush)
        self._sink_opened(sink)

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop the agent. Idempotent.

        Args:
            timeout: Seconds to wait for the queue to drain; defaults to ``close_timeout``.

        Raises:
            FlushTimeoutError: The deadline passed; the error says how many points were not written.
            StorageError: The sink failed; the error says why.
        """
        with self._state_lock:
            if self._state is State.OPEN:
                self._queue.shut()
            self._state = State.CLOSED
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
        """Block until every point appended before this call is written (in remote mode: acknowledged
        by the server).

        Raises:
            FlushTimeoutError: ``timeout`` seconds passed first. In remote mode everything is in the
                spool by then: the timeout bounds only the wait for the server.
            StorageError: A write failed; the points are kept and retried.
        """
        if self.remote is None:
            self._call(Agent.flush, timeout=timeout)
        else:
            self._call(Agent.hand_over)
            self._call(Agent.drain, timeout=timeout)

    if TYPE_CHECKING:  # at run time, the C base's: a name seen before costs one dict lookup

        def track(
            self,
            name: str,
            *,
            description: str | None = None,
            tags: list[str] | None = None,
            metadata: dict[str, Any] | None = None,
        ) -> Track:
            """Return the handle of track ``name``; descriptive fields given here are stored with it."""

    def _track_slow(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Track:
        track: Track | None = self._tracks.get(name) if isinstance(name, str) else None
        if track is None or description is not None or tags is not None or metadata is not None:
            self._check_open()
            buffer, created = self._track_buffer(name, description, tags, metadata)  # checks the name
            if created:
                self._tracks[name] = Track(self, self._queue, buffer)
            track = self._tracks[name]
        return track

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

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Plumbing for the handles.

    @property
    def _agent(self) -> Agent | None:
        return None if self._runner is None else self._runner.agent

    def _closed(self) -> DreamlakeError | None:
        """Why calls are refused now, or ``None``; starts the agent of a forked child."""
        error = super()._closed()
        if error is None and self._runner is None:  # a forked child's first call
            with self._state_lock:
                if self._runner is None:
                    self._start_agent()
                    _lifecycle.register(self)
        return error

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

