"""The process-wide cache of open data files: bounded, least recently used closed first, never a
descriptor in use."""

from __future__ import annotations

import os
from pathlib import Path

from dreamlake._disk.fdcache import FdCache
from dreamlake._disk.jsonl import TrackLog


def _opener(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_least_recently_used_unpinned_is_closed(tmp_path: Path) -> None:
    cache = FdCache(2)
    fds = {}
    for name in "abc":
        fds[name] = cache.pin(name, lambda name=name: _opener(tmp_path / name))
        cache.unpin(name)
        if name == "b":
            cache.pin("a", lambda: _opener(tmp_path / "a"))  # a is used again: b is now the oldest
            cache.unpin("a")
    assert cache.open_count() == 2
    assert not _is_open(fds["b"])
    assert _is_open(fds["a"])
    assert _is_open(fds["c"])
    for name in "ac":
        cache.discard(name)
    assert cache.open_count() == 0


def test_pinned_descriptor_is_never_closed(tmp_path: Path) -> None:
    cache = FdCache(1)
    held = cache.pin("held", lambda: _opener(tmp_path / "held"))
    for k in range(5):
        cache.pin(k, lambda k=k: _opener(tmp_path / str(k)))
        cache.unpin(k)
        assert _is_open(held)
    assert cache.open_count() == 1 + 1  # the pinned one passes the bound, by itself only
    cache.unpin("held")
    cache.pin("new", lambda: _opener(tmp_path / "new"))
    assert not _is_open(held)
    cache.unpin("new")
    cache.discard("new")


def test_logs_beyond_the_bound_stay_correct(tmp_path: Path) -> None:
    logs = [TrackLog(tmp_path / str(k)) for k in range(300)]  # more than the default 128 open
    try:
        for log in logs:
            log.directory.mkdir()
        for round_ in range(3):
            for k, log in enumerate(logs):
                with log.lock:
                    assert log.append([{"k": k, "round": round_}]) == (round_, round_ + 1)
        for k, log in enumerate(logs):
            entries, count = log.read(0, 10)
            assert count == 3
            assert [e["data"] for e in entries] == [{"k": k, "round": r} for r in range(3)]
    finally:
        for log in logs:
            log.close()
