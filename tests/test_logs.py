"""``session.log()``: levels, metadata, the fluent form, numbering across threads and processes,
and the bridge from the standard ``logging`` module."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

import pytest

from dreamlake import (
    InvalidArgumentError,
    InvalidValueError,
    LogBuilder,
    LoggingHandler,
    Session,
    SessionClosedError,
)

from ._subproc import SESSION, WORKSPACE, Child, block, make_script, no_errors, run_script


def read_logs(session_dir: Path) -> list[dict[str, Any]]:
    """Every line of logs.jsonl, checking the numbering invariant on the way."""
    path = session_dir / "logs" / "logs.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    assert [e["sequenceNumber"] for e in entries] == list(range(len(entries)))
    return entries


def test_log_entry_shape(tmp_path: Path) -> None:
    with Session("l", "w", local_path=tmp_path) as s:
        s.log("started")
        s.log("epoch", level="WARN", metadata={"epoch": 1}, loss=0.5)
        s.log("nan", level="Error", value=math.nan)
        s.log("default", level=None)  # 0.2.x: None means info
    first, second, third, fourth = read_logs(s.path)
    assert first.keys() == {"sequenceNumber", "timestamp", "level", "message"}  # no empty metadata
    assert (first["level"], first["message"]) == ("info", "started")
    assert first["timestamp"].endswith("Z")
    assert first["timestamp"][10] == "T"
    assert second["level"] == "warn"
    assert second["metadata"] == {"epoch": 1, "loss": 0.5}
    assert third["level"] == "error"
    assert third["metadata"] == {"value": {"$float": "NaN"}}  # strict JSON
    assert fourth["level"] == "info"
    assert (s.path / "logs" / ".log_sequence").read_text() == "4"  # 0.2.x's counter, kept in step


def test_fluent_form_merges_metadata(tmp_path: Path) -> None:
    with Session("l", "w", local_path=tmp_path) as s:
        builder = s.log(metadata={"epoch": 1, "phase": "train"})
        assert isinstance(builder, LogBuilder)
        builder.info("started", phase="eval")
        s.log().fatal("boom")
        for level in ("debug", "warn", "error"):
            getattr(s.log(), level)(level)
    entries = read_logs(s.path)
    assert entries[0]["metadata"] == {"epoch": 1, "phase": "eval"}
    assert (entries[1]["level"], entries[1]["message"], "metadata" in entries[1]) == ("fatal", "boom", False)
    assert [e["level"] for e in entries[2:]] == ["debug", "warn", "error"]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.log("x", level="verbose"), InvalidArgumentError),
        (lambda s: s.log("x", level="warning"), InvalidArgumentError),
        (lambda s: s.log("x", level=1), InvalidArgumentError),
        (lambda s: s.log(42), InvalidValueError),
        (lambda s: s.log("x", metadata=["not", "a", "dict"]), InvalidValueError),
        (lambda s: s.log("x", metadata={"obj": object()}), InvalidValueError),
        (lambda s: s.log("x", bad={1, 2}), InvalidValueError),
    ],
)
def test_bad_input_is_refused_and_nothing_is_queued(
    tmp_path: Path, call: Any, error: type[Exception]
) -> None:
    with Session("l", "w", local_path=tmp_path) as s:
        s.log("before")
        with pytest.raises(error):
            call(s)
        s.log("after")
    assert [e["message"] for e in read_logs(s.path)] == ["before", "after"]


def test_unknown_level_is_a_value_error(tmp_path: Path) -> None:
    with Session("l", "w", local_path=tmp_path) as s, pytest.raises(ValueError, match="debug, info"):
        s.log("x", level="trace")


def test_log_on_a_closed_session_raises(tmp_path: Path) -> None:
    s = Session("l", "w", local_path=tmp_path)
    with pytest.raises(SessionClosedError):
        s.log("x")
    with s:
        pass
    with pytest.raises(SessionClosedError):
        s.log("x")
    with pytest.raises(SessionClosedError):
        s.log(metadata={"a": 1})


def test_sixteen_threads_give_gap_free_numbers_in_each_threads_order(tmp_path: Path) -> None:
    threads, per_thread = 16, 1000
    with Session("l", "w", local_path=tmp_path, batch_size=500, flush_interval=0.01) as s:
        start = threading.Barrier(threads)

        def worker(t: int) -> None:
            start.wait()
            for i in range(per_thread):
                s.log(f"t{t} {i}", thread=t, i=i)

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    entries = read_logs(s.path)  # numbered 0..15999
    assert len(entries) == threads * per_thread
    seen: dict[int, list[int]] = {t: [] for t in range(threads)}
    for entry in entries:
        seen[entry["metadata"]["thread"]].append(entry["metadata"]["i"])
    assert all(got == list(range(per_thread)) for got in seen.values())


def test_numbering_continues_across_runs(tmp_path: Path) -> None:
    for run in range(3):
        with Session("l", "w", local_path=tmp_path) as s:
            for i in range(5):
                s.log(f"run {run} entry {i}")
    entries = read_logs(s.path)
    assert [e["message"] for e in entries] == [f"run {r} entry {i}" for r in range(3) for i in range(5)]


LOGGER = """
with Session(NAME, WS, local_path=ROOT, batch_size=100, flush_interval=0.01) as s:
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(COUNT):
        s.log("entry", writer=WRITER, i=i)
print("done", flush=True)
"""


def test_processes_logging_to_one_session_get_unique_gap_free_numbers(tmp_path: Path) -> None:
    writers, count = 3, 5000
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(
                Child(
                    make_script(block(LOGGER), ROOT=str(tmp_path), NAME=SESSION, WS=WORKSPACE,
                                COUNT=count, WRITER=w),
                    stdin=True,
                )
            )
            for w in range(writers)
        ]
        for child in children:
            child.expect("ready", timeout=60)
        for child in children:
            child.send("go\n")
        for child in children:
            assert child.wait(60) == 0, child.stderr
            no_errors(child.stderr)
    entries = read_logs(tmp_path / WORKSPACE / SESSION)
    assert len(entries) == writers * count
    for w in range(writers):
        assert [e["metadata"]["i"] for e in entries if e["metadata"]["writer"] == w] == list(range(count))


def test_logs_are_written_at_interpreter_exit_without_close(tmp_path: Path) -> None:
    script = make_script(
        block("""
        s = Session(NAME, WS, local_path=ROOT, flush_interval=3600).open()
        for i in range(1000):
            s.log("line", i=i)
        """),
        ROOT=str(tmp_path), NAME=SESSION, WS=WORKSPACE,
    )
    code, _, stderr = run_script(script)
    assert code == 0, stderr
    assert [e["metadata"]["i"] for e in read_logs(tmp_path / WORKSPACE / SESSION)] == list(range(1000))


@pytest.fixture
def train_logger() -> Any:
    logger = logging.getLogger("test.train")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.handlers.clear()


def test_logging_handler_bridges_records(tmp_path: Path, train_logger: logging.Logger) -> None:
    with Session("l", "w", local_path=tmp_path) as s:
        handler = LoggingHandler(s)
        train_logger.addHandler(handler)
        train_logger.debug("d")
        train_logger.info("epoch %d done", 3, extra={"step": 30, "obj": object()})
        train_logger.warning("w")
        train_logger.log(35, "between warning and error")
        try:
            raise KeyError("missing")
        except KeyError:
            train_logger.exception("failed")
        train_logger.critical("c")
        logging.getLogger("dreamlake").addHandler(handler)  # its own records must not loop back
        logging.getLogger("dreamlake").error("agent trouble")
        logging.getLogger("dreamlake").removeHandler(handler)
    entries = read_logs(s.path)
    assert [e["level"] for e in entries] == ["debug", "info", "warn", "warn", "error", "fatal"]
    info = entries[1]
    assert info["message"] == "epoch 3 done"
    assert info["metadata"]["logger"] == "test.train"
    assert info["metadata"]["function"] == "test_logging_handler_bridges_records"
    assert info["metadata"]["step"] == 30
    assert info["metadata"]["obj"].startswith("<object object")  # not JSON: stored as its repr
    assert "KeyError: 'missing'" in entries[4]["message"]  # the traceback, via the formatter
    assert all(e["message"] != "agent trouble" for e in entries)


def test_logging_handler_after_close_reports_through_logging(
    tmp_path: Path, train_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    with Session("l", "w", local_path=tmp_path) as s:
        train_logger.addHandler(LoggingHandler(s))
    train_logger.info("too late")  # must not raise into the program; logging prints the error
    assert "SessionClosedError" in capsys.readouterr().err
