"""Accepted means safe: every call that returned survives kill -9 of the process (the spool).

A child logs, then SIGKILLs itself right after a chosen call, so exactly the calls before it
returned. Opening the session again must store them all, exactly once, in order, after what the
dead run had stored, and leave every invariant of the session directory intact.
"""

from __future__ import annotations

import mmap
import os
import random
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from dreamlake import QueueFullError, Session
from dreamlake._agent import hotpath
from dreamlake._agent.spool import DIRECTORY, Spool, half_bytes, orphans, pack
from dreamlake.testing import stalled

from ._invariants import check_session
from ._subproc import SESSION, WORKSPACE, Child, block, make_script, read_points, run_script

pytestmark = pytest.mark.timeout(120)

# The child logs N calls of one kind, then kills itself after call KILL_AT (so KILL_AT + 1 returned).
BURST = """
s = Session(NAME, WS, local_path=ROOT, batch_size=BATCH, flush_interval=INTERVAL).open()
loss = s.track("train/loss")
if PARAMS:
    s.parameters().set(lr=0.1, model={"depth": 3, "name": "mlp"})
for i in range(N):
    if KIND == "scalar":
        loss.append(step=i, value=i * 0.25)
    elif KIND == "wide":
        loss.append(step=i, value=i * 0.25, lr=1e-3, name=f"p{i}", done=i % 2 == 0)
    elif KIND == "nested":
        loss.append(step=i, hist=[i, i + 1], info={"k": i})
    else:
        s.log(f"entry {i}", level="warn", step=i)
    if i == KILL_AT:
        if PARAMS:
            s.parameters().set(lr=0.01)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def expected_point(kind: str, i: int) -> dict[str, Any]:
    if kind == "scalar":
        return {"step": i, "value": i * 0.25}
    if kind == "wide":
        return {"step": i, "value": i * 0.25, "lr": 1e-3, "name": f"p{i}", "done": i % 2 == 0}
    return {"step": i, "hist": [i, i + 1], "info": {"k": i}}


def burst(root: Path, kind: str, n: int, kill_at: int, batch: int = 50_000, interval: float = 1.0,
          params: bool = False) -> None:
    script = make_script(block(BURST), ROOT=str(root), NAME=SESSION, WS=WORKSPACE, KIND=kind, N=n,
                         KILL_AT=kill_at, BATCH=batch, INTERVAL=interval, PARAMS=params)
    status, _, stderr = run_script(script)
    assert status == -signal.SIGKILL, stderr


def reopen(root: Path) -> None:
    """What the next run does first: open the session (which recovers), then close it."""
    Session(SESSION, WORKSPACE, local_path=root).open().close()


@pytest.mark.parametrize("trial", range(20))
def test_every_returned_call_survives_kill9(tmp_path: Path, trial: int) -> None:
    rng = random.Random(trial)
    kind = ("scalar", "wide", "nested", "logs")[trial % 4]
    n = 20_000 if kind != "logs" else 1_000
    kill_at = rng.randrange(n)
    # Small batches and a short interval put the kill anywhere in the agent's writes, too.
    batch, interval = rng.choice([(50_000, 1.0), (2_000, 0.01), (500, 0.001)])
    root = tmp_path / "store"
    burst(root, kind, n, kill_at, batch, interval, params=trial % 5 == 0)
    report = check_session(root / WORKSPACE / SESSION, allow_torn_tail=True)
    assert report.violations == [], report.violations

    reopen(root)
    session_dir = root / WORKSPACE / SESSION
    after = check_session(session_dir)
    assert after.violations == [], after.violations
    if kind == "logs":
        assert [entry["message"] for entry in after.logs] == [f"entry {i}" for i in range(kill_at + 1)]
        assert all(entry["level"] == "warn" for entry in after.logs)
    else:
        points = read_points(root, "train%2Floss")
        assert points == [expected_point(kind, i) for i in range(kill_at + 1)]
    if trial % 5 == 0:
        with Session(SESSION, WORKSPACE, local_path=root) as s:
            assert s.parameters().get() == {"lr": 0.01, "model.depth": 3, "model.name": "mlp"}
    assert list((root / DIRECTORY).iterdir()) == []


RECOVER_SLOWLY = """
import dreamlake._disk.session_dir as session_dir
real = session_dir.SessionDir.write_track
def slow(self, spec, points, intent=None):
    print("writing", flush=True)
    time.sleep(0.02)
    return real(self, spec, points, intent)
session_dir.SessionDir.write_track = slow
Session(NAME, WS, local_path=ROOT, batch_size=1000).open().close()
print("recovered", flush=True)
"""


def test_a_recovery_killed_midway_is_finished_by_the_next_one(tmp_path: Path) -> None:
    root = tmp_path / "store"
    burst(root, "scalar", 30_000, 29_999)
    script = make_script(block(RECOVER_SLOWLY), ROOT=str(root), NAME=SESSION, WS=WORKSPACE)
    with Child(script) as child:
        for _ in range(7):
            child.expect("writing")
        child.kill()  # SIGKILL, mid-recovery
    assert 0 < len(read_points(root, "train%2Floss")) < 30_000
    reopen(root)
    assert read_points(root, "train%2Floss") == [expected_point("scalar", i) for i in range(30_000)]
    assert list((root / DIRECTORY).iterdir()) == []


def test_two_processes_recovering_at_once_store_each_point_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    burst(root, "scalar", 20_000, 19_999)
    script = make_script(block(RECOVER_SLOWLY), ROOT=str(root), NAME=SESSION, WS=WORKSPACE)
    with Child(script) as first, Child(script) as second:
        assert first.wait(60) == 0, first.stderr
        assert second.wait(60) == 0, second.stderr
    assert read_points(root, "train%2Floss") == [expected_point("scalar", i) for i in range(20_000)]


OWNER = """
s = Session(NAME, WS, local_path=ROOT, flush_interval=3600.0).open()
t = s.track("owned")
for i in range(5000):
    t.append(i=i)
print("ready", flush=True)
sys.stdin.readline()
s.close()
print("closed", flush=True)
"""


def test_a_spool_whose_owner_lives_is_never_touched(tmp_path: Path) -> None:
    root = tmp_path / "store"
    script = make_script(block(OWNER), ROOT=str(root), NAME=SESSION, WS=WORKSPACE)
    with Child(script, stdin=True) as owner:
        owner.expect("ready")
        spools = list((root / DIRECTORY).iterdir())
        assert len(spools) == 1
        reopen(root)  # another process opens the same session while the owner runs
        assert list((root / DIRECTORY).iterdir()) == spools
        assert not (root / WORKSPACE / SESSION / "tracks" / "owned").exists()
        owner.send("\n")
        owner.expect("closed")
        assert owner.wait() == 0
    assert read_points(root, "owned") == [{"i": i} for i in range(5000)]
    assert list((root / DIRECTORY).iterdir()) == []


FORK = """
s = Session(NAME, WS, local_path=ROOT, flush_interval=3600.0).open()
parent = s.track("parent")
for i in range(10_000):
    parent.append(i=i)
pids = []
for k in range(3):  # DataLoader-style workers: each logs into its own spool, then dies hard
    pid = os.fork()
    if pid == 0:
        worker = s.track(f"worker{k}")
        for i in range(3000):
            worker.append(i=i)
        os.kill(os.getpid(), signal.SIGKILL)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
for i in range(10_000, 12_000):
    parent.append(i=i)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_fork_after_a_burst_each_process_recovers_its_own_points_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    status, _, stderr = run_script(make_script(block(FORK), ROOT=str(root), NAME=SESSION, WS=WORKSPACE))
    assert status == -signal.SIGKILL, stderr
    # The parent's spool and the last worker's at least: a worker whose agent starts after a
    # sibling died recovers the sibling's spool at once, as any process opening the session does.
    assert len(list((root / DIRECTORY).iterdir())) >= 2
    reopen(root)
    assert read_points(root, "parent") == [{"i": i} for i in range(12_000)]
    for k in range(3):
        assert read_points(root, f"worker{k}") == [{"i": i} for i in range(3000)]


BIG = "x" * 20_000


@pytest.mark.parametrize("policy", ["drop_newest", "raise", "block"])
def test_a_full_spool_applies_on_full(tmp_path: Path, policy: str) -> None:
    # max_queue is far away: the spool (two halves of 4 MiB, 200 of these points each) fills first.
    s = Session(SESSION, WORKSPACE, local_path=tmp_path, max_queue=10_000, batch_size=1000,
                on_full=policy).open()
    track = s.track("big")
    appended = refused = 0
    message = ""
    with stalled() as release:
        if policy == "block":
            def unstall() -> None:
                while s.agent_stats()["queued"] < 300:
                    threading.Event().wait(0.01)
                release.set()
            threading.Thread(target=unstall).start()
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            for i in range(600):
                try:
                    track.append(i=i, blob=BIG)
                    appended += 1
                except QueueFullError as exc:
                    refused += 1
                    message = str(exc)
        if policy.startswith("drop"):
            assert [str(w.message) for w in warned if "its spool was full" in str(w.message)]
        release.set()
        s.flush()
    dropped = s.agent_stats()["dropped"]
    s.close()
    stored = [p["i"] for p in read_points(tmp_path, "big")]
    if policy == "block":
        assert stored == list(range(600))  # appends waited for room; nothing dropped
    elif policy == "raise":
        assert "spool is full" in message
        assert len(stored) == appended == 600 - refused
    else:
        assert dropped > 0
        assert len(stored) == 600 - dropped
    assert stored == sorted(stored)


def test_compiled_and_python_spools_write_the_same_records(tmp_path: Path) -> None:
    assert hotpath.COMPILED  # CI builds the C hot path; this test compares it with its Python twin
    items = [
        {"step": 1, "value": 0.5, "name": "a", "done": True, "none": None, "off": False},
        {"big": 2**70, "nested": [1.5, {"k": "v"}], "nan": float("nan"), "neg": -(2**63)},
        {0: 1.25, 1: "info", 2: "message", "extra": "é"},
    ]
    records = []
    for core_type, fifo_type in ((hotpath.Spool, hotpath.Fifo), (hotpath.PySpool, hotpath.PyFifo)):
        size = 8192 + 2 * 32 * 4096
        with open(tmp_path / core_type.__name__, "w+b") as f:
            f.truncate(size)
            mapping = mmap.mmap(f.fileno(), size)
        mapping[16:24] = (1).to_bytes(8, "little")  # half 0 active, epoch 1
        keys: dict[Any, int] = {}
        core = core_type(mapping=mapping, epochs_at=16, halves_at=8192, half_bytes=32 * 4096, keys=keys,
                         define=lambda key, keys=keys: keys.setdefault(key, len(keys)), pack=pack)
        fifo = fifo_type()
        fifo.attach(core, 7)
        for item in items:
            assert fifo.append(item) is None
        assert (fifo.appended, fifo.last_in(0), fifo.last_in(1)) == (3, 2, -1)
        records.append(bytes(mapping[8192 : 8192 + core.pos]))
        core.release()
        mapping.close()
    assert records[0] == records[1]


@pytest.mark.parametrize("compiled", [True, False])
def test_ctrl_c_while_recording_a_new_key_is_not_swallowed(tmp_path: Path, compiled: bool) -> None:
    # define() (a new key) and pack() are Python: a signal's KeyboardInterrupt can surface there. It
    # must reach the caller; a key the spool cannot name (ValueError) only skips the record.
    core_type, fifo_type = (hotpath.Spool, hotpath.Fifo) if compiled else (hotpath.PySpool, hotpath.PyFifo)
    size = 8192 + 2 * 32 * 4096
    with open(tmp_path / "spool", "w+b") as f:
        f.truncate(size)
        mapping = mmap.mmap(f.fileno(), size)
    mapping[16:24] = (1).to_bytes(8, "little")
    raised: list[type[BaseException]] = [KeyboardInterrupt, ValueError]

    def define(key: Any) -> int:
        raise raised.pop(0)("from define")

    core = core_type(mapping=mapping, epochs_at=16, halves_at=8192, half_bytes=32 * 4096, keys={},
                     define=define, pack=pack)
    fifo = fifo_type()
    fifo.attach(core, 7)
    with pytest.raises(KeyboardInterrupt):
        fifo.append({"step": 1})
    assert fifo.append({"step": 2}) is None  # queued, without a record
    assert (list(fifo), core.skipped) == ([{"step": 2}], 1)
    core.release()
    mapping.close()


def test_dreamlake_recover_stores_dead_runs_without_opening_them(tmp_path: Path) -> None:
    root = tmp_path / "store"
    burst(root, "scalar", 5000, 4999)
    recover = [sys.executable, "-m", "dreamlake", "recover", "--local-path", str(root)]
    done = subprocess.run(recover, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{WORKSPACE}/{SESSION}: 5000 points" in done.stdout
    assert read_points(root, "train%2Floss") == [expected_point("scalar", i) for i in range(5000)]
    again = subprocess.run(recover, capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stdout) == (0, "")


NO_C = "import sys\nsys.modules['dreamlake._speedups'] = None  # the Python twins, as without a compiler\n"


def test_without_the_c_hot_path_the_python_twins_spool_and_recover_the_same(tmp_path: Path) -> None:
    root = tmp_path / "store"
    params = {"ROOT": str(root), "NAME": SESSION, "WS": WORKSPACE, "N": 5000, "KILL_AT": 4321, "BATCH": 2000,
              "INTERVAL": 0.01, "PARAMS": True}
    for kind in ("wide", "logs"):
        script = NO_C + make_script(block(BURST), KIND=kind, **params)
        status, _, stderr = run_script(script)
        assert status == -signal.SIGKILL, stderr
        reopen_twin = NO_C + make_script(block("""
            from dreamlake._agent import hotpath
            assert not hotpath.COMPILED
            Session(NAME, WS, local_path=ROOT).open().close()
        """), ROOT=str(root), NAME=SESSION, WS=WORKSPACE)
        status, _, stderr = run_script(reopen_twin)
        assert status == 0, stderr
    assert read_points(root, "train%2Floss") == [expected_point("wide", i) for i in range(4322)]
    logs = check_session(root / WORKSPACE / SESSION).logs
    assert [entry["message"] for entry in logs] == [f"entry {i}" for i in range(4322)]


def test_opening_another_session_points_at_dead_spools_and_leaves_them(tmp_path: Path) -> None:
    root = tmp_path / "store"
    burst(root, "scalar", 1000, 999)
    with pytest.warns(RuntimeWarning, match=rf"sessions {WORKSPACE}/{SESSION}\); .*dreamlake recover"):
        Session("another", WORKSPACE, local_path=root).open().close()
    assert len(list((root / DIRECTORY).iterdir())) == 1  # not that session's to store
    reopen(root)
    assert read_points(root, "train%2Floss") == [expected_point("scalar", i) for i in range(1000)]


def test_orphans_skip_this_process_and_live_owners(tmp_path: Path) -> None:
    identity = {"workspace": WORKSPACE, "session": SESSION, "remote": None}
    live = Spool(tmp_path, identity, half_bytes(1))
    try:
        assert list(orphans(tmp_path, lambda _: True)) == []  # ours: never opened, never unlocked
        assert (tmp_path / DIRECTORY / f"{live.writer}.spool").exists()
    finally:
        live.close(remove=True)
    assert os.listdir(tmp_path / DIRECTORY) == []
