"""A process-wide, bounded set of open data files, so a session's open files do not grow with its tracks.

Every :class:`~dreamlake._disk.jsonl.NumberedLog` (a track's ``data.jsonl``, a session's ``logs.jsonl``)
gets its descriptor here. At most :func:`max_open_files` stay open across all sessions of the process;
opening one more closes the least recently used one that nobody is using. A descriptor is *pinned*
while in use (between :meth:`FdCache.pin` and :meth:`FdCache.unpin`), and a pinned one is never closed,
so the bound may be passed briefly by as many files as threads are writing at once.

A log's lock is a ``flock`` on its own descriptor here (``jsonl.NumberedLog.lock``), pinned while held; a
``flock`` belongs to its open file description, so closing some other descriptor never releases it.
"""

from __future__ import annotations

import os
import resource
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable

#: Default bound on data files held open by the whole process (``DREAMLAKE_MAX_OPEN_FILES``).
DEFAULT_MAX_OPEN_FILES = 128


def max_open_files() -> int:
    """The bound: ``DREAMLAKE_MAX_OPEN_FILES`` or the default, and never more than a quarter of
    the process's soft ``RLIMIT_NOFILE`` (the rest is the user's: sockets, datasets, spools)."""
    raw = os.environ.get("DREAMLAKE_MAX_OPEN_FILES")
    try:
        wanted = int(raw) if raw else DEFAULT_MAX_OPEN_FILES
    except ValueError:
        wanted = 0
    if wanted < 1:
        # Read at import, where raising would make dreamlake unusable: say so and go on.
        warnings.warn(
            f"DREAMLAKE_MAX_OPEN_FILES must be a positive integer, not {raw!r}; "
            f"using {DEFAULT_MAX_OPEN_FILES}",
            RuntimeWarning,
            stacklevel=1,
        )
        wanted = DEFAULT_MAX_OPEN_FILES
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        wanted = min(wanted, max(4, soft // 4))
    return wanted


class FdCache:
    """Open descriptors keyed by their owner, least recently used first.

    Args:
        capacity: Most unpinned descriptors kept open.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        # owner -> [fd, pins]; a list, not a tuple, so a pin is one increment in place
        self._entries: OrderedDict[object, list[int]] = OrderedDict()

    def pin(self, owner: object, opener: Callable[[], int]) -> int:
        """Return ``owner``'s descriptor, opening it with ``opener`` if it is not open; keep it open
        until :meth:`unpin`."""
        with self._lock:
            entry = self._entries.get(owner)
            if entry is not None:
                self._entries.move_to_end(owner)
                entry[1] += 1
                return entry[0]
        fd = opener()  # outside the lock: opening may fsync a directory
        with self._lock:
            entry = self._entries.get(owner)
            if entry is not None:  # another thread opened it meanwhile: use theirs
                os.close(fd)
                self._entries.move_to_end(owner)
                entry[1] += 1
                return entry[0]
            self._entries[owner] = [fd, 1]
            self._evict()
            return fd

    def pin_if_open(self, owner: object) -> int:
        """Pin ``owner``'s descriptor if it is open and return it; -1 if it is not (nothing pinned)."""
        with self._lock:
            entry = self._entries.get(owner)
            if entry is None:
                return -1
            self._entries.move_to_end(owner)
            entry[1] += 1
            return entry[0]

    def unpin(self, owner: object) -> None:
        """End one use of ``owner``'s descriptor (from :meth:`pin`)."""
        with self._lock:
            entry = self._entries.get(owner)
            if entry is not None:
                entry[1] -= 1

    def discard(self, owner: object) -> None:
        """Close ``owner``'s descriptor now (its owner is closing)."""
        with self._lock:
            entry = self._entries.pop(owner, None)
        if entry is not None:
            os.close(entry[0])

    def open_count(self) -> int:
        """Descriptors open now (for tests and stats)."""
        with self._lock:
            return len(self._entries)

    def _evict(self) -> None:
        excess = len(self._entries) - self.capacity
        if excess <= 0:
            return
        victims = []
        for owner, (_, pins) in self._entries.items():
            if pins == 0:
                victims.append(owner)
                if len(victims) == excess:
                    break
        for owner in victims:
            os.close(self._entries.pop(owner)[0])

    def _after_fork(self) -> None:
        # The lock may have been held by a thread that does not exist in the child. The inherited
        # descriptors share their open file descriptions, and so their flocks, with the parent's:
        # the child opens its own, so that parent and child exclude each other on a track.
        self._lock = threading.Lock()
        for fd, _ in self._entries.values():
            os.close(fd)
        self._entries.clear()


#: The process's cache, shared by every session.
FILES = FdCache(max_open_files())
os.register_at_fork(after_in_child=FILES._after_fork)
