"""An append that finds the queue full wakes the agent, whatever the batch_size (<= max_queue).

``batch_size`` is "queued points that wake the agent early"; a caller blocked on a full queue must not
wait for ``flush_interval`` to pass. ``batch_size == max_queue`` is a valid configuration, and the one
that broke: an earlier version took "wake-up threshold == max_queue" to mean "the agent was already
woken", and the queue opens with its threshold at ``batch_size``, so nobody ever woke the agent and
every time the queue filled, ``append`` blocked until the interval timer fired.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamlake import Session

from ._subproc import check_steps, read_points

# So long that an append waiting for the interval timer can only end by the test's own timeout.
FLUSH_INTERVAL = 3600.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("batch_size", "max_queue"), [(99, 100), (100, 100), (1, 1)])
def test_appends_to_a_full_queue_do_not_wait_for_the_flush_interval(
    tmp_path: Path, batch_size: int, max_queue: int
) -> None:
    with Session(
        "run", "ws", local_path=tmp_path, batch_size=batch_size, max_queue=max_queue,
        flush_interval=FLUSH_INTERVAL,
    ) as s:
        t = s.track("loss")
        for i in range(3 * max_queue):  # fills the queue (at least) twice over
            t.append(step=i)
    points = read_points(tmp_path, "loss", session="run", workspace="ws")
    assert len(points) == 3 * max_queue
    check_steps(points)
