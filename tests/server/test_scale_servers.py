"""Several ``dreamlake serve`` processes on one MongoDB + S3, and the services failing under them:
real servers, real SecantusDB and SeaweedFS, clients through a TCP "load balancer"."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dreamlake import FlushTimeoutError, Session

from ._server import ServerProcess, make_token
from ._services import SecantusDB, TcpProxy
from .conftest import ScaleStore, with_database

pytestmark = pytest.mark.timeout(240)

WS = "ws"


def port_of(server: ServerProcess) -> int:
    return int(server.url.rpartition(":")[2])


def serve(store: ScaleStore, tiers: tuple[str, str], data: Path, *args: str, **env: str) -> ServerProcess:
    """A server on ``tiers`` (``--hot``, ``--cold``); ``env`` overrides the store's ``AWS_*``."""
    hot, cold = tiers
    return ServerProcess(data, *args, hot=hot, cold=cold, env={**store.s3.env(), **env})


def read_all(server: ServerProcess, token: str, session: str, track: str) -> list[dict[str, Any]]:
    """Every point of a track over plain HTTP, page by page."""
    with server.client(token) as c:
        sid = c.post(f"/workspaces/{WS}/sessions", json={"name": session}).json()["session"]["id"]
        out: list[dict[str, Any]] = []
        while True:
            params = {"startIndex": len(out), "limit": 10_000}
            page = c.get(f"/sessions/{sid}/tracks/{track}/data", params=params)
            page.raise_for_status()
            out.extend(page.json()["data"])
            if not page.json()["hasMore"]:
                return out


def stats(server: ServerProcess, token: str, session: str, track: str) -> dict[str, Any]:
    with server.client(token) as c:
        sid = c.post(f"/workspaces/{WS}/sessions", json={"name": session}).json()["session"]["id"]
        doc: dict[str, Any] = c.get(f"/sessions/{sid}/tracks/{track}/stats").json()
        return doc


def wait_until_chunked(server: ServerProcess, token: str, session: str, track: str, points: int) -> None:
    """Until the archiver has moved ``points`` points to S3 (it runs every half second)."""
    import time

    deadline = time.monotonic() + 60
    while int(stats(server, token, session, track)["chunkedDataPoints"]) < points:
        assert time.monotonic() < deadline, stats(server, token, session, track)
        time.sleep(0.2)


@pytest.fixture
def tiers(scale: ScaleStore) -> tuple[str, str]:
    return scale.fresh()


@pytest.fixture
def proxies() -> Iterator[list[TcpProxy]]:
    made: list[TcpProxy] = []
    yield made
    for proxy in made:
        proxy.down()


N = 40_000  # points per client
CHUNK = 1000


def test_two_servers_one_track_kill_9_each_nothing_lost_or_doubled(
    scale: ScaleStore, tiers: tuple[str, str], tmp_path: Path, proxies: list[TcpProxy]
) -> None:
    """Two clients append to one track, each through its own "load balancer" to a different server.
    Each server is killed (-9) while points flow and its archiver works (a chunk fills every 1000
    points); the balancer then sends to a third server. Indices stay unique and gap-free, every
    point is stored once, and every chunk is in S3 once."""
    args = ("--chunk-size", str(CHUNK), "--archive-lease", "1")
    token = make_token(tmp_path / "t", WS, hot=tiers[0])
    first, second = (serve(scale, tiers, tmp_path / name, *args) for name in ("s1", "s2"))
    third: list[ServerProcess] = []
    lbs = [TcpProxy(port_of(first)), TcpProxy(port_of(second))]
    proxies.extend(lbs)
    lock = threading.Lock()

    def fail_over(victim: ServerProcess, lb: TcpProxy) -> None:
        victim.kill()
        with lock:
            if not third:
                third.append(serve(scale, tiers, tmp_path / "s3", *args))
        lb.target = port_of(third[0])

    def client(c: int) -> None:
        lb = lbs[c]
        with Session("shared", WS, remote=f"http://127.0.0.1:{lb.port}", api_key=token,
                     local_path=tmp_path / f"c{c}", batch_size=500, flush_interval=0.02) as s:  # fmt: skip
            track = s.track("t")
            for i in range(N):
                track.append(c=c, i=i)
                if i == N // 3 * (c + 1):
                    s.flush(timeout=30)  # some of this client's points are acknowledged by its server
                    fail_over(first if c == 0 else second, lb)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert not any(t.is_alive() for t in threads)
        survivor = third[0]
        points = read_all(survivor, token, "shared", "t")
        assert [p["index"] for p in points] == list(range(2 * N))
        stored = sorted((p["data"]["c"], p["data"]["i"]) for p in points)
        assert stored == [(c, i) for c in range(2) for i in range(N)]
        wait_until_chunked(survivor, token, "shared", "t", 2 * N // CHUNK * CHUNK)
        assert read_all(survivor, token, "shared", "t") == points  # the same, now read from S3
    finally:
        for server in (first, second, *third):
            server.kill()
    assert_chunks_once(scale, tiers, 2 * N // CHUNK)


def assert_chunks_once(store: ScaleStore, tiers: tuple[str, str], chunks: int) -> None:
    """The bucket holds chunk objects ``0..chunks-1`` of the one track, and nothing else."""
    import obstore
    from obstore.store import S3Store

    bucket, _, prefix = tiers[1].removeprefix("s3://").partition("/")
    env = store.s3.env()
    s3 = S3Store(
        bucket, prefix=prefix, endpoint=env["AWS_ENDPOINT_URL"], access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
        client_options={"allow_http": True},
    )  # fmt: skip
    keys = sorted(meta["path"] for batch in obstore.list(s3, "chunks") for meta in batch)
    [track_id] = {key.split("/")[1] for key in keys}
    assert keys == [f"chunks/{track_id}/{k:010d}.jsonl.zst" for k in range(chunks)]


def test_s3_unreachable_for_a_while(
    scale: ScaleStore, tiers: tuple[str, str], tmp_path: Path, proxies: list[TcpProxy]
) -> None:
    """With S3 unreachable the hot tier keeps accepting, archiving waits, reads of hot points work
    and reads of archived ones fail clearly (503); once S3 is back, archiving catches up."""
    proxy = TcpProxy(scale.s3.port)
    proxies.append(proxy)
    server = serve(scale, tiers, tmp_path / "d", "--chunk-size", "100", AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
    try:
        token = make_token(tmp_path / "t", WS, hot=tiers[0])
        with Session("s3-down", WS, remote=server.url, api_key=token, local_path=tmp_path) as s:
            track = s.track("t")
            for i in range(250):
                track.append(i=i)
            s.flush(timeout=30)
            wait_until_chunked(server, token, "s3-down", "t", 200)

            proxy.down()
            for i in range(250, 560):
                track.append(i=i)
            s.flush(timeout=30)  # acknowledged: the hot tier does not need S3
            tail = track.read(start_index=500, limit=100)["data"]
            assert [p["data"]["i"] for p in tail] == list(range(500, 560))
            with server.client(token) as c:
                sid = c.post(f"/workspaces/{WS}/sessions", json={"name": "s3-down"}).json()["session"]["id"]
                cold = c.get(f"/sessions/{sid}/tracks/t/data", params={"startIndex": 0, "limit": 10})
            assert cold.status_code == 503
            assert cold.json()["error"] == "storage unavailable"
            assert "S3" in cold.json()["detail"]
            wait_for_line(server, "archiver pass failed")
            assert int(track.stats()["chunkedDataPoints"]) == 200  # archiving waited

            proxy.up()
            wait_until_chunked(server, token, "s3-down", "t", 500)
            assert [p["data"]["i"] for p in read_all(server, token, "s3-down", "t")] == list(range(560))
    finally:
        server.kill()


def wait_for_line(server: ServerProcess, text: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not any(text in line for line in server.stderr):
        assert time.monotonic() < deadline, "".join(server.stderr)
        time.sleep(0.1)


def test_wrong_s3_secret_or_unreachable_mongodb_fails_start_up_clearly(
    scale: ScaleStore, tiers: tuple[str, str], tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="exited") as failed:
        serve(scale, tiers, tmp_path / "a", AWS_SECRET_ACCESS_KEY="wrong")
    assert "dreamlake serve: cannot start: --cold s3://" in str(failed.value)
    assert "S3 refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in str(
        failed.value
    )

    from ._services import free_ports

    dead = f"mongodb://127.0.0.1:{free_ports(1)[0]}/x?serverSelectionTimeoutMS=300"
    with pytest.raises(RuntimeError, match="exited") as failed:
        serve(scale, (dead, tiers[1]), tmp_path / "b")
    assert "dreamlake serve: cannot start: cannot reach MongoDB at 127.0.0.1" in str(failed.value)


def test_mongodb_restarted_mid_ingest_nothing_acknowledged_is_lost(
    scale: ScaleStore, tmp_path: Path
) -> None:
    """The database stops while a client appends (the server answers 503 and the client keeps the
    points in its journal) and comes back: the server reconnects by itself, every point is stored
    once. Its own SecantusDB, which this test may stop."""
    db = SecantusDB(tmp_path / "db")
    hot = with_database(db.url, "restart") + "?serverSelectionTimeoutMS=1000"
    _, cold = scale.fresh()
    server = serve(scale, (hot, cold), tmp_path / "d", "--chunk-size", "1000")
    try:
        token = make_token(tmp_path / "t", WS, hot=hot)
        with Session("db-restart", WS, remote=server.url, api_key=token, local_path=tmp_path,
                     batch_size=500, flush_interval=0.02) as s:  # fmt: skip
            track = s.track("t")
            for i in range(20_000):
                track.append(i=i)
            s.flush(timeout=30)
            db.stop()
            for i in range(20_000, 30_000):
                track.append(i=i)
            with pytest.raises(FlushTimeoutError):
                s.flush(timeout=2)  # nothing can be acknowledged while the database is down
            db.start()
            for i in range(30_000, 40_000):
                track.append(i=i)
            s.flush(timeout=60)
        points = read_all(server, token, "db-restart", "t")
        assert [p["index"] for p in points] == list(range(40_000))
        assert [p["data"]["i"] for p in points] == list(range(40_000))
        assert any("storage unavailable" in line or "unreachable" in line for line in server.stderr)
    finally:
        server.kill()
        db.stop()

