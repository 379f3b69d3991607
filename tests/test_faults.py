"""Faults of the storage, each in a child process, with the invariants of DESIGN section 3 checked
afterwards (``_invariants.py``): a real full file size limit (RLIMIT_FSIZE, which needs no root),
injected ENOSPC/EIO/EDQUOT/EROFS at the write call (also half-way through a write), a failing
metadata replace, and storage that stalls."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from ._invariants import check_session
from ._subproc import SESSION, WORKSPACE, Child, block, make_script, run_script

pytestmark = pytest.mark.timeout(120)


def session_dir(root: Path) -> Path:
    return root / WORKSPACE / SESSION


def intact(root: Path) -> dict[str, list[int]]:
    """Check the invariants; return the steps stored per track."""
    report = check_session(session_dir(root))
    assert report.violations == []
    return {name: [point["step"] for point in points] for name, points in report.tracks.items()}


FILE_SIZE_LIMIT = """
import resource
from dreamlake import StorageError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
with Session(NAME, WS, local_path=ROOT, batch_size=1000, max_queue=5000, flush_interval=0.05) as s:
    track = s.track("loss")
    for i in range(2000):
        track.append(step=i)
    s.flush()
    data = os.path.join(ROOT, WS, NAME, "tracks", "loss", "data.jsonl")
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(data) + 3000, hard))  # full soon
    for i in range(2000, 4000):
        track.append(step=i)
    try:
        s.flush()
        print("flush ok")
    except StorageError as exc:
        print("flush failed:", exc.__cause__.errno, str(exc).replace("\\n", " "))
    accepted = 4000
    try:  # a caller blocked on the full queue gets the error instead of waiting forever
        for i in range(4000, 20000):
            track.append(step=i)
            accepted = i + 1
    except StorageError:
        print("blocked append refused after", accepted)
    stats = s.agent_stats()
    print("stats", json.dumps({k: stats[k] for k in ("written", "queued", "writeErrors")}))
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space returns
    s.flush()
    print("recovered", accepted)
"""


def test_a_full_disk_for_real_keeps_points_and_resumes(tmp_path: Path) -> None:
    code, lines, stderr = run_script(make_script(block(FILE_SIZE_LIMIT), ROOT=str(tmp_path),
                                                 NAME=SESSION, WS=WORKSPACE))
    assert code == 0, stderr
    failed = next(line for line in lines if line.startswith("flush failed:"))
    assert failed.split()[2] == str(errno.EFBIG)
    assert "a file reached the largest size allowed" in failed  # says what happened
    assert "raise the limit" in failed  # and what to do
    refused = next(line for line in lines if line.startswith("blocked append refused after"))
    accepted = int(refused.split()[-1])
    stats = json.loads(next(line for line in lines if line.startswith("stats"))[6:])
    assert stats["writeErrors"] >= 1
    assert stats["queued"] == accepted - stats["written"]  # kept in memory, bounded by max_queue
    assert stats["queued"] <= 5000
    assert stderr.count("RuntimeWarning: writing track 'loss' failed") == 1  # reported once
    assert intact(tmp_path)["loss"] == list(range(accepted))  # every accepted point, once, in order


INJECTED = """
import errno as errno_module
from dreamlake import StorageError
real_write = os.write
failing = {"on": False}

def write(fd, data):
    if failing["on"]:
        if PARTIAL and len(data) > 1:
            real_write(fd, bytes(data)[: len(data) // 2])  # half of it reaches the file first
        raise OSError(ERRNO, os.strerror(ERRNO))
    return real_write(fd, data)

os.write = write
with Session(NAME, WS, local_path=ROOT, batch_size=500, flush_interval=0.05) as s:
    track = s.track("loss")
    for i in range(1000):
        track.append(step=i)
    s.log("before")
    s.flush()
    failing["on"] = True
    for i in range(1000, 3000):
        track.append(step=i)
    s.log("during")
    for attempt in range(3):
        try:
            s.flush()
        except StorageError as exc:
            print("failed", exc.__cause__.errno)
    failing["on"] = False
    s.flush()
    print("recovered", s.agent_stats()["written"])
"""


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS],
                         ids=["ENOSPC", "EIO", "EDQUOT", "EROFS"])
@pytest.mark.parametrize("partial", [False, True], ids=["whole", "half-written"])
def test_injected_write_errors(tmp_path: Path, code: int, partial: bool) -> None:
    status, lines, stderr = run_script(make_script(block(INJECTED), ROOT=str(tmp_path), NAME=SESSION,
                                                   WS=WORKSPACE, ERRNO=code, PARTIAL=partial))
    assert status == 0, stderr
    assert lines[:3] == [f"failed {code}"] * 3  # flush() raises the typed error every time
    assert stderr.count("RuntimeWarning: writing") == 1  # warned about once
    assert lines[-1] == "recovered 3002"  # 3000 points and 2 log entries, each written once
    assert intact(tmp_path)["loss"] == list(range(3000))  # the half-written batch was cut off
    logs = check_session(session_dir(tmp_path)).logs
    assert [entry["message"] for entry in logs] == ["before", "during"]


METADATA_REPLACE = """
from dreamlake import StorageError
real_replace = os.replace
failing = {"on": False}

def replace(src, dst):
    if failing["on"] and str(dst).endswith(("metadata.json", ".log_sequence")):
        raise OSError(28, "No space left on device")
    return real_replace(src, dst)

os.replace = replace
with Session(NAME, WS, local_path=ROOT, batch_size=500, flush_interval=0.05) as s:
    track = s.track("loss")
    for i in range(1000):
        track.append(step=i)
    s.log("a")
    s.flush()
    failing["on"] = True
    for i in range(1000, 2000):
        track.append(step=i)
    s.log("b")
    try:
        s.flush()
    except StorageError:
        print("failed")
    meta = os.path.join(ROOT, WS, NAME, "tracks", "loss", "metadata.json")
    print("meta during", json.load(open(meta))["totalDataPoints"])
    failing["on"] = False
    s.flush()
print("done")
"""


def test_a_failing_metadata_replace_stores_nothing_twice(tmp_path: Path) -> None:
    status, lines, stderr = run_script(make_script(block(METADATA_REPLACE), ROOT=str(tmp_path),
                                                   NAME=SESSION, WS=WORKSPACE))
    assert status == 0, stderr
    assert lines == ["failed", "meta during 1000", "done"]  # the old metadata stayed whole
    assert intact(tmp_path)["loss"] == list(range(2000))  # the retried batch is there once
    meta = json.loads((session_dir(tmp_path) / "tracks" / "loss" / "metadata.json").read_text())
    assert meta["totalDataPoints"] == 2000
    assert [entry["message"] for entry in check_session(session_dir(tmp_path)).logs] == ["a", "b"]
    leftovers = [p.name for p in session_dir(tmp_path).rglob("*.tmp")]
    assert leftovers == []


STALLED = """
import threading
real_write = os.write
stalled = threading.Event()
resume = threading.Event()

def write(fd, data):
    if STALL_FLAG and os.path.exists(STALL_FLAG):
        stalled.set()
        while os.path.exists(STALL_FLAG):
            time.sleep(0.01)  # an NFS server that stopped answering
    return real_write(fd, data)

os.write = write
import dreamlake._disk.runs, dreamlake._disk.session_dir
# the Python twin of the group write, which writes with os.write (the C one cannot be stalled from here)
dreamlake._disk.session_dir.write_runs = dreamlake._disk.runs.py_write_runs
from dreamlake import FlushTimeoutError
s = Session(NAME, WS, local_path=ROOT, batch_size=1000, max_queue=200_000, close_timeout=30).open()
track = s.track("loss")
for i in range(100_000):  # far more than one batch, below max_queue: append must never wait
    track.append(step=i)
print("appended", flush=True)
stalled.wait(30)
try:
    s.close(timeout=1)
except FlushTimeoutError as exc:
    print("close:", exc, flush=True)
sys.stdin.readline()  # the test ends the stall, then the exit hook writes the rest
"""


def test_stalled_storage_never_blocks_append_and_close_keeps_its_deadline(tmp_path: Path) -> None:
    flag = tmp_path / "stall"
    flag.touch()
    script = make_script(block(STALLED), ROOT=str(tmp_path / "store"), NAME=SESSION, WS=WORKSPACE,
                         STALL_FLAG=str(flag))
    with Child(script, stdin=True) as child:
        child.expect("appended", timeout=60)  # a blocked append would never print this
        message = child.expect(lambda line: line.startswith("close:"), timeout=30)
        assert "did not finish within 1" in message
        held = int(message.split("; ")[1].split()[0])
        assert 0 < held <= 100_000  # says how many points were not written...
        assert "still in memory" in message  # ...and where they are
        flag.unlink()
        child.send("\n")
        assert child.wait(60) == 0, child.stderr
    assert intact(tmp_path / "store")["loss"] == list(range(100_000))
