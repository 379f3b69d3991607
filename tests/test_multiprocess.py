"""Several processes, each with its own Session, appending to the same track at the same time.

The track's file lock makes every batch append atomic and its indices come from the file's last line,
so the file must hold every point once, with indices 0..n-1, and each writer's points in its order.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from ._subproc import SESSION, WORKSPACE, Child, block, make_script, no_errors, read_metadata, read_points

pytestmark = pytest.mark.timeout(120)

WRITERS = 4
POINTS = 20_000

WRITER_SCRIPT = """
with Session(NAME, WS, local_path=ROOT, batch_size=1000, flush_interval=0.05) as s:
    t = s.track("shared")
    print("ready", flush=True)
    sys.stdin.readline()  # start together, so that the writes interleave
    for seq in range(POINTS):
        t.append(writer=WRITER, seq=seq)
print("done", flush=True)
"""


def test_processes_appending_to_one_track(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(
                Child(
                    make_script(
                        block(WRITER_SCRIPT),
                        ROOT=str(tmp_path), NAME=SESSION, WS=WORKSPACE, POINTS=POINTS, WRITER=writer,
                    ),
                    stdin=True,
                )
            )
            for writer in range(WRITERS)
        ]
        for child in children:
            child.expect("ready", timeout=60)
        for child in children:
            child.send("go\n")
        for child in children:
            assert child.wait(60) == 0, child.stderr
            no_errors(child.stderr)
            assert child.lines[-1] == "done"

    points = read_points(tmp_path, "shared")  # every line parses; indices 0..n-1 in file order
    assert len(points) == WRITERS * POINTS
    seqs: dict[int, list[int]] = {writer: [] for writer in range(WRITERS)}
    for point in points:
        seqs[point["writer"]].append(point["seq"])
    for writer, got in seqs.items():
        # Each seq exactly once, in increasing order within the writer.
        assert got == list(range(POINTS)), f"writer {writer}: {len(got)} points, first bad at " + str(
            next((k for k, seq in enumerate(got) if seq != k), None)
        )
    assert read_metadata(tmp_path, "shared")["totalDataPoints"] == WRITERS * POINTS
