"""The compiled hot path and its Python twin behave the same."""

import datetime
import gc
from collections import deque
from typing import Any

import pytest

from dreamlake import InvalidValueError
from dreamlake._agent import hotpath as _hotpath
from dreamlake._disk import jsonl
from dreamlake._schema.levels import LEVEL, MESSAGE, TIMESTAMP
from dreamlake._schema.values import normalize

IMPLEMENTATIONS = [(_hotpath.PyGate, _hotpath.PyTrackCore)]
if _hotpath.COMPILED:
    from dreamlake import _speedups

    IMPLEMENTATIONS.append((_speedups.Gate, _speedups.TrackCore))


def test_the_c_hot_path_is_built() -> None:
    # The install (pip install -e .) compiles it wherever a C compiler exists, as on CI.
    assert _hotpath.COMPILED


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda impl: impl[0].__module__)
def core(request: pytest.FixtureRequest) -> Any:
    gate_type, core_type = request.param
    gate = gate_type()
    items: deque[dict[str, Any]] = deque()
    admitted: list[tuple[dict[str, Any], int]] = []

    class Handle(core_type):  # type: ignore[misc, valid-type]
        __slots__ = ("name",)

    handle = Handle(gate, items.append, lambda fields, ticket: admitted.append((fields, ticket)), normalize)
    handle.name = "t"
    return gate, handle, items, admitted


def test_fast_path_appends_scalars_below_the_threshold(core: Any) -> None:
    gate, handle, items, admitted = core
    gate.threshold = 2
    handle.append(value=0.5, step=1, ok=True, note="x", none=None)
    handle.append()
    assert list(items) == [{"value": 0.5, "step": 1, "ok": True, "note": "x", "none": None}, {}]
    handle.append(step=3)  # ticket 2 - taken 0 is not below 2: the slow path gets it
    assert admitted == [({"step": 3}, 2)]
    gate.taken = 3
    handle.append(step=4)
    assert items[-1] == {"step": 4}


def test_other_values_are_normalized_or_refused_without_a_ticket(core: Any) -> None:
    gate, handle, items, _ = core
    gate.threshold = 100
    handle.append(when=datetime.date(2024, 1, 2), nested={"a": [1]})
    assert items[-1] == {"when": "2024-01-02", "nested": {"a": [1]}}
    with pytest.raises(InvalidValueError, match="'bad'"):
        handle.append(ok=1, bad=object())
    assert gate.next_ticket() == 1  # the refused call took none
    with pytest.raises(TypeError, match=r"positional|keyword"):
        handle.append(1)


def test_reset_and_lifetime(core: Any) -> None:
    gate, handle, items, _ = core
    gate.threshold = 10**6
    for step in range(1000):
        handle.append(step=step)
    gate.reset()
    assert (gate.next_ticket(), gate.taken) == (0, 0)
    del handle
    gc.collect()
    assert len(items) == 1000


FRAMERS = [jsonl.py_frame_lines] + ([_speedups.frame_lines] if _hotpath.COMPILED else [])


@pytest.mark.parametrize("frame", FRAMERS)
def test_frame_lines_numbers_each_encoded_line(frame: Any) -> None:
    blob = b'{"a":1}\n{"s":"x\\ny"}\n{}\n'
    assert frame(41, blob) == (
        b'{"index":41,"data":{"a":1}}\n{"index":42,"data":{"s":"x\\ny"}}\n{"index":43,"data":{}}\n'
    )
    assert frame(0, b"") == b""
    many = b'{"v":1}\n' * 5000
    assert frame(10**12, many).count(b"\n") == 5000
    assert frame(10**12, many).endswith(b'{"index":1000000004999,"data":{"v":1}}\n')


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_frame_lines_of_a_chunk_matches_the_python_twin(kind: type[bytes]) -> None:
    # Past 64 KB the C version frames bytes without the GIL (a bytearray keeps it): same output.
    blob = kind(b"".join(b'{"step":%d,"v":0.5}\n' % i for i in range(10_000)))
    expected = jsonl.py_frame_lines(7, bytes(blob))
    for frame in FRAMERS:
        assert frame(7, blob) == expected


LOG_CALLS = [
    (("msg",), {}),
    (("msg", "WARN"), {}),
    (("msg",), {"level": "error", "step": 3, "loss": 0.5}),
    (("msg", None, {"a": 1}), {"b": "x"}),
    (("msg",), {"metadata": {"a": 1}, "a": 2}),  # keywords win
    (("msg",), {"metadata": {}}),
    (("msg",), {"metadata": {"nested": {"x": [1]}}}),  # not flat: the slow path normalizes
    (("msg",), {"when": datetime.date(2024, 1, 2)}),
    (("msg", "Fatal"), {"metadata": None, "n": None}),
]


@pytest.mark.parametrize(("args", "kwargs"), LOG_CALLS)
def test_log_fast_path_queues_what_the_slow_path_queues(
    tmp_path: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    from dreamlake import Session

    with Session("l", "w", local_path=tmp_path, batch_size=1000, flush_interval=3600) as s:
        items = s._queue.logs.items
        s.log(*args, **kwargs)
        s._log_slow(*args, **kwargs)
        fast, slow = dict(items[-2]), dict(items[-1])
        assert fast.pop(TIMESTAMP) <= slow.pop(TIMESTAMP)
        assert fast == slow
        assert all(type(key) is str for key in fast if key not in (LEVEL, MESSAGE))


def test_log_copies_the_callers_metadata(tmp_path: Any) -> None:
    from dreamlake import Session

    with Session("l", "w", local_path=tmp_path, batch_size=1000, flush_interval=3600) as s:
        metadata = {"a": 1}
        s.log("msg", metadata=metadata)
        metadata["a"] = 2
        assert s._queue.logs.items[-1]["a"] == 1


def test_a_queued_log_entry_is_not_tracked_by_the_gc(tmp_path: Any) -> None:
    # A full queue of GC-tracked entries slows every collection; a flat dict of scalars is not tracked.
    from dreamlake import Session

    with Session("l", "w", local_path=tmp_path, batch_size=1000, flush_interval=3600) as s:
        s.log("msg", step=1, loss=0.5)
        s.log("msg", metadata={"epoch": 2})
        assert not any(gc.is_tracked(entry) for entry in s._queue.logs.items)


FIFOS = [_hotpath.PyFifo] + ([_speedups.Fifo] if _hotpath.COMPILED else [])


@pytest.mark.parametrize("fifo_type", FIFOS)
def test_fifo_keeps_order_through_growth_and_wrap_around(fifo_type: Any) -> None:
    fifo = fifo_type()
    expected: deque[int] = deque()
    for round_ in range(5):  # the ring wraps around and grows several times
        for i in range(100 * (round_ + 1)):
            fifo.append(round_ * 1000 + i)
            expected.append(round_ * 1000 + i)
        assert fifo.popleft() == expected.popleft()
        taken = fifo.take(37)
        assert taken == [expected.popleft() for _ in range(37)]
        assert len(fifo) == len(expected)
        assert (fifo[0], fifo[-1]) == (expected[0], expected[-1])
    assert fifo.take(10**9) == list(expected)
    assert (len(fifo), bool(fifo), fifo.take(5)) == (0, False, [])
    with pytest.raises(IndexError):
        fifo.popleft()
    fifo.append("x")
    fifo.clear()
    assert len(fifo) == 0


def test_the_queue_of_a_track_is_invisible_to_the_gc() -> None:
    # A full collection visits every item of a tracked container: 15 ms per 500,000 queued points.
    fifo = _hotpath.Fifo()
    fifo.append({"a": 1})
    assert not gc.is_tracked(fifo)


def test_fast_path_counts_bytes_and_stops_at_the_byte_threshold(core: Any) -> None:
    gate, handle, items, admitted = core
    gate.threshold = 100
    gate.byte_threshold = 2_000
    handle.append(value=0.5, step=1000)
    handle.append(values=[0.5] * 100)  # normalized; ~3 kB: past the threshold afterwards
    assert gate.bytes == sum(_hotpath.py_point_bytes(p) for p in items)
    handle.append(step=3)  # below the ticket threshold, but not below the byte one
    assert admitted == [({"step": 3}, 2)]
    gate.add_bytes(-gate.bytes)
    handle.append(step=4)
    assert items[-1] == {"step": 4}
    gate.reset()
    assert gate.bytes == 0


POINTS_TO_ESTIMATE = [
    {},
    {"a": 0.5, "b": 3, "c": 1000, "d": 2**40, "e": 2**62, "f": -(2**63), "g": 2**70, "h": True, "i": None},
    {"ascii": "x" * 100, "other": "é" * 10, "wide": "😀"},
    {"v": [0.5] * 1000, "n": {"x": [1, 2, {"y": "z"}]}},
    {f"k{i}": i * 1000 for i in range(40)},
    {0: 1.0, 1: "info", 2: "message"},  # a queued log entry
    {"other": object()},
]


def test_the_byte_estimate_of_c_and_its_twin_agree() -> None:
    assert _hotpath.COMPILED  # as in test_the_c_hot_path_is_built
    for point in POINTS_TO_ESTIMATE:
        assert _speedups.point_bytes(point) == _hotpath.py_point_bytes(point), point
    assert _speedups.points_bytes(POINTS_TO_ESTIMATE) == _hotpath.py_points_bytes(POINTS_TO_ESTIMATE)
