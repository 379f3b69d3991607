"""Every way a program can end writes every accepted point (README "Everything accepted is written").

Each case runs in a child process that logs to ``tmp_path``; the test then reads data.jsonl as plain
JSON lines. The agent is configured (large batch, long interval) so that nothing would reach the disk
before the exit path under test runs, unless the test says otherwise.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from ._subproc import (
    SESSION,
    WORKSPACE,
    Child,
    block,
    check_steps,
    make_script,
    no_errors,
    read_points,
    read_session_json,
    run_script,
)

pytestmark = pytest.mark.timeout(120)

# Nothing is written before the exit path under test: no batch wakes the agent, no interval passes.
LAZY = {"batch_size": 1_000_000, "max_queue": 2_000_000, "flush_interval": 3600.0}


def params(root: Path, **extra: object) -> dict[str, object]:
    return {"ROOT": str(root), "NAME": SESSION, "WS": WORKSPACE, "CFG": LAZY, **extra}


def test_with_block_left_normally(tmp_path: Path) -> None:
    script = make_script(
        block("""
        with Session(NAME, WS, local_path=ROOT, **CFG) as s:
            t = s.track("loss")
            for i in range(N):
                t.append(step=i, value=i * 0.5)
            print("queued", s.agent_stats()["queued"], flush=True)
        print("open", s.is_open)
        """),
        **params(tmp_path, N=5000),
    )
    status, lines, stderr = run_script(script)
    assert status == 0, stderr
    no_errors(stderr)
    assert lines == ["queued 5000", "open False"]  # still queued when the block ended
    points = read_points(tmp_path, "loss")
    assert len(points) == 5000
    check_steps(points)
    assert points[7] == {"step": 7, "value": 3.5}


def test_explicit_open_and_close(tmp_path: Path) -> None:
    script = make_script(
        block("""
        s = Session(NAME, WS, local_path=ROOT, **CFG)
        s.open()
        t = s.track("loss")
        for i in range(N):
            t.append(step=i)
        s.close()
        print("open", s.is_open)
        """),
        **params(tmp_path, N=5000),
    )
    status, lines, stderr = run_script(script)
    assert status == 0, stderr
    no_errors(stderr)
    assert lines == ["open False"]
    check_steps(points := read_points(tmp_path, "loss"))
    assert len(points) == 5000
    assert read_session_json(tmp_path)["agent"]["queued"] == 0


@pytest.mark.parametrize("ending", ["end_of_script", "sys_exit_5"])
def test_interpreter_exit_without_close(tmp_path: Path, ending: str) -> None:
    # Two sessions left open, one of them with two tracks: atexit closes them all.
    script = make_script(
        block("""
        a = Session(NAME, WS, local_path=ROOT, **CFG).open()
        b = Session(NAME + "-b", WS, local_path=ROOT, **CFG).open()
        loss, acc, other = a.track("loss"), a.track("acc"), b.track("loss")
        for i in range(N):
            loss.append(step=i)
            acc.append(step=i)
        for i in range(N // 2):
            other.append(step=i)
        print("queued", a.agent_stats()["queued"], b.agent_stats()["queued"], flush=True)
        if ENDING == "sys_exit_5":
            sys.exit(5)
        """),
        **params(tmp_path, N=4000, ENDING=ending),
    )
    status, lines, stderr = run_script(script)
    assert status == (5 if ending == "sys_exit_5" else 0), stderr
    no_errors(stderr)
    assert lines == ["queued 8000 2000"]
    expected = [("loss", SESSION, 4000), ("acc", SESSION, 4000), ("loss", SESSION + "-b", 2000)]
    for track, session, count in expected:
        points = read_points(tmp_path, track, session=session)
        assert len(points) == count, (track, session)
        check_steps(points)


def test_exception_propagating_out_of_with_kills_the_script(tmp_path: Path) -> None:
    script = make_script(
        block("""
        with Session(NAME, WS, local_path=ROOT, **CFG) as s:
            t = s.track("loss")
            for i in range(N):
                t.append(step=i)
            raise RuntimeError("boom in the training loop")
        """),
        **params(tmp_path, N=5000),
    )
    status, _, stderr = run_script(script)
    assert status == 1
    assert "RuntimeError: boom in the training loop" in stderr
    assert "dreamlake:" not in stderr
    points = read_points(tmp_path, "loss")
    assert len(points) == 5000
    check_steps(points)


# A child that appends in an endless loop, printing "ready" once READY points were appended.
# ``i`` is the number of appends that returned; the point being appended when a signal lands may or
# may not have been queued, so the disk holds ``i`` or ``i + 1`` points.
APPEND_FOREVER = """
    t = s.track("loss")
    i = 0
    while True:
        t.append(step=i, value=i * 0.5)
        i += 1
        if i == READY:
            print("ready", flush=True)
"""


@pytest.mark.parametrize("batch_size", [500, 20_000])
def test_sigterm_while_appending(tmp_path: Path, batch_size: int) -> None:
    # Default action of SIGTERM: sessions closed, then the process is killed by the signal.
    # batch_size 500: writes are under way when the signal lands; 20_000: most points still queued.
    script = make_script(
        block("""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with Session(NAME, WS, local_path=ROOT, batch_size=BATCH) as s:
        """),
        block(APPEND_FOREVER, 4),
        **params(tmp_path, READY=30_000, BATCH=batch_size),
    )
    with Child(script) as child:
        child.expect("ready")
        child.signal(signal.SIGTERM)
        status = child.wait(30)
    assert status == -signal.SIGTERM, child.stderr
    no_errors(child.stderr)
    points = read_points(tmp_path, "loss")
    assert len(points) >= 30_000
    check_steps(points)
    agent = read_session_json(tmp_path)["agent"]  # recorded by close(): the session was closed
    assert agent["queued"] == 0
    assert agent["written"] == len(points)


@pytest.mark.parametrize("handler_exit", ["os_exit", "sys_exit"])
def test_sigterm_with_the_programs_own_handler(tmp_path: Path, handler_exit: str) -> None:
    # The program's handler was installed before the session: dreamlake flushes, then calls it.
    # With os._exit nothing else runs (no with-exit, no atexit), so the data must come from the flush.
    marker = tmp_path / "handler-ran.json"
    script = make_script(
        block("""
        def on_term(signum, frame):
            with open(MARKER, "w") as f:
                json.dump({"signum": signum, "appended": i}, f)
            if HANDLER_EXIT == "os_exit":
                os._exit(3)
            sys.exit(3)

        signal.signal(signal.SIGTERM, on_term)
        with Session(NAME, WS, local_path=ROOT, **CFG) as s:
        """),
        block(APPEND_FOREVER, 4),
        **params(tmp_path, READY=5000, MARKER=str(marker), HANDLER_EXIT=handler_exit),
    )
    with Child(script) as child:
        child.expect("ready")
        child.signal(signal.SIGTERM)
        status = child.wait(30)
    assert status == 3, child.stderr
    no_errors(child.stderr)
    ran = json.loads(marker.read_text())
    assert ran["signum"] == signal.SIGTERM
    points = read_points(tmp_path, "loss")
    assert ran["appended"] >= 5000
    assert len(points) in (ran["appended"], ran["appended"] + 1)
    check_steps(points)


def test_sigint_unwinds_out_of_with(tmp_path: Path) -> None:
    # Python's default SIGINT handler raises KeyboardInterrupt: the with block closes the session
    # and the program's own ``except KeyboardInterrupt`` still runs.
    marker = tmp_path / "caught.json"
    script = make_script(
        block("""
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
        i = 0
        try:
            with Session(NAME, WS, local_path=ROOT, **CFG) as s:
        """),
        block(APPEND_FOREVER, 8),
        block("""
        except KeyboardInterrupt:
            with open(MARKER, "w") as f:
                json.dump({"appended": i, "open": s.is_open}, f)
            sys.exit(4)
        """),
        **params(tmp_path, READY=5000, MARKER=str(marker)),
    )
    with Child(script) as child:
        child.expect("ready")
        child.signal(signal.SIGINT)
        status = child.wait(30)
    assert status == 4, child.stderr
    no_errors(child.stderr)
    caught = json.loads(marker.read_text())
    assert caught["open"] is False
    points = read_points(tmp_path, "loss")
    assert caught["appended"] >= 5000
    assert len(points) in (caught["appended"], caught["appended"] + 1)
    check_steps(points)


def test_program_catching_keyboardinterrupt_keeps_logging(tmp_path: Path) -> None:
    script = make_script(
        block("""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with Session(NAME, WS, local_path=ROOT, **CFG) as s:
            t = s.track("loss")
            i = 0
            try:
                while True:
                    t.append(phase="loop", k=i)
                    i += 1
                    if i == READY:
                        print("ready", flush=True)
            except KeyboardInterrupt:
                pass
            print("interrupted", i, s.is_open, flush=True)
            for k in range(AFTER):
                t.append(phase="after", k=k)
            total = t.stats()["totalDataPoints"]
            last = t.read(start_index=total - 1, limit=1)["data"]
            print("read", total, json.dumps(last), flush=True)
        """),
        **params(tmp_path, READY=5000, AFTER=1000),
    )
    with Child(script) as child:
        child.expect("ready")
        child.signal(signal.SIGINT)
        status = child.wait(30)
    assert status == 0, child.stderr
    no_errors(child.stderr)
    word, appended, still_open = child.lines[-2].split()
    assert (word, still_open) == ("interrupted", "True")
    points = read_points(tmp_path, "loss")
    loop = [p for p in points if p["phase"] == "loop"]
    assert len(loop) in (int(appended), int(appended) + 1)
    assert [p["k"] for p in loop] == list(range(len(loop)))
    assert points[len(loop) :] == [{"phase": "after", "k": k} for k in range(1000)]
    total = len(points)
    assert child.lines[-1] == f"read {total} " + json.dumps(
        [{"index": total - 1, "data": {"phase": "after", "k": 999}}]
    )


# Races between a signal and the code it interrupts. A few child scripts patch dreamlake internals to
# make the race certain: a signal sent from inside the code it must interrupt, or a slow disk
# (SLOW_DISK: each write first creates ``ROOT/writing-<pid>``, then sleeps) so that a write is
# surely under way when the signal lands. The test waits for that marker file, never for a time.
SLOW_DISK = """
import dreamlake._disk.session_dir

_original_write = dreamlake._disk.session_dir.SessionDir.write_tracks


def _slow_write(self, writes, intent=None):
    open(os.path.join(ROOT, f"writing-{os.getpid()}"), "w").close()
    time.sleep(WRITE_SECONDS)
    return _original_write(self, writes, intent)


dreamlake._disk.session_dir.SessionDir.write_tracks = _slow_write
"""


def wait_for_file(path: Path, child: Child, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child.proc.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"{path.name} did not appear (child status {child.proc.returncode}):\n{child.stderr}")
        time.sleep(0.005)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_append_holds_the_queue_lock(tmp_path: Path, signum: int) -> None:
    """A signal that lands while ``append`` holds the queue's lock must not deadlock the process.

    The child pins the signal's arrival to that moment: it sends the signal to itself from inside
    ``PointQueue._mark_woken``, which ``wake()`` calls with the lock held (the first append that
    reaches ``batch_size``); the handler runs right there. A real signal lands there whenever it
    arrives during those bytecodes: with ``on_full="drop_oldest"`` and ``max_queue=1`` about half of
    the SIGTERMs did, before the handler learned to step out of the lock.
    """
    marker = tmp_path / "caught.json"
    script = make_script(
        block("""
        import dreamlake._agent.queue

        original = dreamlake._agent.queue.PointQueue._mark_woken
        fired = []

        def mark_woken_then_signal(self):
            if not fired:
                fired.append(True)
                os.kill(os.getpid(), SIGNUM)  # its Python handler runs right here, lock held
            return original(self)

        dreamlake._agent.queue.PointQueue._mark_woken = mark_woken_then_signal
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        i = 0
        try:
            with Session(NAME, WS, local_path=ROOT, batch_size=100, flush_interval=3600.0) as s:
                t = s.track("loss")
                for i in range(N):
                    t.append(step=i)
        except KeyboardInterrupt:
            with open(MARKER, "w") as f:
                json.dump({"appended": i}, f)
        print("fired", bool(fired), flush=True)
        """),
        **params(tmp_path, N=1000, SIGNUM=int(signum), MARKER=str(marker)),
    )
    with Child(script) as child:
        status = child.wait(10)  # a clean run takes well under a second
    if signum == signal.SIGTERM:
        assert status == -signal.SIGTERM, child.stderr
        check_steps(points := read_points(tmp_path, "loss"))
        assert len(points) >= 101  # the 101st point was queued before the signal was sent
    else:
        assert status == 0, child.stderr
        assert child.lines == ["fired True"]
        check_steps(points := read_points(tmp_path, "loss"))
        appended = json.loads(marker.read_text())["appended"]
        assert appended >= 100
        assert len(points) in (appended, appended + 1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_close_still_writes_everything(tmp_path: Path, signum: int) -> None:
    """A signal while ``close()`` is draining the queue (training ended, then the job is stopped).

    The handler must not end the process before that drain is done: SIGTERM's default action waits
    for it; a KeyboardInterrupt the program catches leaves the rest of the drain to the exit hook.
    (An earlier version unregistered the session before draining, so the handler found nothing to
    close and SIGTERM ended the process with the points unwritten.)
    """
    script = make_script(
        block(SLOW_DISK),
        block("""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # batch_size N: nothing is written (and no marker appears) before close() begins.
        s = Session(NAME, WS, local_path=ROOT, batch_size=N, flush_interval=3600.0)
        s.open()
        t = s.track("loss")
        for i in range(N):
            t.append(step=i)
        try:
            s.close()
        except KeyboardInterrupt:
            print("interrupted close", flush=True)
        else:
            print("closed", flush=True)
        """),
        **params(tmp_path, N=5000, WRITE_SECONDS=0.2),
    )
    with Child(script) as child:
        wait_for_file(tmp_path / f"writing-{child.pid}", child)  # close() is draining
        child.signal(signum)
        status = child.wait(30)
    if signum == signal.SIGTERM:
        assert status == -signal.SIGTERM, child.stderr
    else:
        assert status == 0, child.stderr
        assert child.lines == ["interrupted close"]
        no_errors(child.stderr)
    points = read_points(tmp_path, "loss")
    assert len(points) == 5000
    check_steps(points)


def test_second_sigterm_while_the_first_is_still_writing(tmp_path: Path) -> None:
    """A second SIGTERM (an impatient supervisor) re-enters the handler while the first one is
    closing the sessions: it must wait for that close, not end the process with points unwritten."""
    script = make_script(
        block(SLOW_DISK),
        block("""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with Session(NAME, WS, local_path=ROOT, **CFG) as s:
        """),
        block(APPEND_FOREVER, 4),
        **params(tmp_path, READY=5000, WRITE_SECONDS=0.3),
    )
    with Child(script) as child:
        child.expect("ready")
        child.signal(signal.SIGTERM)
        wait_for_file(tmp_path / f"writing-{child.pid}", child)  # the first handler is writing
        child.signal(signal.SIGTERM)
        status = child.wait(30)
    assert status == -signal.SIGTERM, child.stderr
    points = read_points(tmp_path, "loss")
    assert len(points) >= 5000
    check_steps(points)
    assert read_session_json(tmp_path)["agent"]["queued"] == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ignored_signal_flushes_and_stays_ignored(tmp_path: Path, signum: int) -> None:
    # A program (or its launcher: nohup, background jobs) ignores the signal: dreamlake still flushes
    # on it, and the process goes on.
    data = tmp_path / WORKSPACE / SESSION / "tracks" / "loss" / "data.jsonl"
    script = make_script(
        block("""
        signal.signal(SIGNUM, signal.SIG_IGN)
        with Session(NAME, WS, local_path=ROOT, **CFG) as s:
            t = s.track("loss")
            for i in range(N):
                t.append(step=i)
            print("ready", flush=True)
            deadline = time.monotonic() + 30
            while not os.path.exists(DATA) and time.monotonic() < deadline:
                time.sleep(0.005)  # only the signal's flush can write (large batch, long interval)
            with open(DATA) as f:
                print("flushed", sum(1 for _ in f), flush=True)
            for i in range(N, 2 * N):
                t.append(step=i)
        print("done", flush=True)
        """),
        **params(tmp_path, N=3000, SIGNUM=int(signum), DATA=str(data)),
    )
    with Child(script) as child:
        child.expect("ready")
        child.signal(signum)
        status = child.wait(45)
    assert status == 0, child.stderr
    no_errors(child.stderr)
    assert child.lines == ["ready", "flushed 3000", "done"]
    points = read_points(tmp_path, "loss")
    assert len(points) == 6000
    check_steps(points)


def test_sigterm_when_the_first_session_was_opened_in_a_thread(tmp_path: Path) -> None:
    """The signal handlers must be installed by a session opened in the main thread even when an
    earlier session of the process was opened in another thread (where handlers cannot be set).
    (An earlier version installed them only along with the first session, so SIGTERM here ended the
    process with both sessions' points still queued.)"""
    script = make_script(
        block("""
        import threading

        def worker():
            s = Session(NAME + "-thread", WS, local_path=ROOT, **CFG).open()
            t = s.track("loss")
            for i in range(N):
                t.append(step=i)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        s = Session(NAME, WS, local_path=ROOT, **CFG).open()
        t = s.track("loss")
        for i in range(N):
            t.append(step=i)
        print("ready", flush=True)
        signal.pause()
        """),
        **params(tmp_path, N=2000),
    )
    with Child(script) as child:
        child.expect("ready")
        child.signal(signal.SIGTERM)
        status = child.wait(30)
    assert status == -signal.SIGTERM, child.stderr
    for session in (SESSION, SESSION + "-thread"):
        points = read_points(tmp_path, "loss", session=session)
        assert len(points) == 2000, session
        check_steps(points)


@pytest.mark.parametrize("ending", ["sigterm", "atexit"])
def test_logs_parameters_and_a_background_file_save_are_written_on_exit(tmp_path: Path, ending: str) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 3_000_000)
    script = make_script(
        block("""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        s = Session(NAME, WS, local_path=ROOT, **CFG).open()
        for i in range(N):
            s.log("entry", i=i)
        s.parameters().set(model={"lr": 0.1}, epochs=3)
        s.file(SOURCE, prefix="/ckpt").save(wait=False)
        print("ready", flush=True)
        if ENDING == "sigterm":
            time.sleep(60)  # killed by the signal before this ends
        """),
        **params(tmp_path, N=3000, SOURCE=str(source), ENDING=ending),
    )
    with Child(script) as child:
        child.expect("ready")
        if ending == "sigterm":
            child.signal(signal.SIGTERM)
        status = child.wait(30)
    assert status == (-signal.SIGTERM if ending == "sigterm" else 0), child.stderr
    no_errors(child.stderr)
    session = tmp_path / WORKSPACE / SESSION
    logs = [json.loads(line) for line in (session / "logs" / "logs.jsonl").read_text().splitlines()]
    assert [e["metadata"]["i"] for e in logs] == list(range(3000))
    assert json.loads((session / "parameters.json").read_text())["data"] == {"model.lr": 0.1, "epochs": 3}
    (saved,) = json.loads((session / "files" / ".files_metadata.json").read_text())["files"]
    assert (session / "files" / saved["id"] / "weights.bin").read_bytes() == source.read_bytes()
