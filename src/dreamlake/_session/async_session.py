"""``AsyncSession``: the asynchronous face, for code that runs in an event loop (asyncio or trio).

The agent is a task in the caller's loop, in a task group the session holds from ``open()`` to
``close()``; no thread of its own. Everything that may wait is awaited, and nothing blocks the loop:
the sink does its file work in worker threads (``anyio.to_thread``), and a full queue under
``on_full="block"`` is awaited. ``close()`` is shielded from cancellation and bounded by
``close_timeout``, so cancelling the task that owns the session still writes what it accepted.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.abc import TaskGroup

from .._agent.agent import Agent
from .._exceptions import FlushTimeoutError, SessionClosedError
from .core import SessionCore, State
from .files import AsyncFileHandle
from .params import AsyncParameters
from .track import AsyncTrack

T = TypeVar("T")

# Points per write. The agent takes a chunk off the queue and frees it after the write on the
# caller's loop: 50,000 points (the default batch_size) kept the loop busy ~7 ms, 8,192 ~1 ms.
LOOP_CHUNK = 8192


class AsyncSession(SessionCore):
    """One experiment run, for async code: ``async with AsyncSession(...) as session:``.

    Same arguments, storage and options as :class:`~dreamlake.Session`. The async twin of its API:
    ``await session.track(name).append(**fields)`` (or ``append_nowait``), ``await ...read()``,
    ``await session.log(...)``, ``await session.parameters().set(...)``,
    ``await session.file(...).save()``, ``await session.flush(timeout)``, ``await session.close()``.

    Open and close it in the same task (``async with`` does), and call it from that event loop's
    thread; from other threads, use a ``Session``.
    """

    _ASYNC = True

    def _setup(self) -> None:
        self._parameters = AsyncParameters(self)
        self._agent_host: Agent | None = None
        self._task_group: TaskGroup | None = None

    async def open(self) -> AsyncSession:
        """Create or update the session's storage and start the agent task. Returns ``self``."""
        if self._state is State.OPEN:
            return self
        if self._state is State.CLOSED:
            raise SessionClosedError(
                f"session {self.name!r} was closed; create a new AsyncSession to log again"
            )
        sink = self._new_sink()
        self._start_spool(sink)
        agent = Agent(self._queue, sink, max_chunk=LOOP_CHUNK)
        await agent.open()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        task_group.start_soon(agent.run)
        self._queue.waker = agent.wake  # the hot path runs on this loop: wake the agent directly
        if self.config.durability == "sync":
            self._queue.commit = functools.partial(self._acall, Agent.flush)
        self._agent_host, self._task_group = agent, task_group
        self._sink_opened(sink)
        self._state = State.OPEN
        return self

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (as Session.close)
        """Write everything queued, then stop the agent; shielded from cancellation. Idempotent.

        Args:
            timeout: Seconds to wait for the queue to drain; defaults to ``close_timeout``.

        Raises:
            FlushTimeoutError: The deadline passed; the error says how many points were not written.
            StorageError: The sink failed; the error says why.
        """
        if self._state is State.OPEN:
            self._queue.shut()
        self._state = State.CLOSED
        agent, task_group = self._agent_host, self._task_group
        if agent is None or task_group is None:
            return
        self._task_group = None
        deadline = self.config.close_timeout if timeout is None else timeout
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(deadline) as scope:
                await agent.stop(deadline * 0.9)  # a remote sink gives up first, saying what it kept
        finally:
            task_group.cancel_scope.cancel()  # the agent task has ended, unless the deadline passed
            await task_group.__aexit__(None, None, None)
        if scope.cancelled_caught:
            raise FlushTimeoutError(
                f"dreamlake did not finish within {deadline} s; {self._queue.held} points were not "
                f"written to {self.path}"
            )

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (as Session.flush)
        """Wait until every point appended before this call is written (in remote mode: acknowledged
        by the server).

        Raises:
            FlushTimeoutError: ``timeout`` seconds passed first (the agent goes on writing). In remote
                mode everything is in the spool by then: the timeout bounds only the wait for the server.
            StorageError: A write failed; the points are kept and retried.
        """
        if self.remote is None:
            await self._acall(Agent.flush, timeout=timeout)
        else:
            await self._acall(Agent.hand_over)
            await self._acall(Agent.drain, timeout=timeout)

    if TYPE_CHECKING:  # at run time, the C base's: a name seen before costs one dict lookup

        def track(
            self,
            name: str,
            *,
            description: str | None = None,
            tags: list[str] | None = None,
            metadata: dict[str, Any] | None = None,
        ) -> AsyncTrack:
            """Return the handle of track ``name``; descriptive fields given here are stored with it."""

    def _track_slow(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AsyncTrack:
        track: AsyncTrack | None = self._tracks.get(name) if isinstance(name, str) else None
        if track is None or description is not None or tags is not None or metadata is not None:
            self._check_open()
            buffer, created = self._track_buffer(name, description, tags, metadata)  # checks the name
            if created:
                self._tracks[name] = AsyncTrack(self, self._queue, buffer)
            track = self._tracks[name]
        return track

    async def tracks(self) -> list[dict[str, Any]]:
        """List every track of the session."""
        result: list[dict[str, Any]] = await self._acall(Agent.list_tracks)
        return result

    def parameters(self) -> AsyncParameters:
        """The session's parameters: ``await .set(**params)`` and ``await .get(flatten=True)``."""
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
    ) -> AsyncFileHandle:
        """A handle on the session's files, as :meth:`Session.file`, with awaitable methods."""
        self._check_open()
        return AsyncFileHandle(self, file_path, prefix, tags, description, metadata, file_id, dest_path)

    async def __aenter__(self) -> AsyncSession:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # Plumbing for the handles.

    @property
    def _agent(self) -> Agent | None:
        return self._agent_host

    async def _acall(
        self,
        func: Callable[..., Awaitable[T]],
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (a deadline for the wait, not for the call)
    ) -> T:
        """Run an agent coroutine ``func(agent, *args)`` in the session's task group and await it.

        Not in the caller's task: cancelling the caller (or its ``timeout``) stops the waiting, never
        a write half-way, which would be retried and stored twice. The agent finishes it.
        """
        self._check_open()
        agent, task_group = self._agent_host, self._task_group
        assert agent is not None
        assert task_group is not None
        done = anyio.Event()
        outcome: list[Any] = []

        async def run() -> None:
            try:
                outcome.append((True, await func(agent, *args)))
            except Exception as exc:
                outcome.append((False, exc))
            finally:
                done.set()

        task_group.start_soon(run)
        with anyio.move_on_after(timeout):
            await done.wait()
        if not done.is_set():
            raise FlushTimeoutError(
                f"dreamlake did not finish within {timeout} s; {self._queue.held} points are still "
                "in memory (the agent keeps writing them)"
            )
        if not outcome:  # the task group was cancelled: close() ran past its deadline
            raise SessionClosedError(f"session {self.name!r} was closed before the call finished")
        ok, value = outcome[0]
        if not ok:
            raise value
        result: T = value
        return result
