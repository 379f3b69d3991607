"""Storage errors say what happened and what to do, by errno, in the message the user sees."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from dreamlake import Session, StorageError
from dreamlake._sinks.advice import advice
from dreamlake.testing import failing


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EMFILE, ["too many open files in this process", "ulimit -n"]),
        (errno.ENFILE, ["too many open files on this machine", "fs.file-max"]),
        (errno.ENOSPC, ["the disk is full (/data/x)", "free space"]),
        (errno.EDQUOT, ["quota", "/data/x"]),
        (errno.EFBIG, ["largest size allowed", "raise the limit"]),
        (errno.EACCES, ["permission denied (/data/x)", "writable"]),
        (errno.EROFS, ["read-only", "writable one"]),
        (errno.ENOENT, ["missing (/data/x)", "removed while the session was open"]),
        (errno.EIO, ["I/O error", "check the disk"]),
    ],
)
def test_each_errno_its_own_advice(code: int, expected: list[str]) -> None:
    text = advice(OSError(code, "os says", "/data/x"))
    for part in expected:
        assert part in text
    assert "Free disk space or fix permissions" not in text


def test_emfile_names_the_limit_and_dreamlakes_own_bound() -> None:
    import resource

    from dreamlake._disk.fdcache import FILES

    text = advice(OSError(errno.EMFILE, "Too many open files"))
    assert f"limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}" in text
    assert f"at most {FILES.capacity} track files" in text


def test_unknown_errors_point_at_the_cause() -> None:
    assert advice(OSError(errno.EBUSY, "busy")) == "fix the cause above"
    assert advice(RuntimeError("not an OSError")) == "fix the cause above"


@pytest.mark.parametrize(
    ("code", "says"),
    [(errno.EMFILE, "too many open files"), (errno.ENOSPC, "the disk is full")],
)
def test_the_flush_error_carries_the_advice(tmp_path: Path, code: int, says: str) -> None:
    with failing(OSError(code, "os says")) as healed:
        s = Session("run", "ws", local_path=str(tmp_path)).open()
        s.track("loss").append(v=1.0)
        with pytest.raises(StorageError) as raised, pytest.warns(RuntimeWarning, match=says):
            s.flush()
        message = str(raised.value)
        assert "writing track 'loss' failed" in message
        assert says in message
        assert "1 points are kept in memory" in message
        healed.set()
        s.close()
    stored = (tmp_path / "ws" / "run" / "tracks" / "loss" / "data.jsonl").read_text().splitlines()
    assert len(stored) == 1
