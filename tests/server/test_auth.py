"""Who reaches what: every route against no token, a bad token, another workspace's token, and a
read-only token; 0.2.x self-made tokens only under --dev; --dev only on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from ._server import ServerProcess, make_token

DEV_SECRET = "your-secret-key-change-this-in-production"


def dev_jwt(user: str = "alice") -> str:
    """The token dreamlake 0.2.1 mints from ``user_name``."""
    now = int(time.time())
    return jwt.encode({"userId": "1", "userName": user, "iat": now, "exp": now + 3600}, DEV_SECRET, "HS256")


@pytest.fixture(scope="module")
def setup(server: ServerProcess, token: str) -> dict[str, str]:
    """A session in ``ws`` with a track, a log, parameters and a file."""
    with server.client(token) as c:
        sid = c.post("/workspaces/ws/sessions", json={"name": "guarded"}).json()["session"]["id"]
        c.post(f"/sessions/{sid}/tracks/t/append", json={"data": {"v": 1}})
        c.post(f"/sessions/{sid}/logs", json={"logs": [{"level": "info", "message": "m"}]})
        c.post(f"/sessions/{sid}/parameters", json={"data": {"a": 1}})
        fid = c.post(f"/sessions/{sid}/files", files={"file": ("f.txt", b"x")}, data={"prefix": "/"}).json()[
            "id"
        ]
    return {"sid": sid, "fid": fid}


# (method, path, json body or None, writes?)
ROUTES = [
    ("POST", "/sessions/{sid}/tracks/t/append", {"data": {"v": 2}}, True),
    ("POST", "/sessions/{sid}/tracks/t/append-batch", {"dataPoints": [{"v": 2}]}, True),
    ("GET", "/sessions/{sid}/tracks/t/data", None, False),
    ("GET", "/sessions/{sid}/tracks/t/stats", None, False),
    ("GET", "/sessions/{sid}/tracks", None, False),
    ("POST", "/sessions/{sid}/logs", {"logs": [{"level": "info", "message": "m"}]}, True),
    ("GET", "/sessions/{sid}/logs", None, False),
    ("POST", "/sessions/{sid}/parameters", {"data": {"b": 2}}, True),
    ("GET", "/sessions/{sid}/parameters", None, False),
    ("GET", "/sessions/{sid}/files", None, False),
    ("GET", "/sessions/{sid}/files/{fid}", None, False),
    ("GET", "/sessions/{sid}/files/{fid}/download", None, False),
    ("PATCH", "/sessions/{sid}/files/{fid}", {"tags": ["x"]}, True),
    ("POST", "/sessions/{sid}/batches", {}, True),
]


def call(client: httpx.Client, method: str, path: str, body: object, ids: dict[str, str]) -> httpx.Response:
    headers = {"Idempotency-Key": "auth-test"} if path.endswith("/batches") else {}
    if path.endswith("/batches"):
        return client.request(
            method, path.format(**ids), content=b"{}", headers={**headers, "Content-Type": "application/json"}
        )
    return client.request(method, path.format(**ids), json=body)


@pytest.mark.parametrize(("method", "path", "body", "writes"), ROUTES)
def test_every_route_checks_the_token(
    server: ServerProcess,
    setup: dict[str, str],
    other_token: str,
    read_token: str,
    method: str,
    path: str,
    body: object,
    writes: bool,
) -> None:
    with server.client() as anonymous:
        r = call(anonymous, method, path, body, setup)
        assert r.status_code == 401
        assert r.json()["error"] == "missing token"
    with server.client("dl_not-a-real-token") as bad:
        assert call(bad, method, path, body, setup).status_code == 401
    with server.client(other_token) as other:
        r = call(other, method, path, body, setup)
        assert r.status_code == 404
        assert r.json()["error"] == "unknown session"
    with server.client(read_token) as reader:
        r = call(reader, method, path, body, setup)
        assert r.status_code == (403 if writes else 200), r.text


def test_workspace_scope_and_read_only_on_session_open(
    server: ServerProcess, setup: dict[str, str], other_token: str, read_token: str
) -> None:
    with server.client(other_token) as other:
        assert other.post("/workspaces/ws/sessions", json={"name": "guarded"}).status_code == 403
    with server.client(read_token) as reader:
        opened = reader.post("/workspaces/ws/sessions", json={"name": "guarded", "description": "changed?"})
        assert opened.status_code == 200
        assert opened.json()["session"]["id"] == setup["sid"]
        assert opened.json()["session"]["description"] is None  # opened, not changed
        assert reader.post("/workspaces/ws/sessions", json={"name": "new-one"}).status_code == 403


def test_dev_accepts_021_tokens_and_others_do_not(server: ServerProcess, tmp_path: Path) -> None:
    with server.client(dev_jwt()) as dev:
        assert dev.post("/workspaces/anything/sessions", json={"name": "s"}).status_code == 200
    with ServerProcess(tmp_path / "prod") as prod, prod.client(dev_jwt()) as client:
        r = client.post("/workspaces/ws/sessions", json={"name": "s"})
        assert r.status_code == 401
        assert "--dev" in r.json()["detail"]


def test_jwt_with_configured_secret_is_scoped(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "jwt", "--jwt-secret", "a-secret-of-at-least-thirty-two-bytes!") as proc:
        good = jwt.encode({"workspaces": ["ws"]}, "a-secret-of-at-least-thirty-two-bytes!", "HS256")
        with proc.client(good) as c:
            assert c.post("/workspaces/ws/sessions", json={"name": "s"}).status_code == 200
            assert c.post("/workspaces/other/sessions", json={"name": "s"}).status_code == 403
        with proc.client(
            jwt.encode({"workspaces": ["ws"]}, "another-secret-of-thirty-two-bytes!!", "HS256")
        ) as c:
            assert c.post("/workspaces/ws/sessions", json={"name": "s"}).status_code == 401


def test_dev_refuses_a_public_address(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dreamlake",
            "serve",
            "--dev",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--data",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "loopback" in done.stderr


def test_token_made_while_running_works_at_once(server: ServerProcess) -> None:
    fresh = make_token(server.data, "late", hot=server.hot)
    with server.client(fresh) as c:
        assert c.post("/workspaces/late/sessions", json={"name": "s"}).status_code == 200
    stored = b"".join(f.read_bytes() for f in server.data.rglob("*") if f.is_file())
    assert fresh.encode() not in stored  # only its hash
