"""The server's routes over real HTTP: 0.2.x shapes and types, the bulk route, reads across tiers,
bad input refused whole."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
import zstandard

from ._server import ServerProcess

CHUNK = 100  # the fixture server's --chunk-size


@pytest.fixture(scope="module")
def api(server: ServerProcess, token: str) -> httpx.Client:
    with server.client(token) as client:
        yield client


def open_session(api: httpx.Client, name: str, workspace: str = "ws", **fields: Any) -> str:
    r = api.post(f"/workspaces/{workspace}/sessions", json={"name": name, **fields})
    assert r.status_code == 200, r.text
    session_id: str = r.json()["session"]["id"]
    return session_id


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until true; fail at the deadline (an effect, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.02)


def test_health_needs_no_token(server: ServerProcess) -> None:
    with server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}


def test_session_upsert_keeps_one_id_and_merges_fields(api: httpx.Client) -> None:
    first = api.post("/workspaces/ws/sessions", json={"name": "s1", "description": "d", "tags": ["a"]}).json()
    again = api.post("/workspaces/ws/sessions", json={"name": "s1", "folder": "/f"}).json()
    assert first["session"]["id"] == again["session"]["id"]
    assert isinstance(first["session"]["id"], str)
    assert again["session"]["description"] == "d"
    assert again["session"]["folder"] == "/f"
    assert again["session"]["tags"] == ["a"]


def test_append_and_batch_shapes_are_021s(api: httpx.Client) -> None:
    sid = open_session(api, "shapes")
    one = api.post(f"/sessions/{sid}/tracks/loss/append", json={"data": {"value": 1.5, "step": 0}}).json()
    assert one["index"] == "0"
    assert one["bufferedDataPoints"] == "1"
    assert one["chunkSize"] == CHUNK
    assert isinstance(one["trackId"], str)
    batch = api.post(
        f"/sessions/{sid}/tracks/loss/append-batch", json={"dataPoints": [{"value": i} for i in range(5)]}
    ).json()
    assert batch["startIndex"] == "1"
    assert batch["endIndex"] == "5"
    assert batch["count"] == 5
    assert batch["bufferedDataPoints"] == "6"
    assert batch["trackId"] == one["trackId"]
    page = api.get(f"/sessions/{sid}/tracks/loss/data", params={"startIndex": 0, "limit": 3}).json()
    assert [p["index"] for p in page["data"]] == [0, 1, 2]
    assert page["data"][0]["data"] == {"value": 1.5, "step": 0}
    assert all("createdAt" in p for p in page["data"])
    assert (page["startIndex"], page["endIndex"], page["total"], page["hasMore"]) == (0, 2, 3, True)
    stats = api.get(f"/sessions/{sid}/tracks/loss/stats").json()
    assert stats["totalDataPoints"] == "6"
    assert stats["chunkedDataPoints"] == "0"
    assert stats["totalChunks"] == 0
    assert stats["chunkSize"] == CHUNK
    listing = api.get(f"/sessions/{sid}/tracks").json()["tracks"]
    assert [(t["name"], t["totalDataPoints"]) for t in listing] == [("loss", "6")]


def test_field_order_and_nonfinite_floats_survive(api: httpx.Client) -> None:
    sid = open_session(api, "nan")
    body = b'{"data": {"z": 1, "a": NaN, "m": Infinity, "b": -Infinity}}'  # as 0.2.x's json sends it
    r = api.post(
        f"/sessions/{sid}/tracks/t/append", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200, r.text
    raw = api.get(f"/sessions/{sid}/tracks/t/data").content
    assert b"NaN" in raw
    assert b"-Infinity" in raw
    import json

    point = json.loads(raw)["data"][0]["data"]
    assert list(point) == ["z", "a", "m", "b"]
    assert math.isnan(point["a"])
    assert point["m"] == math.inf
    assert point["b"] == -math.inf


def test_reads_cross_the_tiers_by_index(api: httpx.Client) -> None:
    sid = open_session(api, "tiers")
    for start in range(0, 1050, 150):  # batches that straddle chunk boundaries
        points = [{"i": i} for i in range(start, min(start + 150, 1050))]
        assert (
            api.post(f"/sessions/{sid}/tracks/x/append-batch", json={"dataPoints": points}).status_code == 200
        )

    def archived() -> bool:
        return api.get(f"/sessions/{sid}/tracks/x/stats").json()["chunkedDataPoints"] == "1000"

    wait_for(archived)
    stats = api.get(f"/sessions/{sid}/tracks/x/stats").json()
    assert (stats["totalChunks"], stats["bufferedDataPoints"], stats["totalDataPoints"]) == (10, "50", "1050")
    for start, limit in [(0, 1050), (90, 30), (95, 10), (990, 40), (999, 2), (1000, 50), (1049, 5), (300, 1)]:
        page = api.get(f"/sessions/{sid}/tracks/x/data", params={"startIndex": start, "limit": limit}).json()
        expected = list(range(start, min(start + limit, 1050)))
        assert [p["index"] for p in page["data"]] == expected
        assert [p["data"]["i"] for p in page["data"]] == expected
        assert page["hasMore"] == (start + limit < 1050)


def test_missing_track_reads_empty_and_stats_404(api: httpx.Client) -> None:
    sid = open_session(api, "missing")
    page = api.get(f"/sessions/{sid}/tracks/nope/data", params={"startIndex": 5}).json()
    assert page == {"data": [], "startIndex": 5, "endIndex": 4, "total": 0, "hasMore": False}
    r = api.get(f"/sessions/{sid}/tracks/nope/stats")
    assert r.status_code == 404
    assert r.json()["error"] == "unknown track"


def test_slash_names_route_encoded_or_not(api: httpx.Client) -> None:
    sid = open_session(api, "slash")
    assert api.post(f"/sessions/{sid}/tracks/train/loss/append", json={"data": {"v": 1}}).status_code == 200
    assert api.post(f"/sessions/{sid}/tracks/train%2Floss/append", json={"data": {"v": 2}}).status_code == 200
    assert api.post(f"/sessions/{sid}/tracks/a%252Fb/append", json={"data": {"v": 3}}).status_code == 200
    names = sorted(t["name"] for t in api.get(f"/sessions/{sid}/tracks").json()["tracks"])
    assert names == ["a%2Fb", "train/loss"]
    assert api.get(f"/sessions/{sid}/tracks/train/loss/stats").json()["totalDataPoints"] == "2"
    for bad in ["..", "%2E%2E", "a%5Cb", "a%00b"]:
        r = api.post(f"/sessions/{sid}/tracks/{bad}/append", json={"data": {"v": 1}})
        assert r.status_code in (400, 404), (bad, r.status_code)


def test_logs_are_numbered_and_read_back(api: httpx.Client) -> None:
    sid = open_session(api, "logs")
    first = api.post(
        f"/sessions/{sid}/logs",
        json={
            "logs": [
                {"timestamp": "2026-01-01T00:00:00Z", "level": "INFO", "message": "a", "metadata": {"k": 1}}
            ]
        },
    ).json()
    assert first == {"created": 1, "startSequence": 0, "endSequence": 0, "sessionId": sid}
    second = api.post(f"/sessions/{sid}/logs", json={"logs": [{"level": "warn", "message": m} for m in "bc"]})
    assert second.json()["startSequence"] == 1
    assert second.json()["endSequence"] == 2
    page = api.get(f"/sessions/{sid}/logs", params={"startSequence": 1}).json()
    assert [(e["sequenceNumber"], e["level"], e["message"]) for e in page["logs"]] == [
        (1, "warn", "b"),
        (2, "warn", "c"),
    ]
    all_logs = api.get(f"/sessions/{sid}/logs").json()["logs"]
    assert all_logs[0]["metadata"] == {"k": 1}
    assert all_logs[0]["level"] == "info"
    bad = api.post(
        f"/sessions/{sid}/logs",
        json={"logs": [{"level": "info", "message": "ok"}, {"level": "loud", "message": "x"}]},
    )
    assert bad.status_code == 422
    assert len(api.get(f"/sessions/{sid}/logs").json()["logs"]) == 3  # nothing of the refused request


def test_parameters_merge_flat_keys(api: httpx.Client) -> None:
    sid = open_session(api, "params")
    assert api.get(f"/sessions/{sid}/parameters").status_code == 404
    api.post(f"/sessions/{sid}/parameters", json={"data": {"model.lr": 0.1, "model.layers": 2}})
    merged = api.post(
        f"/sessions/{sid}/parameters", json={"data": {"model": {"lr": 0.2}, "opt": "adam"}}
    ).json()
    assert merged["data"] == {"model.lr": 0.2, "model.layers": 2, "opt": "adam"}
    assert merged["version"] == 2
    body = b'{"data": {"inf": Infinity}}'
    api.post(f"/sessions/{sid}/parameters", content=body, headers={"Content-Type": "application/json"})
    import json

    assert json.loads(api.get(f"/sessions/{sid}/parameters").content)["data"]["inf"] == math.inf


def test_files_round_trip_with_checksums(api: httpx.Client, tmp_path: Any) -> None:
    sid = open_session(api, "files")
    payload = bytes(range(256)) * 20_000  # 5 MB
    digest = hashlib.sha256(payload).hexdigest()
    form = {
        "prefix": "/models",
        "checksum": digest,
        "sizeBytes": str(len(payload)),
        "tags": "best,v1",
        "metadata": '{"epoch": 3}',
        "description": "weights",
    }
    meta = api.post(f"/sessions/{sid}/files", files={"file": ("model.pt", payload)}, data=form).json()
    assert meta["checksum"] == digest
    assert meta["sizeBytes"] == len(payload)
    assert meta["path"] == "/models"
    assert meta["tags"] == ["best", "v1"]
    assert meta["metadata"] == {"epoch": 3}
    got = api.get(f"/sessions/{sid}/files/{meta['id']}/download")
    assert hashlib.sha256(got.content).hexdigest() == digest
    assert [
        f["id"] for f in api.get(f"/sessions/{sid}/files", params={"prefix": "/models"}).json()["files"]
    ] == [meta["id"]]
    assert api.get(f"/sessions/{sid}/files", params={"tags": "nope"}).json()["files"] == []
    updated = api.patch(f"/sessions/{sid}/files/{meta['id']}", json={"tags": ["old"]}).json()
    assert updated["tags"] == ["old"]
    assert updated["description"] == "weights"
    # same prefix and name: replaces
    again = api.post(
        f"/sessions/{sid}/files", files={"file": ("model.pt", b"new")}, data={"prefix": "/models"}
    ).json()
    assert [f["id"] for f in api.get(f"/sessions/{sid}/files").json()["files"]] == [again["id"]]
    assert api.get(f"/sessions/{sid}/files/{meta['id']}").status_code == 404
    gone = api.delete(f"/sessions/{sid}/files/{again['id']}").json()
    assert gone["id"] == again["id"]
    assert gone["deletedAt"]
    assert api.get(f"/sessions/{sid}/files/{again['id']}/download").status_code == 404
    wrong = api.post(f"/sessions/{sid}/files", files={"file": ("x.bin", b"abc")}, data={"checksum": "0" * 64})
    assert wrong.status_code == 400
    assert api.get(f"/sessions/{sid}/files").json()["files"] == []


def bulk(
    api: httpx.Client, sid: str, batch: dict[str, Any], key: str, encoding: str = "zstd"
) -> httpx.Response:
    body = msgspec.msgpack.encode(batch)
    if encoding == "zstd":
        body = zstandard.ZstdCompressor().compress(body)
    elif encoding == "gzip":
        body = gzip.compress(body)
    headers = {"Content-Type": "application/msgpack", "Idempotency-Key": key}
    if encoding != "identity":
        headers["Content-Encoding"] = encoding
    return api.post(f"/sessions/{sid}/batches", content=body, headers=headers)


def test_bulk_route_stores_once_per_key(api: httpx.Client) -> None:
    sid = open_session(api, "bulk")
    batch = {
        "tracks": [
            {"name": "loss", "points": [{"v": float(i)} for i in range(250)]},
            {"name": "val/acc", "points": [{"v": 1.0}], "tags": ["val"]},
        ],
        "logs": [{"timestamp": 1_700_000_000.5, "level": "info", "message": "hi"}],
        "parameters": [{"lr": 0.1}, {"lr": 0.2, "bs": 32}],
    }
    first = bulk(api, sid, batch, "writer-1:0")
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["repeat"] is False
    assert [(t["name"], t["startIndex"], t["count"]) for t in doc["tracks"]] == [
        ("loss", 0, 250),
        ("val/acc", 0, 1),
    ]
    assert doc["logs"] == {"startSequence": 0, "count": 1}
    assert doc["parametersVersion"] == 2
    replay = bulk(api, sid, batch, "writer-1:0", encoding="gzip")
    assert replay.status_code == 200
    assert replay.json()["repeat"] is True
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["tracks"] == doc["tracks"]
    assert api.get(f"/sessions/{sid}/tracks/loss/stats").json()["totalDataPoints"] == "250"
    second = bulk(api, sid, batch, "writer-1:1", encoding="identity").json()
    assert second["tracks"][0]["startIndex"] == 250
    assert api.get(f"/sessions/{sid}/logs").json()["logs"][0]["timestamp"] == "2023-11-14T22:13:20.500000Z"
    assert api.get(f"/sessions/{sid}/parameters").json()["data"] == {"lr": 0.2, "bs": 32}


def test_bad_input_is_refused_whole(server: ServerProcess, api: httpx.Client) -> None:
    sid = open_session(api, "bad")
    url = f"/sessions/{sid}/tracks/t/append-batch"
    assert (
        api.post(url, content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    )
    r = api.post(url, json={"dataPoints": [{"v": 1}, 5, {"v": 2}]})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid point"
    assert api.get(f"/sessions/{sid}/tracks/t/stats").status_code == 404  # nothing stored
    bad_bulk = {"tracks": [{"name": "t", "points": [{"v": 1}, "oops"]}]}
    assert bulk(api, sid, bad_bulk, "k-bad").status_code == 422
    assert bulk(api, sid, {"tracks": [{"name": "..", "points": [{"v": 1}]}]}, "k-name").status_code == 400
    assert (
        bulk(api, sid, {"logs": [{"timestamp": 0.0, "level": "loud", "message": "x"}]}, "k-lvl").status_code
        == 422
    )
    assert api.get(f"/sessions/{sid}/tracks").json()["tracks"] == []
    r = api.get(f"/sessions/{sid}/tracks/t/data", params={"limit": 10_001})
    assert r.status_code == 400
    assert "limit" in r.json()["detail"]
    assert api.post("/workspaces/ws/sessions", json={"name": "../x"}).status_code == 400
    assert api.get("/sessions/nope/tracks").status_code == 404


def test_body_limits_before_and_after_inflating(tmp_path: Any) -> None:
    from ._server import make_token

    with ServerProcess(tmp_path / "d", "--max-body", "100000") as small:
        token = make_token(small.data, "ws")
        with small.client(token) as api:
            sid = open_session(api, "limits")
            big = {"dataPoints": [{"v": i} for i in range(20_000)]}
            r = api.post(f"/sessions/{sid}/tracks/t/append-batch", json=big)
            assert r.status_code == 413
            assert r.json()["error"] == "body too large"
            bomb = zstandard.ZstdCompressor().compress(b'{"tracks": [], "pad": "' + b" " * 5_000_000 + b'"}')
            assert len(bomb) < 100_000
            r = api.post(
                f"/sessions/{sid}/batches",
                content=bomb,
                headers={
                    "Content-Type": "application/json",
                    "Content-Encoding": "zstd",
                    "Idempotency-Key": "b",
                },
            )
            assert r.status_code == 413
            assert api.get(f"/sessions/{sid}/tracks").json()["tracks"] == []


def test_fifty_clients_and_one_sending_garbage(server: ServerProcess, token: str) -> None:
    with server.client(token) as api:
        sid = open_session(api, "crowd")
    errors: list[str] = []

    def good(k: int) -> None:
        with server.client(token) as c:
            for j in range(10):
                r = c.post(
                    f"/sessions/{sid}/tracks/t/append-batch", json={"dataPoints": [{"k": k, "j": j}] * 10}
                )
                if r.status_code != 200:
                    errors.append(r.text)

    def garbage() -> None:
        with server.client(token) as c:
            for _ in range(50):
                r = c.post(
                    f"/sessions/{sid}/tracks/t/append-batch",
                    content=b"\xff\x00garbage",
                    headers={"Content-Type": "application/json"},
                )
                if r.status_code != 400:
                    errors.append(f"garbage got {r.status_code}")

    threads = [threading.Thread(target=good, args=(k,)) for k in range(49)] + [
        threading.Thread(target=garbage)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with server.client(token) as api:
        page = api.get(f"/sessions/{sid}/tracks/t/data", params={"limit": 10_000}).json()
    assert [p["index"] for p in page["data"]] == list(range(4900))  # gap-free, no duplicates
    seen = sorted((p["data"]["k"], p["data"]["j"]) for p in page["data"])
    assert seen == sorted((k, j) for k in range(49) for j in range(10) for _ in range(10))


def test_a_replay_after_archiving_is_still_a_repeat(api: httpx.Client) -> None:
    sid = open_session(api, "replay-cold")
    batch = {"tracks": [{"name": "t", "points": [{"i": i} for i in range(3 * CHUNK)]}]}
    assert bulk(api, sid, batch, "w:0").json()["repeat"] is False
    wait_for(lambda: api.get(f"/sessions/{sid}/tracks/t/stats").json()["chunkedDataPoints"] == str(3 * CHUNK))
    replay = bulk(api, sid, batch, "w:0").json()
    assert replay["repeat"] is True
    assert replay["tracks"][0]["startIndex"] == 0
    assert api.get(f"/sessions/{sid}/tracks/t/stats").json()["totalDataPoints"] == str(3 * CHUNK)


def test_bulk_points_as_json_lines_are_stored_as_sent(api: httpx.Client) -> None:
    sid = open_session(api, "lines")
    lines = b'{"v":1.5,"s":"a"}\n{"v":{"$float":"NaN"}}\n{"nested":{"k":[1,2]}}\n'
    doc = bulk(api, sid, {"tracks": [{"name": "t", "lines": lines}]}, "lines:0").json()
    assert doc["tracks"][0]["count"] == 3
    raw = api.get(f"/sessions/{sid}/tracks/t/data").content
    points = [p["data"] for p in json.loads(raw)["data"]]
    assert points[0] == {"v": 1.5, "s": "a"}
    assert math.isnan(points[1]["v"])
    assert points[2] == {"nested": {"k": [1, 2]}}
    for bad in [b'{"v":1}', b"[1]\n", b'{"v":1}\n\n', b'{"v":1} {"w":2}\n', b'{"v":1}\n5\n', b"{oops\n"]:
        r = bulk(api, sid, {"tracks": [{"name": "t", "lines": bad}]}, f"bad:{bad!r}")
        assert r.status_code == 422, (bad, r.text)
    assert api.get(f"/sessions/{sid}/tracks/t/stats").json()["totalDataPoints"] == "3"
