"""Wide sessions under ``ulimit -n 1024``: thousands of tracks, many sessions in one process, two
processes on one track of a wide session. Open files stay bounded and every point is stored.

Each case runs in a child that lowers its own ``RLIMIT_NOFILE`` to 1,024 (the common default) before
importing nothing more than the test needs; the test then checks the files by plain reading.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from ._subproc import SESSION, WORKSPACE, Child, block, make_script, no_errors, read_metadata, read_points

pytestmark = pytest.mark.timeout(300)

LIMIT = """
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def open_files():
    return len(os.listdir("/proc/self/fd"))
"""

MANY_TRACKS = """
s = Session(NAME, WS, local_path=ROOT).open()
tracks = [s.track(f"layer{k}.grad_norm") for k in range(TRACKS)]
peak = 0
for step in range(STEPS):
    for k, t in enumerate(tracks):
        t.append(step=step, k=k)
    s.flush()  # every track written at every step: the widest flushes there are
    peak = max(peak, open_files())
wrong = []
for k, t in enumerate(tracks):
    got = t.read(0, STEPS + 10)["data"]
    if [(p["index"], p["data"]["step"], p["data"]["k"]) for p in got] != [(i, i, k) for i in range(STEPS)]:
        wrong.append(t.name)
s.close()
print(json.dumps({"peak": peak, "wrong": wrong}), flush=True)
"""


def test_5000_tracks_under_1024_open_files(tmp_path: Path) -> None:
    tracks, steps = 5_000, 20
    script = make_script(
        block(LIMIT),
        block(MANY_TRACKS),
        ROOT=str(tmp_path), NAME=SESSION, WS=WORKSPACE, TRACKS=tracks, STEPS=steps,
    )
    with Child(script) as child:
        status = child.wait(timeout=280)
        assert status == 0, child.stderr
        no_errors(child.stderr)
        report = json.loads(child.lines[-1])
    assert report["wrong"] == []
    assert report["peak"] < 300  # bounded: the cache's 128 data files, the spool, Python's own
    for k in range(tracks):
        name = f"layer{k}.grad_norm"
        assert [p["step"] for p in read_points(tmp_path, name)] == list(range(steps)), name
        assert read_metadata(tmp_path, name)["totalDataPoints"] == steps


MANY_SESSIONS = """
sessions = [Session(f"{NAME}{i}", WS, local_path=ROOT).open() for i in range(SESSIONS)]
peak = 0
for step in range(STEPS):
    for s in sessions:
        for k in range(TRACKS):
            s.track(f"t{k}").append(step=step)
    for s in sessions:
        s.flush()
    peak = max(peak, open_files())
for s in sessions:
    s.close()
print(json.dumps({"peak": peak}), flush=True)
"""


def test_10_sessions_of_500_tracks_in_one_process(tmp_path: Path) -> None:
    sessions, tracks, steps = 10, 500, 5
    script = make_script(
        block(LIMIT),
        block(MANY_SESSIONS),
        ROOT=str(tmp_path), NAME=SESSION, WS=WORKSPACE, SESSIONS=sessions, TRACKS=tracks, STEPS=steps,
    )
    with Child(script) as child:
        status = child.wait(timeout=280)
        assert status == 0, child.stderr
        no_errors(child.stderr)
        report = json.loads(child.lines[-1])
    assert report["peak"] < 300
    for i in range(sessions):
        for k in range(tracks):
            assert [p["step"] for p in read_points(tmp_path, f"t{k}", f"{SESSION}{i}")] == list(range(steps))


WIDE_WRITER = """
with Session(NAME, WS, local_path=ROOT, batch_size=500, flush_interval=0.02) as s:
    others = [s.track(f"other{k}") for k in range(TRACKS)]
    shared = s.track("shared")
    print("ready", flush=True)
    sys.stdin.readline()  # start together, so that the writes to "shared" interleave
    for seq in range(POINTS):
        shared.append(writer=WRITER, seq=seq)
        others[seq % TRACKS].append(seq=seq)
print("done", flush=True)
"""


def test_two_processes_on_one_track_of_a_2000_track_session(tmp_path: Path) -> None:
    points = 20_000
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(
                Child(
                    make_script(
                        block(LIMIT),
                        block(WIDE_WRITER),
                        ROOT=str(tmp_path), NAME=SESSION, WS=WORKSPACE, TRACKS=2_000, POINTS=points, WRITER=w,
                    ),
                    stdin=True,
                )
            )
            for w in range(2)
        ]
        for child in children:
            child.expect("ready", timeout=60)
        for child in children:
            child.send("go\n")
        for child in children:
            child.expect("done", timeout=240)
            assert child.wait() == 0, child.stderr
            no_errors(child.stderr)
    stored = read_points(tmp_path, "shared")  # checks line k carries index k
    assert len(stored) == 2 * points
    for w in range(2):
        assert [p["seq"] for p in stored if p["writer"] == w] == list(range(points))
    assert read_metadata(tmp_path, "shared")["totalDataPoints"] == 2 * points
