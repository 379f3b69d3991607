"""A lock that excludes both other threads of this process and other processes."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class FileLock:
    """Exclusive ``flock`` on ``path`` plus a thread lock.

    The lock file is opened when the lock is taken and closed when it is released, so a session with
    thousands of tracks holds no lock descriptor between writes (``fdcache.py`` bounds the data
    files). ``flock``, unlike ``lockf``/``fcntl`` locks, belongs to the open file description: closing
    some other descriptor of the same file in this process never releases it, and two ``FileLock``
    objects on one path exclude each other even within one process. Threads sharing this object would
    not exclude each other through one description alone; the thread lock covers them.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread_lock = threading.Lock()
        self._fd = -1

    def __enter__(self) -> FileLock:
        self._thread_lock.acquire()
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(self._fd)
                self._fd = -1
                raise
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fd, self._fd = self._fd, -1
        try:
            os.close(fd)  # releases the flock: this description is the only one holding it
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        """Nothing stays open between acquisitions; kept so owners can close uniformly."""
