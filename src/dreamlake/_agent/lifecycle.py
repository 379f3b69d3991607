"""Process-wide exit paths: atexit, SIGTERM/SIGINT and fork, for every open session.

- atexit closes whatever the program left open (the agent thread is a daemon, so it is still alive).
- SIGTERM/SIGINT flush every open session, then hand the signal to the handler that was there
  before: a Python handler is called (SIGINT's default raises ``KeyboardInterrupt``, whose unwinding
  closes ``with`` blocks); the default action closes the sessions and re-raises the signal with the
  default disposition, so the process still ends as the signal would; an ignored signal stays ignored.
- In a forked child every session forgets the parent's queued points and starts a fresh agent on its
  first use; a ``multiprocessing`` child (which leaves through ``os._exit``) is closed by a finalizer.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Protocol

from .._config import AgentConfig
from .queue import PointQueue


class _Closable(Protocol):
    config: AgentConfig
    _queue: PointQueue

    @property
    def is_open(self) -> bool: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...

    def _after_fork_in_child(self) -> None: ...


_lock = threading.RLock()
_open: dict[int, _Closable] = {}  # id -> session, in opening order
_installed_pid: int | None = None
_previous: dict[int, Any] = {}
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def register(session: _Closable) -> None:
    """Track an open session and make sure the exit hooks of this process are installed."""
    with _lock:
        _open[id(session)] = session
        _install()


def unregister(session: _Closable) -> None:
    """Forget a closed session."""
    with _lock:
        _open.pop(id(session), None)


def _sessions() -> list[_Closable]:
    with _lock:
        return list(_open.values())


def _install() -> None:
    global _installed_pid
    if _installed_pid != os.getpid():
        first = _installed_pid is None
        _installed_pid = os.getpid()
        if first:
            atexit.register(close_all)
            os.register_at_fork(after_in_child=_after_fork_in_child)
        else:
            # A forked child using a session: multiprocessing children end with os._exit(), which
            # skips atexit but runs multiprocessing's finalizers. (Registered now, not at fork time,
            # because a multiprocessing child clears its finalizers after the fork hooks ran.)
            mp_util = sys.modules.get("multiprocessing.util")
            if mp_util is not None:
                mp_util.Finalize(None, close_all, exitpriority=100)
    # Only the main thread may set handlers: sessions opened in other threads are covered by the
    # first one opened in the main thread (and by atexit until then).
    if threading.current_thread() is threading.main_thread():
        for signum in _SIGNALS:
            current = signal.getsignal(signum)
            if current is not _on_signal:
                _previous[signum] = current
                signal.signal(signum, _on_signal)


def close_all() -> None:
    """Close every open session (atexit, and the end of a multiprocessing child)."""
    for session in reversed(_sessions()):
        try:
            session.close()
        except Exception as exc:  # at exit, report and go on with the others
            print(f"dreamlake: closing a session at exit failed: {exc}", file=sys.stderr)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    with contextlib.ExitStack() as stack:
        # This thread may have been interrupted while holding a queue's lock the agent needs.
        for session in _sessions():
            stack.enter_context(session._queue.released_for_signal_handler())
        _flush_then_chain(signum, frame)


def _flush_then_chain(signum: int, frame: FrameType | None) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    if previous in (signal.SIG_DFL, None):
        close_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    for session in _sessions():
        if not session.is_open:
            continue  # interrupted in close(): the exit hook finishes that close
        try:
            session.flush(session.config.close_timeout)
        except Exception as exc:  # the signal must still reach the program
            print(f"dreamlake: flushing on signal {signum} failed: {exc}", file=sys.stderr)
    if callable(previous):
        previous(signum, frame)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # the parent's may have been held by another thread
    for session in _sessions():
        session._after_fork_in_child()
