"""Forked children: they forget the parent's queued points, log their own, and are flushed at their end.

Every case runs in a child script (forking pytest itself would copy its threads and state); the
test then reads the track files as plain JSON lines. The parent's agent is lazy (large batch, long
interval), so the parent's points are still queued, not written, when it forks.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from ._subproc import (
    SESSION,
    WORKSPACE,
    Child,
    block,
    make_script,
    no_errors,
    read_metadata,
    read_points,
)

pytestmark = pytest.mark.timeout(120)

LAZY = {"batch_size": 1_000_000, "max_queue": 2_000_000, "flush_interval": 3600.0}


def params(root: Path, **extra: object) -> dict[str, object]:
    return {"ROOT": str(root), "NAME": SESSION, "WS": WORKSPACE, "CFG": LAZY, **extra}


def keys_by_writer(points: list[dict[str, Any]]) -> dict[str, list[int]]:
    """``k`` of each writer's points, in file order."""
    out: dict[str, list[int]] = {}
    for point in points:
        out.setdefault(point["who"], []).append(point["k"])
    return out


# P0 parent points are written before the fork (so the parent's track file is open, its size cached),
# P1 are still queued at the fork, P2 are appended after the child has ended; then the parent closes.
FORK_SCRIPT = """
s = Session(NAME, WS, local_path=ROOT, **CFG).open()
t = s.track("shared")
for k in range(P0):
    t.append(who="parent", k=k)
s.flush()
for k in range(P0, P0 + P1):
    t.append(who="parent", k=k)
print("queued at fork", s.agent_stats()["queued"], flush=True)
pid = os.fork()
if pid == 0:
    if CHILD != "idle":
        for k in range(C):
            t.append(who="child", k=k)
        own = s.track("child_only")
        for k in range(C):
            own.append(who="child", k=k)
    if CHILD == "flush_then_os_exit":
        s.flush()
        os._exit(0)
    sys.exit(0)  # atexit closes the session (and must not write the parent's queued points)
deadline = time.monotonic() + 60
while True:  # bounded wait for the child
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        sys.exit("the forked child did not end within 60 s")
    time.sleep(0.01)
print("child status", os.waitstatus_to_exitcode(status), flush=True)
for k in range(P0 + P1, P0 + P1 + P2):
    t.append(who="parent", k=k)
s.close()
print("parent closed", flush=True)
"""


@pytest.mark.parametrize("child_mode", ["flush_then_os_exit", "sys_exit", "idle"])
def test_fork_child_and_parent_each_write_their_own_points_once(tmp_path: Path, child_mode: str) -> None:
    p0, p1, p2, c = 300, 2000, 500, 1500
    script = make_script(block(FORK_SCRIPT), **params(tmp_path, P0=p0, P1=p1, P2=p2, C=c, CHILD=child_mode))
    with Child(script) as child:
        status = child.wait(90)
    assert status == 0, child.stderr
    no_errors(child.stderr)
    assert child.lines == [f"queued at fork {p1}", "child status 0", "parent closed"]

    shared = read_points(tmp_path, "shared")  # every line parses, indices 0..n-1 in file order
    by_writer = keys_by_writer(shared)
    assert by_writer["parent"] == list(range(p0 + p1 + p2))  # each parent point once, in order
    if child_mode == "idle":
        assert set(by_writer) == {"parent"}
        assert not (tmp_path / WORKSPACE / SESSION / "tracks" / "child_only").exists()
    else:
        assert set(by_writer) == {"parent", "child"}
        assert by_writer["child"] == list(range(c))
        child_only = read_points(tmp_path, "child_only")
        assert keys_by_writer(child_only) == {"child": list(range(c))}
        assert read_metadata(tmp_path, "child_only")["totalDataPoints"] == c
    assert read_metadata(tmp_path, "shared")["totalDataPoints"] == len(shared)


# multiprocessing children end with os._exit(); their points are written by a finalizer. The parent
# stops (waiting for "go" on stdin) after joining them, so the test can look at the files while the
# parent's own points are still queued.
MP_SCRIPT = """
import multiprocessing

s = Session(NAME, WS, local_path=ROOT, **CFG).open()
t = s.track("shared")
for k in range(P):
    t.append(who="parent", k=k)


def work(name, n):
    for k in range(n):
        t.append(who=name, k=k)
    own = s.track("own-" + name)
    for k in range(n):
        own.append(who=name, k=k)


def square(x):  # a Pool task that logs
    s.track("pool").append(who="pool", k=x)
    return os.getpid(), x * x


ctx = multiprocessing.get_context("fork")
if MODE == "process":
    procs = [ctx.Process(target=work, args=(f"child{j}", C)) for j in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    print("exitcodes", [proc.exitcode for proc in procs], flush=True)
elif MODE == "pool":
    pool = ctx.Pool(2)
    print("results", sum(r for _, r in pool.map(square, range(C), chunksize=50)), flush=True)
    pool.close()  # the workers get their stop sentinel and end normally
    pool.join()
else:
    # pool.terminate() while the workers' finalizers are writing, as `with Pool(...)` does when the
    # workers have just been told to stop: a slow disk (0.3 s per write) and a marker file written by
    # each worker's first write make that ordering certain.
    import dreamlake._disk.session_dir

    original_write = dreamlake._disk.session_dir.SessionDir.write_tracks
    parent = os.getpid()

    def slow_write(self, writes, intent=None):
        if os.getpid() != parent:
            open(os.path.join(ROOT, f"writing-{os.getpid()}"), "w").close()
        time.sleep(0.3)
        return original_write(self, writes, intent)

    dreamlake._disk.session_dir.SessionDir.write_tracks = slow_write
    pool = ctx.Pool(2)
    results = pool.map(square, range(C), chunksize=50)
    print("results", sum(r for _, r in results), flush=True)
    pool.close()
    deadline = time.monotonic() + 30
    while not all(os.path.exists(os.path.join(ROOT, f"writing-{pid}")) for pid in {p for p, _ in results}):
        assert time.monotonic() < deadline, "the pool workers did not start writing"
        time.sleep(0.005)
    pool.terminate()  # SIGTERM to the workers, mid-write
    pool.join()
print("queued", s.agent_stats()["queued"], flush=True)
sys.stdin.readline()
s.close()
print("parent closed", flush=True)
"""


@pytest.mark.parametrize("mode", ["process", "pool", "pool_terminated"])
def test_multiprocessing_fork_children_are_flushed_when_they_end(tmp_path: Path, mode: str) -> None:
    """``pool_terminated``: the SIGTERM lands while a worker's finalizer is in close(); the handler must
    wait for that drain (see test_exit_paths::test_signal_during_close_still_writes_everything). An
    earlier version lost the workers' points there, at random in ``with Pool(...)`` exits.
    """
    p, c = 1000, 2000
    script = make_script(block(MP_SCRIPT), **params(tmp_path, P=p, C=c, MODE=mode))
    with Child(script, stdin=True) as child:
        child.expect(lambda line: line.startswith("queued"), timeout=90)
        if mode == "process":
            assert child.lines[0] == "exitcodes [0, 0]"
        else:
            assert child.lines[0] == f"results {sum(x * x for x in range(c))}"
        assert child.lines[1] == f"queued {p}"  # the parent's points are still only in memory

        # The children's points are on disk now, written by the children themselves.
        if mode == "process":
            shared = keys_by_writer(read_points(tmp_path, "shared"))
            assert shared == {"child0": list(range(c)), "child1": list(range(c))}
            for name in ("child0", "child1"):
                assert keys_by_writer(read_points(tmp_path, f"own-{name}")) == {name: list(range(c))}
        else:
            pool = read_points(tmp_path, "pool")
            assert sorted(point["k"] for point in pool) == list(range(c))

        child.send("go\n")
        status = child.wait(60)
    assert status == 0, child.stderr
    no_errors(child.stderr)
    assert child.lines[-1] == "parent closed"
    shared_points = read_points(tmp_path, "shared")
    by_writer = keys_by_writer(shared_points)
    assert by_writer["parent"] == list(range(p))  # written once, by the parent
    if mode == "process":
        assert by_writer["child0"] == by_writer["child1"] == list(range(c))
    assert read_metadata(tmp_path, "shared")["totalDataPoints"] == len(shared_points)


SIGTERM_CHILD_SCRIPT = """
s = Session(NAME, WS, local_path=ROOT, **CFG).open()
t = s.track("shared")
for k in range(P):
    t.append(who="parent", k=k)
pid = os.fork()
if pid == 0:
    for k in range(C):
        t.append(who="child", k=k)
    print("child ready", os.getpid(), flush=True)
    signal.pause()  # until SIGTERM: the handler inherited from the parent closes the child's session
    os._exit(99)
_, status = os.waitpid(pid, 0)  # bounded by the test's deadline (it kills the process group)
print("child status", os.waitstatus_to_exitcode(status), flush=True)
s.close()
print("parent closed", flush=True)
"""


def test_sigterm_to_a_forked_child_writes_its_points_not_the_parents(tmp_path: Path) -> None:
    # A worker process killed by its parent (as DataLoader does): the signal handler inherited through
    # fork closes the child's own session; the parent's queued points stay the parent's to write.
    p, c = 2000, 1500
    script = make_script(block(SIGTERM_CHILD_SCRIPT), **params(tmp_path, P=p, C=c))
    with Child(script) as child:
        line = child.expect(lambda line: line.startswith("child ready"))
        os.kill(int(line.split()[-1]), signal.SIGTERM)
        status = child.wait(60)
    assert status == 0, child.stderr
    no_errors(child.stderr)
    assert child.lines[1:] == [f"child status {-signal.SIGTERM}", "parent closed"]
    by_writer = keys_by_writer(read_points(tmp_path, "shared"))
    assert by_writer == {"child": list(range(c)), "parent": list(range(p))}
