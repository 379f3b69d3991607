"""The SDK in remote and hybrid mode against a real ``dreamlake serve``: everything arrives once,
reads see what was appended, a dead server never hangs close(), ``dreamlake sync`` sends the rest."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from dreamlake import AsyncSession, ConfigError, Session, StorageError, WriteProtectedError
from dreamlake._agent.spool import HALVES_AT, half_bytes

from ._server import ServerProcess, free_port, make_token

WS = "ws"


def server_points(server: ServerProcess, token: str, session: str, track: str) -> list[dict[str, Any]]:
    """Every point of a track, read over plain HTTP."""
    with server.client(token) as c:
        sid = c.post(f"/workspaces/{WS}/sessions", json={"name": session}).json()["session"]["id"]
        out: list[dict[str, Any]] = []
        while True:
            page = c.get(
                f"/sessions/{sid}/tracks/{track.replace('/', '%2F')}/data",
                params={"startIndex": len(out), "limit": 10_000},
            ).json()
            out.extend(page["data"])
            if not page["hasMore"]:
                return out


def spools(root: Path) -> list[Path]:
    return sorted((root / ".spool").glob("*.spool"))


def test_remote_session_round_trip(
    server: ServerProcess, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))  # where the spool goes
    with Session("remote-1", WS, remote=server.url, api_key=token) as s:
        loss, acc = s.track("train/loss"), s.track("val/acc", description="accuracy")
        for i in range(25_000):
            loss.append(value=1.0 / (i + 1), step=i)
        acc.append(value=math.nan, step=0)
        s.log("hello", level="warn", epoch=1)
        s.parameters().set(model={"lr": 0.1}, opt="adam")
        page = loss.read(start_index=24_990, limit=20)
        assert [p["index"] for p in page["data"]] == list(range(24_990, 25_000))
        assert page["data"][-1]["data"] == {"value": 1.0 / 25_000, "step": 24_999}
        assert loss.stats()["totalDataPoints"] == 25_000
        assert sorted(t["name"] for t in s.tracks()) == ["train/loss", "val/acc"]
        assert s.parameters().get() == {"model.lr": 0.1, "opt": "adam"}
        assert math.isnan(acc.read()["data"][0]["data"]["value"])
        stats = s.agent_stats()
        assert stats["unsentPoints"] == 0
        assert stats["requests"] >= 1
    points = server_points(server, token, "remote-1", "train/loss")
    assert [p["data"]["step"] for p in points] == list(range(25_000))
    assert spools(tmp_path) == []
    assert not (tmp_path / WS).exists()  # remote mode keeps no local copy


def test_hybrid_writes_both(server: ServerProcess, token: str, tmp_path: Path) -> None:
    with Session("hybrid-1", WS, remote=server.url, api_key=token, local_path=tmp_path) as s:
        for i in range(1000):
            s.track("loss").append(step=i)
        s.log("both")
    local = (tmp_path / WS / "hybrid-1" / "tracks" / "loss" / "data.jsonl").read_text().splitlines()
    assert len(local) == 1000
    assert [p["data"]["step"] for p in server_points(server, token, "hybrid-1", "loss")] == list(range(1000))
    assert spools(tmp_path) == []  # everything acknowledged: the journal is gone


def test_files_in_remote_mode(server: ServerProcess, token: str, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(bytes(range(256)) * 10_000)
    with Session("files-1", WS, remote=server.url, api_key=token, local_path=tmp_path) as s:
        meta = s.file(str(source), prefix="/models", tags=["best"]).save()
        assert meta["sizeBytes"] == source.stat().st_size
        assert [f["id"] for f in s.file(prefix="/models").list()] == [meta["id"]]
        out = s.file(file_id=meta["id"]).download(str(tmp_path / "back.bin"))
        assert Path(out).read_bytes() == source.read_bytes()


def test_a_refused_token_fails_open_at_once(server: ServerProcess, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refused"):
        Session("s", WS, remote=server.url, api_key="dl_wrong", local_path=tmp_path).open()
    assert spools(tmp_path) == []


def test_remote_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="api_key"):
        Session("s", WS, remote="http://127.0.0.1:1", local_path=tmp_path)


def test_a_write_refused_for_good_is_raised_and_kept(
    server: ServerProcess, token: str, tmp_path: Path
) -> None:
    s = Session("locked", WS, remote=server.url, api_key=token, local_path=tmp_path).open()
    with server.client(token) as c:  # another client protects the session after we opened it: 403
        c.post(f"/workspaces/{WS}/sessions", json={"name": "locked", "writeProtected": True})
    s.track("t").append(v=1)
    with pytest.warns(RuntimeWarning, match="write-protected"), pytest.raises(StorageError, match="refused"):
        s.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.close()
    # The refused batch is moved aside, whole, and its points leave the spool (nothing waits on it).
    [kept] = (tmp_path / ".refused").glob("*.msgpack")
    moved = msgspec.msgpack.decode(kept.read_bytes())
    assert "403" in moved["reason"]
    assert [t["name"] for t in moved["batch"]["tracks"]] == ["t"]
    assert spools(tmp_path) == []


def test_a_session_protected_on_the_server_refuses_appends_at_once(
    server: ServerProcess, token: str, tmp_path: Path
) -> None:
    with server.client(token) as c:
        c.post(f"/workspaces/{WS}/sessions", json={"name": "protected", "writeProtected": True})
    with Session("protected", WS, remote=server.url, api_key=token, local_path=tmp_path) as s:
        with pytest.raises(WriteProtectedError):
            s.track("t").append(v=1)


def test_dead_server_then_sync_sends_everything_once(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "server"
    with ServerProcess(data, port=port) as first:
        token = make_token(first.data, WS)
        with Session("offline", WS, remote=url, api_key=token, local_path=tmp_path / "root") as s:
            s.track("t").append(i=-1)
    # The server is down from here on: open() does not block, close() gives up on time and says how.
    s = Session("offline", WS, remote=url, api_key=token, local_path=tmp_path / "root").open()
    for i in range(5000):
        s.track("t").append(i=i)
    s.log("while down")
    with pytest.warns(RuntimeWarning, match="dreamlake sync"):
        s.close(timeout=2)
    assert len(spools(tmp_path / "root")) == 1
    sync = [
        sys.executable,
        "-m",
        "dreamlake",
        "sync",
        "--local-path",
        str(tmp_path / "root"),
        "--api-key",
        token,
    ]
    with ServerProcess(data, port=port) as second:
        done = subprocess.run(sync, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        again = subprocess.run(sync, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        points = server_points(second, token, "offline", "t")
    assert [p["data"]["i"] for p in points] == list(range(-1, 5000))
    assert spools(tmp_path / "root") == []


N_RESTART = 300_000


def test_server_restarts_mid_run_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "server"
    server = ServerProcess(data, port=port)
    try:
        token = make_token(data, WS)
        with Session(
            "restart",
            WS,
            remote=url,
            api_key=token,
            local_path=tmp_path,
            batch_size=1000,
            flush_interval=0.05,
        ) as s:
            track = s.track("t")
            seed = random.randrange(1 << 30)
            kills = set(random.Random(seed).sample(range(1, N_RESTART), 3))  # kill -9 at random moments
            for i in range(N_RESTART):
                track.append(i=i)
                if i in kills:
                    server.kill()
                    server = ServerProcess(data, port=port)
        points = server_points(server, token, "restart", "t")
    finally:
        server.kill()
    assert [p["index"] for p in points] == list(range(N_RESTART)), f"seed {seed}"
    assert [p["data"]["i"] for p in points] == list(range(N_RESTART)), f"seed {seed}"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_session_in_remote_mode(
    server: ServerProcess, token: str, tmp_path: Path, backend: str
) -> None:
    async def main() -> list[int]:
        async with AsyncSession(
            f"async-{backend}", WS, remote=server.url, api_key=token, local_path=tmp_path
        ) as s:
            track = s.track("t")
            for i in range(2000):
                await track.append(i=i)
            await s.flush()
            page = await track.read(start_index=0, limit=5000)
            return [p["data"]["i"] for p in page["data"]]

    assert anyio.run(main, backend=backend) == list(range(2000))


def test_user_name_works_against_a_dev_server(server: ServerProcess, token: str, tmp_path: Path) -> None:
    with Session("legacy", WS, remote=server.url, user_name="alice", local_path=tmp_path) as s:
        s.track("t").append(v=1)
        assert s.track("t").stats()["totalDataPoints"] == 1


CHILD = """
import sys, os, signal
from dreamlake import Session, FlushTimeoutError
s = Session("resume", "ws", remote=sys.argv[1], api_key=sys.argv[2], local_path=sys.argv[3]).open()
for i in range(1000):
    s.track("t").append(i=i)
try:
    s.flush(timeout=0.5)  # the server is down: the points wait in the spool
except FlushTimeoutError:
    pass
print("spooled", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_new_run_first_sends_what_a_killed_run_left(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data, root = tmp_path / "server", tmp_path / "root"
    with ServerProcess(data, port=port):
        token = make_token(data, WS)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, url, token, str(root)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -9
    assert child.stdout.strip() == "spooled"
    assert len(spools(root)) == 1  # left by the killed run
    with ServerProcess(data, port=port) as server:
        with Session("resume", WS, remote=url, api_key=token, local_path=root) as s:
            for i in range(1000, 1010):
                s.track("t").append(i=i)
        points = server_points(server, token, "resume", "t")
    assert [p["data"]["i"] for p in points] == list(range(1010))
    assert spools(root) == []


TRICKY = ["train/loss", "a%b", "a/../b", "ünï cødé", "with space", "what?", "#hash", ".logs", "a%2Fb", "a/b"]


@pytest.mark.parametrize("hybrid", [False, True])
def test_track_names_with_slashes_and_friends(
    server: ServerProcess, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hybrid: bool
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    name = f"names-{hybrid}"
    local = {"local_path": tmp_path} if hybrid else {}
    with Session(name, WS, remote=server.url, api_key=token, **local) as s:
        for k, track in enumerate(TRICKY):
            s.track(track).append(k=k)
        assert sorted(t["name"] for t in s.tracks()) == sorted(TRICKY)
        for k, track in enumerate(TRICKY):
            assert s.track(track).read()["data"] == [{"index": 0, "data": {"k": k}}]
            assert s.track(track).stats()["name"] == track
    if hybrid:  # the local copy keeps them flat under tracks/, escaped
        tracks = tmp_path / WS / name / "tracks"
        assert len(list(tracks.iterdir())) == len(TRICKY)
        assert all(p.parent.parent == tracks for p in tracks.rglob("data.jsonl"))


def test_environment_gives_remote_and_token(
    server: ServerProcess, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_REMOTE", server.url)
    monkeypatch.setenv("DREAMLAKE_API_KEY", token)
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    with Session("from-env", WS) as s:
        assert s.remote == server.url
        s.track("t").append(v=1)
    assert [p["data"] for p in server_points(server, token, "from-env", "t")] == [{"v": 1}]
    with Session("local-wins", WS, local_path=tmp_path / "local") as s:  # local_path: not remote
        assert s.remote is None


def test_sync_durability_returns_once_the_server_has_it(
    server: ServerProcess, token: str, tmp_path: Path
) -> None:
    with Session(
        "sync-dur", WS, remote=server.url, api_key=token, local_path=tmp_path, durability="sync"
    ) as s:
        track = s.track("t")
        for i in range(5):
            track.append(i=i)  # returns once acknowledged: the server has it now, no flush needed
            assert [p["data"]["i"] for p in server_points(server, token, "sync-dur", "t")] == list(
                range(i + 1)
            )


def test_the_spool_bound_makes_on_full_apply_and_close_keeps_the_rest(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    s = Session(
        "bounded",
        WS,
        remote=dead,
        api_key="dl_unused",
        local_path=tmp_path,
        max_queue=100_000,
        batch_size=10_000,
        on_full="drop_newest",
    ).open()
    capacity = 2 * half_bytes(100_000) // 64  # records of these points (64 bytes each) the spool holds
    appended = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dead server, the drops, what close() leaves
        while s.agent_stats()["dropped"] == 0:
            assert appended < capacity, "the spool never filled"
            # A burst well under max_queue, on an empty queue: only the spool can drop from it.
            for _ in range(10_000):
                s.track("t").append(i=appended, pad="x" * 20)
                appended += 1
            deadline = time.monotonic() + 30
            while s.agent_stats()["queued"] and time.monotonic() < deadline:
                time.sleep(0.01)
            assert s.agent_stats()["queued"] == 0
        (spool,) = spools(tmp_path)
        assert spool.stat().st_blocks * 512 <= HALVES_AT + 2 * half_bytes(100_000)  # its two halves
        s.close(timeout=5)
    accepted = appended - s.agent_stats()["dropped"]
    # The spool filled (between one and two halves: the first flush seals what it holds by then).
    assert capacity / 2 - 20_000 < accepted <= capacity
    assert s.agent_stats()["unsentPoints"] == accepted  # everything accepted was handed over...
    (left,) = spools(tmp_path)  # ... and waits in the spool for 'dreamlake sync'
    assert left == spool


SEED = """
import os, sys
from dreamlake import Session
kw = dict(remote=sys.argv[1], api_key=sys.argv[2])
if sys.argv[3] != "-":
    kw["local_path"] = sys.argv[3]
with Session(name=sys.argv[4], workspace="ws", **kw) as session:
    session.track("train_loss").append(value=0.5, epoch=1)
    session.track("accuracy").append(value=0.85, step=100, epoch=1)
    session.track("metrics").append(loss=0.5, accuracy=0.85, learning_rate=0.001, epoch=1)
    result = session.track("train_loss").append_batch([
        {"value": 0.5, "step": 1, "epoch": 1},
        {"value": 0.45, "step": 2, "epoch": 1},
    ])
    assert result["count"] == 2, result
    for i in range(100):
        session.track("loss").append(value=1.0 / (i + 1), step=i)
    result = session.track("loss").read(start_index=0, limit=10)
    assert [p["index"] for p in result["data"]] == list(range(10)), result
    session.parameters().set(learning_rate=0.001, batch_size=32)
    session.log("Starting training")
    stats = session.track("loss").stats()
    assert stats["totalDataPoints"] == 100, stats
    names = {t["name"] for t in session.track("loss").list_all()}
    assert names == {"train_loss", "accuracy", "metrics", "loss"}, names
print("ok")
"""


@pytest.mark.parametrize("hybrid", [False, True])
def test_the_docs_examples_in_remote_and_hybrid_mode(
    server: ServerProcess, token: str, tmp_path: Path, hybrid: bool
) -> None:
    local = str(tmp_path / "local") if hybrid else "-"
    env = {**os.environ, "DREAMLAKE_LOCAL_PATH": str(tmp_path / "spool")}
    done = subprocess.run(
        [sys.executable, "-c", SEED, server.url, token, local, f"seed-{hybrid}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert [p["data"]["step"] for p in server_points(server, token, f"seed-{hybrid}", "loss")][-100:] == list(
        range(100)
    )
