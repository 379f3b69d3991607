"""Many tracks' appends in one call: how a flush of a wide session reaches the files.

A *run* is one track's part of a flush, ``(fd, path, size, blob, meta, make)``: the lines ``blob``,
numbered by the caller from the count it last saw at file size ``size``, go to ``path`` (through ``fd``
if it is open, else opened and closed here; ``make``: the file's new directory, made first, and the
run is not written if it was there already). Under the file's ``flock`` the size is checked first: another
process that wrote the track since made the numbering wrong, and the run is not written. ``meta``,
if given, is ``(path, temporary path, content, stamp)``: ``metadata.json`` is replaced, under the
same lock, if it still has ``stamp`` (inode, mtime in ns, size; None: absent), so nobody's changes
to it are lost; otherwise it is left for the caller to merge.

:func:`write_runs` stops at the first run it cannot write and returns, for each run written, the
file's new size and the stamp of the ``metadata.json`` it wrote (None: not replaced). The caller
writes that run the slow way (:meth:`SessionDir.write_track`, which repairs, recounts and raises).
The C version (``_speedups.write_runs``) holds the GIL for none of it, so the training loop runs on
while a flush opens and locks thousands of files.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable

from .atomic import write_bytes_atomic

Stamp = tuple[int, int, int]  # st_ino, st_mtime_ns, st_size
Meta = tuple[str, str, bytes, "Stamp | None"]
Run = tuple[int, str, int, bytes, "Meta | None", "str | None"]
Written = tuple[int, "Stamp | None"]  # the new size, the stamp of the metadata.json written


def py_write_runs(runs: list[Run]) -> list[Written]:
    """Python twin of ``_speedups.write_runs``."""
    done: list[Written] = []
    for fd, path, size, blob, meta, make in runs:
        try:
            if make is not None:
                os.mkdir(make)
            written = _write_run(fd, path, size, blob, meta)
        except OSError:
            written = None
        if written is None:
            break
        done.append(written)
    return done


def _write_run(fd: int, path: str, size: int, blob: bytes, meta: Meta | None) -> Written | None:
    own = fd < 0
    if own:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_size != size:
                return None
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                os.ftruncate(fd, size)
                return None
            return size + len(blob), _replace_meta(*meta) if meta is not None else None
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        if own:
            os.close(fd)


def _replace_meta(path: str, tmp: str, blob: bytes, stamp: Stamp | None) -> Stamp | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if stamp is not None:
            return None
    except OSError:
        return None
    else:
        if stamp != (st.st_ino, st.st_mtime_ns, st.st_size):
            return None
    try:
        st = write_bytes_atomic(path, blob, tmp=tmp)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class InThread:
    """``write(runs)`` (a :func:`write_runs`) in a thread of its own, so that the caller prepares the
    next runs meanwhile."""

    def __init__(self, write: Callable[[list[Run]], list[Written]], runs: list[Run]) -> None:
        self._write = write
        self._runs = runs
        self._result: list[Written] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="dreamlake-runs", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self._result = self._write(self._runs)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> list[Written]:
        """What ``write`` returned (or raised), once it has."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


try:
    from .._speedups import write_runs as write_runs
except ImportError:  # built without a C compiler
    write_runs = py_write_runs
