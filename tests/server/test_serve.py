"""``dreamlake serve`` as a process: a request in flight finishes on SIGTERM, a slow client blocks
no one, one debug line per request, and the ready line names a port that answers."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from ._server import ServerProcess, make_token


def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "d")
    try:
        token = make_token(proc.data, "ws")
        with proc.client(token) as api:
            sid = api.post("/workspaces/ws/sessions", json={"name": "s"}).json()["session"]["id"]
        first_part_sent = threading.Event()
        terminated = threading.Event()

        def body() -> Iterator[bytes]:
            yield b'{"dataPoints": [' + b'{"v": 1},' * 1000
            first_part_sent.set()
            terminated.wait(30)  # the rest goes only once the server has been told to stop
            yield b'{"v": 2}]}'

        result: dict[str, httpx.Response] = {}

        def send() -> None:
            with proc.client(token) as api:
                result["r"] = api.post(
                    f"/sessions/{sid}/tracks/t/append-batch",
                    content=body(),
                    headers={"Content-Type": "application/json"},
                )

        sender = threading.Thread(target=send)
        sender.start()
        assert first_part_sent.wait(30)
        os.kill(proc.proc.pid, signal.SIGTERM)
        terminated.set()
        sender.join(60)
        assert result["r"].status_code == 200, result["r"].text
        assert result["r"].json()["count"] == 1001
        assert proc.proc.wait(60) == 0
    finally:
        proc.kill()
    with ServerProcess(tmp_path / "d") as again, again.client(token) as api:
        assert api.get(f"/sessions/{sid}/tracks/t/stats").json()["totalDataPoints"] == "1001"


def test_a_slow_client_blocks_no_one(server: ServerProcess, token: str) -> None:
    with server.client(token) as api:
        sid = api.post("/workspaces/ws/sessions", json={"name": "slow"}).json()["session"]["id"]
    release = threading.Event()
    started = threading.Event()

    def dribble() -> Iterator[bytes]:
        yield b'{"dataPoints": ['
        started.set()
        release.wait(60)
        yield b'{"v": 0}]}'

    def slow() -> None:
        with server.client(token) as api:
            api.post(
                f"/sessions/{sid}/tracks/slow/append-batch",
                content=dribble(),
                headers={"Content-Type": "application/json"},
            )

    slow_thread = threading.Thread(target=slow)
    slow_thread.start()
    try:
        assert started.wait(30)
        with server.client(token) as api:  # served while the slow body is still open
            for i in range(20):
                r = api.post(f"/sessions/{sid}/tracks/fast/append", json={"data": {"i": i}})
                assert r.status_code == 200
            assert api.get(f"/sessions/{sid}/tracks/fast/stats").json()["totalDataPoints"] == "20"
    finally:
        release.set()
        slow_thread.join(60)


def test_debug_logs_one_line_per_request(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "d", "--log-level", "debug") as proc:
        with proc.client() as anonymous:
            assert anonymous.get("/health").status_code == 200
            assert anonymous.get("/sessions/x/tracks").status_code == 401
    logged = "".join(proc.stderr)
    assert "GET /health 200" in logged
    assert "GET /sessions/x/tracks 401" in logged
