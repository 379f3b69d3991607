"""Runs an :class:`Agent` on its own event loop in a daemon thread, for the synchronous ``Session``.

The thread is a daemon on purpose: a non-daemon thread would be joined before ``atexit`` runs, so a
program that never calls ``close()`` would hang at exit instead of being flushed by our atexit hook.
The caller's threads reach the loop only through an anyio :class:`BlockingPortal`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from .._exceptions import FlushTimeoutError
from .agent import Agent

T = TypeVar("T")


class AgentThread:
    """An event-loop thread hosting one agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._portal: BlockingPortal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop_future: Future[None] | None = None
        self._thread = threading.Thread(target=self._main, name="dreamlake-agent", daemon=True)

    def start(self) -> None:
        """Start the loop and the agent; raise what the agent's start-up (sink.open) raised."""
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error

    def wake(self) -> None:
        """Wake the agent from any thread without waiting for it.

        The portal's calls wait until the loop has run them, which under a busy GIL can stall the
        caller for a switch interval (5 ms); the loop's own thread-safe callback queue does not wait.
        """
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self.agent.wake)
            except RuntimeError:
                pass  # the loop has closed: close() already wrote everything it could

    def call(
        self, func: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None
    ) -> T:
        """Run ``func(*args)`` on the agent's loop and wait for its result."""
        return self._result(self.submit(func, *args), timeout)

    def submit(self, func: Callable[..., Awaitable[T]], *args: Any) -> Future[T]:
        """Start ``func(*args)`` on the agent's loop; return a future of its result."""
        assert self._portal is not None
        return self._portal.start_task_soon(func, *args)

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` has finished (written everything, or failed for good)."""
        return self._stop_future is not None and self._stop_future.done()

    def stop(self, timeout: float | None) -> None:
        """Stop the agent (writing everything), then the loop and its thread.

        If the wait is cut short (``timeout``, ``KeyboardInterrupt``), the agent goes on writing and
        a later call waits for the same stop again: the exit hooks rely on that.
        """
        assert self._portal is not None
        if self._stop_future is None:
            # The sink gets most of the time, so a remote one gives up (and says what it kept) before
            # this wait does.
            budget = None if timeout is None else timeout * 0.9
            self._stop_future = self._portal.start_task_soon(self.agent.stop, budget)
        try:
            self._result(self._stop_future, timeout)
        finally:
            if self._stop_future.done() and self._thread.is_alive():
                try:
                    # Cancel what is left, e.g. a flush() that timed out waiting for a dead server.
                    self._portal.call(self._portal.stop, True)
                except RuntimeError:
                    pass  # the loop is already gone
                self._thread.join()

    def _result(self, future: Future[T], timeout: float | None) -> T:
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise FlushTimeoutError(
                f"dreamlake did not finish within {timeout} s; "
                f"{self.agent.queue.held} points are still in memory (the agent keeps writing them "
                "while the process lives)"
            ) from None

    def _main(self) -> None:
        try:
            # asyncio, so that wake() can use the loop's non-blocking call_soon_threadsafe.
            anyio.run(self._serve, backend="asyncio")
        except BaseException as exc:  # handed to the thread that called start()
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()

    async def _serve(self) -> None:
        await self.agent.open()
        async with BlockingPortal() as portal, anyio.create_task_group() as tg:
            tg.start_soon(self.agent.run)
            self._loop = asyncio.get_running_loop()
            self._portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()
            tg.cancel_scope.cancel()
