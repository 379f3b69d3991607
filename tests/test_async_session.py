"""``AsyncSession`` on asyncio and trio: the async API, backpressure without blocking the loop,
cancellation and Ctrl-C, and the sync ``Session`` called from inside a running loop."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from dreamlake import (
    AsyncSession,
    AsyncTrack,
    FlushTimeoutError,
    InvalidValueError,
    QueueFullError,
    Session,
    SessionClosedError,
)

from . import sinks
from ._subproc import SESSION, WORKSPACE, Child, block, no_errors, read_points

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

# Nothing is written before the code under test asks for it: no batch wakes the agent, no interval passes.
LAZY: dict[str, Any] = {"batch_size": 1_000_000, "max_queue": 2_000_000, "flush_interval": 3600.0}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def logs_of(session_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (session_dir / "logs" / "logs.jsonl").read_text().splitlines()]


async def test_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights" * 1000)
    async with AsyncSession(SESSION, WORKSPACE, local_path=tmp_path, **LAZY) as s:
        track = s.track("loss", description="per step")
        assert isinstance(track, AsyncTrack)
        assert s.track("loss") is track
        for i in range(1000):
            await track.append(value=1.0 / (i + 1), step=i)
        track.append_nowait(value=math.nan, step=1000)
        assert await track.append_batch([{"step": 1001}, {"step": 1002}]) == {"count": 2}
        await s.log("epoch done", level="INFO", epoch=1)
        await s.log(metadata={"epoch": 2}).warn("slow")
        await (await s.parameters().set(model={"lr": 0.1})).set(seed=3)
        meta = await s.file(source, prefix="/models").save()
        tail = await track.read(start_index=998, limit=10)
        assert [p["data"]["step"] for p in tail["data"]] == [998, 999, 1000, 1001, 1002]
        assert math.isnan(tail["data"][2]["data"]["value"])
        assert (await track.stats())["totalDataPoints"] == 1003
        assert [t["name"] for t in await s.tracks()] == ["loss"]
        assert await s.parameters().get(flatten=False) == {"model": {"lr": 0.1}, "seed": 3}
        assert [f["id"] for f in await s.file(prefix="/models").list()] == [meta["id"]]
        out = await s.file(file_id=meta["id"]).download(tmp_path / "copy.bin")
        assert out == str(tmp_path / "copy.bin")
        await s.file(file_id=meta["id"]).update(tags=["best"])
        assert (await s.file(file_id=meta["id"]).delete())["id"] == meta["id"]
    assert len(read_points(tmp_path, "loss")) == 1003
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert [(e["level"], e["message"]) for e in logs_of(s.path)] == [("info", "epoch done"), ("warn", "slow")]
    assert s.agent_stats()["queued"] == 0
    assert not s.is_open


async def test_calls_on_a_closed_session_raise(tmp_path: Path) -> None:
    s = AsyncSession(SESSION, WORKSPACE, local_path=tmp_path)
    with pytest.raises(SessionClosedError):
        s.track("loss")
    async with s:
        track = s.track("loss")
        assert await s.open() is s
    with pytest.raises(SessionClosedError):
        await track.append(step=1)
    with pytest.raises(SessionClosedError):
        await s.log("late")
    with pytest.raises(SessionClosedError):
        await s.open()
    await s.close()  # idempotent


async def test_bad_input_raises_at_the_call(tmp_path: Path) -> None:
    async with AsyncSession(SESSION, WORKSPACE, local_path=tmp_path) as s:
        with pytest.raises(InvalidValueError, match="'bad'"):
            await s.track("loss").append(bad=object())
        with pytest.raises(ValueError, match="level"):
            await s.log("x", level="loud")


async def test_awaited_append_waits_for_room_without_blocking_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sinks.install(monkeypatch, sinks.GatedSink)
    sinks.GatedSink.gate.clear()
    sinks.GatedSink.entered.clear()
    ticks = 0
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await anyio.sleep(0.001)

    async with AsyncSession(SESSION, WORKSPACE, local_path=tmp_path, max_queue=100, batch_size=10) as s:
        track = s.track("loss")
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            for i in range(100):
                await track.append(step=i)  # fills the queue; the agent's first write is stalled
            with anyio.fail_after(30):
                await anyio.to_thread.run_sync(sinks.GatedSink.entered.wait)
            before = ticks
            with anyio.move_on_after(0.3) as waited:
                await track.append(step=100)  # no room: waits, while the loop goes on
            assert waited.cancelled_caught
            assert ticks > before + 10  # the ticker ran while append waited
            with pytest.raises(QueueFullError):
                track.append_nowait(step=-1)  # never waits: block becomes raise
            sinks.GatedSink.gate.set()
            for i in range(100, 300):
                await track.append(step=i)
            done.set()
    steps = [p["step"] for p in read_points(tmp_path, "loss")]
    assert steps == list(range(300))  # the cancelled append queued nothing; the rest in order


async def test_append_nowait_applies_a_dropping_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sinks.install(monkeypatch, sinks.GatedSink)
    sinks.GatedSink.gate.clear()
    with pytest.warns(RuntimeWarning, match="dropped"):  # noqa: PT031
        async with AsyncSession(
            SESSION, WORKSPACE, local_path=tmp_path, max_queue=50, batch_size=10, on_full="drop_newest"
        ) as s:
            track = s.track("loss")
            for i in range(200):
                track.append_nowait(step=i)
            assert s.agent_stats()["dropped"] >= 100
            sinks.GatedSink.gate.set()
    assert len(read_points(tmp_path, "loss")) + s.agent_stats()["dropped"] == 200


async def test_cancelling_the_owner_still_writes_everything(tmp_path: Path) -> None:
    async def owner(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with AsyncSession(SESSION, WORKSPACE, local_path=tmp_path, **LAZY) as s:
            track = s.track("loss")
            for i in range(20_000):
                await track.append(step=i)
            for i in range(100):
                await s.log("entry", i=i)
            await s.parameters().set(lr=0.1)
            task_status.started()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        await tg.start(owner)
        tg.cancel_scope.cancel()
    assert [p["step"] for p in read_points(tmp_path, "loss")] == list(range(20_000))
    assert len(logs_of(tmp_path / WORKSPACE / SESSION)) == 100


async def test_flush_and_close_keep_their_deadlines_on_stalled_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sinks.install(monkeypatch, sinks.SlowFirstWriteSink)
    sinks.SlowFirstWriteSink.release.clear()
    sinks.SlowFirstWriteSink.slowed.clear()
    s = await AsyncSession(SESSION, WORKSPACE, local_path=tmp_path, **LAZY).open()
    for i in range(10):
        await s.track("loss").append(step=i)
    start = time.monotonic()
    with pytest.raises(FlushTimeoutError, match="still in memory"):
        await s.flush(timeout=0.3)  # the write is stalled: stop waiting, let the agent go on
    with pytest.raises(FlushTimeoutError, match="10 points were not written"):
        await s.close(timeout=0.3)
    assert time.monotonic() - start < 10
    sinks.SlowFirstWriteSink.release.set()  # let the abandoned worker thread end


async def test_a_flush_that_times_out_is_finished_by_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sinks.install(monkeypatch, sinks.SlowFirstWriteSink)
    sinks.SlowFirstWriteSink.release.clear()
    sinks.SlowFirstWriteSink.slowed.clear()
    async with AsyncSession(SESSION, WORKSPACE, local_path=tmp_path, **LAZY) as s:
        for i in range(10):
            await s.track("loss").append(step=i)
        with pytest.raises(FlushTimeoutError):
            await s.flush(timeout=0.2)
        sinks.SlowFirstWriteSink.release.set()
        await s.flush()
        assert s.agent_stats()["written"] == 10
    assert len(read_points(tmp_path, "loss")) == 10  # once each: the timed-out write was not redone


async def test_many_sessions_in_one_loop(tmp_path: Path) -> None:
    async def actor(n: int) -> None:
        async with AsyncSession(f"actor-{n}", WORKSPACE, local_path=tmp_path, batch_size=1000) as s:
            track = s.track("reward")
            for i in range(5000):
                await track.append(step=i, actor=n)
                if i % 500 == 0:
                    await anyio.lowlevel.checkpoint()  # let the other actors and agents run

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(actor, n)
    for n in range(8):
        steps = [p["step"] for p in read_points(tmp_path, "reward", session=f"actor-{n}")]
        assert steps == list(range(5000))


async def test_the_loop_never_waits_on_dreamlake(tmp_path: Path) -> None:
    """A probe task measures how late it wakes while 1 M points are appended and flushed."""
    lags: list[float] = []
    finished = anyio.Event()

    async def probe() -> None:
        while not finished.is_set():
            start = time.perf_counter()
            await anyio.sleep(0.002)
            lags.append(time.perf_counter() - start - 0.002)

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe)
        async with AsyncSession(SESSION, WORKSPACE, local_path=tmp_path) as s:
            track = s.track("loss")
            for i in range(1_000_000):
                await track.append(value=0.5, step=i)
                if i % 1000 == 0:
                    await anyio.lowlevel.checkpoint()  # a training step yields; append itself does not
            await s.flush()
        finished.set()
    assert len(read_points(tmp_path, "loss")) == 1_000_000
    assert max(lags) < 0.5, f"the loop was blocked for {max(lags):.3f} s"


async def test_sync_session_inside_a_running_loop(tmp_path: Path) -> None:
    # Jupyter, or an async framework calling sync user code: the sync face must not deadlock.
    with Session(SESSION, WORKSPACE, local_path=tmp_path) as s:
        track = s.track("loss")
        for i in range(1000):
            track.append(step=i)
        assert track.read(start_index=990)["total"] == 10
        s.parameters().set(lr=0.1)
        assert s.parameters().get() == {"lr": 0.1}
        s.flush(timeout=10)
    assert len(read_points(tmp_path, "loss")) == 1000


@pytest.mark.anyio(False)
@pytest.mark.asyncio
async def test_sync_session_inside_pytest_asyncio(tmp_path: Path) -> None:
    with Session(SESSION, WORKSPACE, local_path=tmp_path) as s:
        s.track("loss").append(step=1)
        assert s.track("loss").stats()["totalDataPoints"] == 1


INTERRUPTED = """
import anyio
from dreamlake import AsyncSession

async def main():
    async with AsyncSession(NAME, WS, local_path=ROOT, batch_size=1_000_000, max_queue=2_000_000,
                            flush_interval=3600) as s:
        track = s.track("loss")
        for i in range(N):
            await track.append(step=i)
        print("ready", flush=True)
        await anyio.sleep(60)

try:
    anyio.run(main, backend=BACKEND)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.anyio(False)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_inside_the_loop_still_writes_everything(tmp_path: Path, backend: str) -> None:
    script = "".join(
        f"{name} = {value!r}\n"
        for name, value in {"ROOT": str(tmp_path), "NAME": SESSION, "WS": WORKSPACE, "N": 50_000,
                            "BACKEND": backend}.items()
    ) + block(INTERRUPTED)
    with Child(script) as child:
        child.expect("ready", timeout=60)
        child.signal(signal.SIGINT)
        assert child.wait(60) == 0, child.stderr
        no_errors(child.stderr)
        assert child.lines[-1] == "interrupted"
    assert [p["step"] for p in read_points(tmp_path, "loss")] == list(range(50_000))
