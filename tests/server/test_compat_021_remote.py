"""The published dreamlake 0.2.1 in remote mode against a real ``dreamlake serve`` (DESIGN §4.1).

A session-scoped fixture installs ``dreamlake==0.2.1`` from the package index into a throwaway venv
(the only reason to skip: the index cannot be reached), as ``tests/test_compat_021.py`` does. 0.2.1
runs there in child processes that cannot see this checkout (``python -I``, an empty cwd, no
``PYTHONPATH``), driven by the scripts below, and talks to the module's server (``--dev
--chunk-size 100``) with ``user_name`` (a JWT it signs itself, accepted under ``--dev``) or with a
token made by ``dreamlake token create``. Every remote call 0.2.1 makes is exercised: session
upsert, track append / append-batch / data / stats / list, parameters set / get, logs, and file
upload / list / get / download / update / delete. What 0.2.1 wrote is then read with plain httpx,
and must be the same values.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .._dl021 import Venv021, install_021
from ._server import ServerProcess
from ._services import damage_object

pytestmark = pytest.mark.timeout(300)

WS = "ws"  # the conftest token reaches ws and ws2
CHUNK = 100  # the fixture server's --chunk-size
# pip output that means the package index could not be reached (the one reason to skip).
# The timestamp 0.2.1 puts on a log entry: datetime.utcnow().isoformat() + "Z".
STAMP_021 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")

# What every script starts with: argv is URL CREDENTIAL WORKSPACE SESSION SPEC_JSON, where
# CREDENTIAL is ``user_name=NAME`` (0.2.1 mints a JWT) or ``api_key=TOKEN``. Python's json is used on
# both ends, so a spec or a result may carry NaN/Infinity, and str/int/float stay distinct.
_PRELUDE = r"""
import hashlib
import json
import os
import sys
import time
from importlib.metadata import version

import httpx

import dreamlake
from dreamlake import Session

url, credential, workspace, name, spec = sys.argv[1:6]
spec = json.loads(spec)
kind, _, secret = credential.partition("=")
auth = {kind: secret}


def session(**fields):
    return Session(name=name, workspace=workspace, remote=url, **auth, **fields)


out = {"version": version("dreamlake"), "module": dreamlake.__file__, "httpx": httpx.__version__}
"""
_EPILOGUE = "\nprint(json.dumps(out))\n"


def _script(body: str) -> str:
    return _PRELUDE + textwrap.dedent(body) + _EPILOGUE


# Open the session with ``fields``, then again with none (0.2.1 sends only the name), then the same
# name in each of ``elsewhere`` (the session id, or the HTTP status 0.2.1 raised).
OPEN = _script(
    """
    with session(**spec["fields"]) as s:
        out["first"] = {"id": s.id, "data": s.data}
    with session() as s:
        out["again"] = {"id": s.id, "data": s.data}
    out["elsewhere"] = {}
    for other in spec.get("elsewhere", []):
        try:
            with Session(name=name, workspace=other, remote=url, **auth) as s:
                out["elsewhere"][other] = s.id
        except httpx.HTTPStatusError as exc:
            out["elsewhere"][other] = exc.response.status_code
    """
)

# Everything but files, in this order, each section optional:
#   tracks: {name: {"fields": {...}, "append": [point], "batch": [point]}} -> out["appends"][name]
#   wait:   {"track", "chunked", "timeout"}: poll stats() until chunkedDataPoints == chunked
#   params: [kwargs of one parameters().set()] -> out["params_seen"]: get() before and after each
#   logs:   [{"message", "level", "metadata"?, "style"?}] (style as in _compat021_scripts.WRITE)
#   reads:  [[track, start, limit]] -> out["reads"];  stats: [track];  list: a track to list_all() from
RUN = _script(
    """
    with session() as s:
        out["session_id"] = s.id
        out["appends"] = {}
        for track_name, ops in spec.get("tracks", {}).items():
            track = s.track(track_name, **ops.get("fields", {}))
            results = [track.append(**point) for point in ops.get("append", [])]
            if ops.get("batch"):
                results.append(track.append_batch(ops["batch"]))
            out["appends"][track_name] = results
        if "wait" in spec:
            wait = spec["wait"]
            deadline = time.monotonic() + wait["timeout"]
            while True:
                stats = s.track(wait["track"]).stats()
                if stats["chunkedDataPoints"] == wait["chunked"] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            out["waited"] = stats
        if "params" in spec:
            out["params_seen"] = [s.parameters().get()]
            for params in spec["params"]:
                s.parameters().set(**params)
                out["params_seen"].append(s.parameters().get())
            out["params_nested"] = s.parameters().get(flatten=False)
        for entry in spec.get("logs", []):
            if entry.get("style") == "fluent":
                getattr(s.log(metadata=entry.get("metadata")), entry["level"])(entry["message"])
            elif entry.get("style") == "kwargs":
                s.log(entry["message"], level=entry["level"], **entry["metadata"])
            else:
                s.log(entry["message"], level=entry["level"], metadata=entry.get("metadata"))
        out["reads"] = [s.track(t).read(start_index=a, limit=n) for t, a, n in spec.get("reads", [])]
        out["stats"] = {t: s.track(t).stats() for t in spec.get("stats", [])}
        if "list" in spec:
            out["list_all"] = s.track(spec["list"]).list_all()
    """
)

# Files: save each of ``files``; list all, by prefix, by tag; download each (0.2.1 checks the
# SHA-256 itself); update the first with ``update``; delete it; list again; download it again.
FILES = _script(
    """
    def sha256(path):
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()

    with session() as s:
        out["session_id"] = s.id
        out["saved"] = [
            s.file(file_path=f["path"], prefix=f["prefix"], tags=f["tags"], description=f["description"],
                   metadata=f["metadata"]).save()
            for f in spec["files"]
        ]
        out["all"] = s.file().list()
        out["by_prefix"] = {p: [f["id"] for f in s.file(prefix=p).list()] for p in spec["prefixes"]}
        out["by_tags"] = {",".join(t): [f["id"] for f in s.file(tags=t).list()] for t in spec["tags"]}
        out["downloads"] = {}
        for f in out["saved"]:
            path = s.file(file_id=f["id"], dest_path=os.path.join(spec["dest"], f["id"])).download()
            out["downloads"][f["id"]] = sha256(path)
        first = out["saved"][0]["id"]
        out["updated"] = s.file(file_id=first, **spec["update"]).update()
        out["all_updated"] = s.file().list()
        out["deleted"] = s.file(file_id=first).delete()
        out["all_deleted"] = s.file().list()
        try:
            s.file(file_id=first, dest_path=os.path.join(spec["dest"], "gone")).download()
            out["download_deleted"] = "downloaded"
        except httpx.HTTPStatusError as exc:
            out["download_deleted"] = exc.response.status_code
    """
)

# Download ``ids`` into ``dest``: the SHA-256 of each, or the error 0.2.1 raised.
DOWNLOAD = _script(
    """
    out["downloads"] = {}
    with session() as s:
        for file_id in spec["ids"]:
            try:
                path = s.file(file_id=file_id, dest_path=os.path.join(spec["dest"], file_id)).download()
                with open(path, "rb") as fh:
                    out["downloads"][file_id] = hashlib.sha256(fh.read()).hexdigest()
            except Exception as exc:
                out["downloads"][file_id] = f"{type(exc).__name__}: {exc}"
    """
)


@dataclass(frozen=True)
class Dreamlake021(Venv021):
    """0.2.1 talking to a server."""

    def run(
        self, script: str, url: str, credential: str, session: str, spec: dict[str, Any], workspace: str = WS
    ) -> dict[str, Any]:
        """Run ``script`` against the server at ``url``; what it printed, checked to come from 0.2.1."""
        result: dict[str, Any] = self.python_json(
            "-c", script, url, credential, workspace, session, json.dumps(spec)
        )
        assert result["version"] == "0.2.1"
        assert Path(result["module"]).resolve().is_relative_to(self.venv.resolve()), result["module"]
        return result


@pytest.fixture(scope="session")
def dl021(tmp_path_factory: pytest.TempPathFactory) -> Dreamlake021:
    """0.2.1 with the newest dependencies it allows."""
    return install_021(Dreamlake021, tmp_path_factory.mktemp("dreamlake-0.2.1-remote"))


@pytest.fixture(scope="session")
def dl021_httpx027(tmp_path_factory: pytest.TempPathFactory) -> Dreamlake021:
    """0.2.1 with httpx 0.27 (it allows ``httpx>=0.27``): the httpx that sends NaN/Infinity as Python's
    bare tokens. httpx 0.28 refuses to encode them (``allow_nan=False``), so with it 0.2.1 cannot send
    a non-finite float at all."""
    return install_021(Dreamlake021, tmp_path_factory.mktemp("dreamlake-0.2.1-httpx027"), "httpx>=0.27,<0.28")


@pytest.fixture(scope="module")
def api(server: ServerProcess, token: str) -> Iterator[httpx.Client]:
    """Plain httpx with the token for ``ws``: how the tests read what 0.2.1 wrote."""
    with server.client(token) as client:
        yield client


@pytest.fixture(params=["user_name", "api_key"])
def credential(request: pytest.FixtureRequest, token: str) -> str:
    """0.2.1's two ways to authenticate: a self-signed JWT (``--dev``) or a ``token create`` token."""
    return "user_name=alice" if request.param == "user_name" else f"api_key={token}"


def http_json(response: httpx.Response) -> Any:
    """A response's JSON as 0.2.x parses it (Python's json: bare NaN/Infinity allowed)."""
    assert response.status_code == 200, response.text
    return json.loads(response.content)


def http_read(api: httpx.Client, sid: str, track: str, start: int = 0, limit: int = 10_000) -> Any:
    return http_json(
        api.get(f"/sessions/{sid}/tracks/{track}/data", params={"startIndex": start, "limit": limit})
    )


def points_of(read: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(p["index"], p["data"]) for p in read["data"]]


def bounds(read: dict[str, Any]) -> tuple[Any, ...]:
    """A read's ``startIndex, endIndex, total, hasMore``."""
    return read["startIndex"], read["endIndex"], read["total"], read["hasMore"]


def counts(stats: dict[str, Any]) -> tuple[Any, ...]:
    """A stats' ``totalDataPoints, bufferedDataPoints, chunkedDataPoints, totalChunks``."""
    return (
        stats["totalDataPoints"],
        stats["bufferedDataPoints"],
        stats["chunkedDataPoints"],
        stats["totalChunks"],
    )


def same_floats(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (and a float never equals an int or a str)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same_floats(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_floats(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_open_is_an_upsert_with_one_id(
    dl021: Dreamlake021, server: ServerProcess, api: httpx.Client, credential: str
) -> None:
    kind = credential.partition("=")[0]
    fields = {"description": "first run", "tags": ["a", "b"], "folder": "/exp", "metadata": {"k": 1}}
    got = dl021.run(OPEN, server.url, credential, f"open-{kind}", {"fields": fields, "elsewhere": ["other"]})
    first, again = got["first"], got["again"]
    assert isinstance(first["id"], str)
    assert first["id"] == again["id"]
    assert first["data"]["session"]["id"] == first["id"]
    for doc in (first["data"]["session"], again["data"]["session"]):
        assert doc["name"] == f"open-{kind}"
        assert {key: doc[key] for key in fields} == fields  # the second open (name only) kept them
    by_http = http_json(api.post(f"/workspaces/{WS}/sessions", json={"name": f"open-{kind}"}))
    assert by_http["session"]["id"] == first["id"]
    if kind == "api_key":  # the token reaches ws and ws2 only: 0.2.1 sees the refusal as an HTTP error
        assert got["elsewhere"] == {"other": 403}
    else:  # a self-signed 0.2.x token reaches every workspace under --dev
        assert isinstance(got["elsewhere"]["other"], str)
        assert got["elsewhere"]["other"] != first["id"]


LOSS_APPEND: list[dict[str, Any]] = [
    {"value": 1.0, "step": 0},
    {"value": 0.75, "step": 1},
    {"step": 2, "value": 0.5},
]
LOSS_BATCH: list[dict[str, Any]] = [
    {"value": 0.25 / (i + 1), "step": 3 + i, "note": f"b{i}"} for i in range(4)
]
ACC_FIELDS = {"description": "eval accuracy", "tags": ["eval"], "metadata": {"unit": "ratio"}}
ACC_APPEND: list[dict[str, Any]] = [
    {"acc": 0.9, "deep": {"l": [1, {"x": "y"}], "ok": True, "none": None}, "big": 2**40}
]
ACC_BATCH: list[dict[str, Any]] = [{"acc": 0.93, "label": "h\u00e9llo \u2713"}, {"acc": 0.95, "epoch": 3}]


def test_tracks_keep_021_types(
    dl021: Dreamlake021, server: ServerProcess, api: httpx.Client, credential: str
) -> None:
    kind = credential.partition("=")[0]
    spec = {
        "tracks": {
            "loss": {"append": LOSS_APPEND, "batch": LOSS_BATCH},
            "eval/acc": {"fields": ACC_FIELDS, "append": ACC_APPEND, "batch": ACC_BATCH},  # sent unencoded
        },
        "reads": [["loss", 0, 1000], ["loss", 2, 3], ["eval/acc", 0, 10], ["missing", 0, 10], ["loss", 7, 5]],
        "stats": ["loss", "eval/acc"],
        "list": "loss",
    }
    got = dl021.run(RUN, server.url, credential, f"tracks-{kind}", spec)
    sid = got["session_id"]

    loss = got["appends"]["loss"]
    loss_id = loss[0]["trackId"]
    assert isinstance(loss_id, str)
    assert loss[:3] == [
        {"trackId": loss_id, "index": str(i), "bufferedDataPoints": str(i + 1), "chunkSize": CHUNK}
        for i in range(3)
    ]
    assert loss[3] == {
        "trackId": loss_id,
        "startIndex": "3",
        "endIndex": "6",
        "count": 4,
        "bufferedDataPoints": "7",
        "chunkSize": CHUNK,
    }
    acc = got["appends"]["eval/acc"]
    assert acc[0]["index"] == "0"
    assert acc[1]["startIndex"] == "1"
    assert acc[1]["endIndex"] == "2"
    assert acc[1]["trackId"] == acc[0]["trackId"] != loss_id

    everything, page, acc_read, missing, past_end = got["reads"]
    loss_points = [*LOSS_APPEND, *LOSS_BATCH]
    assert points_of(everything) == list(enumerate(loss_points))
    assert [list(p["data"]) for p in everything["data"]] == [list(p) for p in loss_points]  # field order kept
    assert all(isinstance(p["createdAt"], str) and p["createdAt"] for p in everything["data"])
    assert bounds(everything) == (0, 6, 7, False)
    assert points_of(page) == list(enumerate(loss_points))[2:5]
    assert bounds(page) == (2, 4, 3, True)
    assert points_of(acc_read) == list(enumerate([*ACC_APPEND, *ACC_BATCH]))
    assert missing == {"data": [], "startIndex": 0, "endIndex": -1, "total": 0, "hasMore": False}
    assert past_end["data"] == []
    assert past_end["hasMore"] is False

    stats = got["stats"]["loss"]
    assert (stats["trackId"], stats["name"]) == (loss_id, "loss")
    assert counts(stats) == ("7", "7", "0", 0)
    assert stats["chunkSize"] == CHUNK
    assert isinstance(stats["createdAt"], str)
    assert isinstance(stats["updatedAt"], str)
    acc_stats = got["stats"]["eval/acc"]
    assert {key: acc_stats[key] for key in ACC_FIELDS} == ACC_FIELDS
    assert acc_stats["totalDataPoints"] == "3"
    listed = sorted((t["name"], t["totalDataPoints"], t["trackId"]) for t in got["list_all"])
    assert listed == [("eval/acc", "3", acc[0]["trackId"]), ("loss", "7", loss_id)]

    # Plain httpx reads the same values (slash names percent-encoded this time).
    assert http_read(api, sid, "loss") == everything
    assert http_read(api, sid, "eval%2Facc", 0, 10) == acc_read
    assert http_json(api.get(f"/sessions/{sid}/tracks/loss/stats")) == stats
    assert http_json(api.get(f"/sessions/{sid}/tracks"))["tracks"] == got["list_all"]


def test_read_crosses_the_tiers(dl021: Dreamlake021, server: ServerProcess, api: httpx.Client) -> None:
    points = [{"i": i, "sq": i * i} for i in range(250)]
    spec = {
        "tracks": {"x": {"batch": points}},
        "wait": {"track": "x", "chunked": "200", "timeout": 30},
        "reads": [["x", 150, 111], ["x", 0, 10_000], ["x", 199, 2]],
        "stats": ["x"],
    }
    got = dl021.run(RUN, server.url, "user_name=alice", "tiers", spec)
    [batch] = got["appends"]["x"]
    assert (batch["startIndex"], batch["endIndex"], batch["count"]) == ("0", "249", 250)
    assert batch["bufferedDataPoints"] in ("250", "150", "50")  # the archiver may already have run
    assert got["waited"]["chunkedDataPoints"] == "200", (
        f"the archiver did not move two chunks: {got['waited']}"
    )
    stats = got["stats"]["x"]
    assert counts(stats) == ("250", "50", "200", 2)
    assert stats["chunkSize"] == CHUNK

    across, whole, seam = got["reads"]
    assert points_of(across) == list(enumerate(points))[150:250]  # 150..199 cold, 200..249 hot
    assert bounds(across) == (150, 249, 100, False)
    assert all(isinstance(p["createdAt"], str) and p["createdAt"] for p in across["data"])
    assert points_of(whole) == list(enumerate(points))
    assert points_of(seam) == [(199, points[199]), (200, points[200])]
    assert seam["hasMore"] is True
    assert http_read(api, got["session_id"], "x", 150, 111) == across


def test_nonfinite_floats_round_trip(
    dl021_httpx027: Dreamlake021, server: ServerProcess, api: httpx.Client
) -> None:
    specials = [math.nan, math.inf, -math.inf]
    first = {"v": math.nan, "nested": {"x": math.inf, "l": [-math.inf, 1.5]}}
    batch = [{"i": i, "v": specials[i % 3]} for i in range(1, 130)]  # 130 points: chunk 0 goes cold
    params = [{"lr": math.nan, "clip": {"max": math.inf, "min": -math.inf}, "ok": 1.0}]
    logs = [{"message": "diverged", "level": "warn", "metadata": {"loss": math.nan, "grad": -math.inf}}]
    spec = {
        "tracks": {"odd": {"append": [first], "batch": batch}},
        "wait": {"track": "odd", "chunked": "100", "timeout": 30},
        "params": params,
        "logs": logs,
        "reads": [["odd", 0, 1000]],
    }
    got = dl021_httpx027.run(RUN, server.url, "user_name=alice", "nonfinite", spec)
    assert got["httpx"].startswith("0.27."), got["httpx"]
    assert got["waited"]["chunkedDataPoints"] == "100", got["waited"]
    expected = [first, *batch]
    [read] = got["reads"]
    assert [p["index"] for p in read["data"]] == list(range(130))
    for sent, point in zip(expected, read["data"], strict=True):  # from both tiers, floats again in 0.2.1
        assert same_floats(point["data"], sent), (point, sent)
    flat = {"lr": math.nan, "clip.max": math.inf, "clip.min": -math.inf, "ok": 1.0}
    assert got["params_seen"][0] == {}
    assert same_floats(got["params_seen"][1], flat), got["params_seen"]

    sid = got["session_id"]
    assert same_floats(http_read(api, sid, "odd")["data"], read["data"])
    assert same_floats(http_json(api.get(f"/sessions/{sid}/parameters"))["data"], flat)
    [entry] = http_json(api.get(f"/sessions/{sid}/logs"))["logs"]
    assert same_floats(entry["metadata"], logs[0]["metadata"]), entry


PARAMS = [
    {"model": {"lr": 0.001, "layers": {"hidden": 128, "act": "relu"}}, "optimizer": "adam", "seeds": [1, 2]},
    {"model": {"lr": 0.0005}, "epochs": 10, "model.layers.act": "gelu"},
]
PARAMS_FLAT = [
    {
        "model.lr": 0.001,
        "model.layers.hidden": 128,
        "model.layers.act": "relu",
        "optimizer": "adam",
        "seeds": [1, 2],
    },
    {
        "model.lr": 0.0005,
        "model.layers.hidden": 128,
        "model.layers.act": "gelu",
        "optimizer": "adam",
        "seeds": [1, 2],
        "epochs": 10,
    },
]


def test_parameters_flatten_and_merge(dl021: Dreamlake021, server: ServerProcess, api: httpx.Client) -> None:
    got = dl021.run(RUN, server.url, "user_name=alice", "params", {"params": PARAMS})
    assert got["params_seen"] == [{}, *PARAMS_FLAT]  # {} before any set: 0.2.1 swallows the 404
    assert got["params_nested"] == {
        "model": {"lr": 0.0005, "layers": {"hidden": 128, "act": "gelu"}},
        "optimizer": "adam",
        "seeds": [1, 2],
        "epochs": 10,
    }
    doc = http_json(api.get(f"/sessions/{got['session_id']}/parameters"))
    assert doc["data"] == PARAMS_FLAT[-1]
    assert doc["version"] == 2


LOGS: list[dict[str, Any]] = [
    {"message": "training started", "level": "INFO", "metadata": {"epoch": 0}},
    {"message": "no metadata here", "level": "debug"},
    {
        "message": "loss is high",
        "level": "warn",
        "metadata": {"loss": 1.5, "where": "h\u00e9llo"},
        "style": "kwargs",
    },
    {"message": "checkpoint failed", "level": "error", "metadata": {"code": 500}, "style": "fluent"},
    {
        "message": "out of memory \u2713",
        "level": "fatal",
        "metadata": {"gpu": 0, "free": None},
        "style": "fluent",
    },
]


def test_logs_are_numbered_and_read_back(
    dl021: Dreamlake021, server: ServerProcess, api: httpx.Client
) -> None:
    first = dl021.run(RUN, server.url, "user_name=alice", "logs", {"logs": LOGS})
    again = dl021.run(RUN, server.url, "user_name=alice", "logs", {"logs": LOGS[:2]})  # a second process
    sid = first["session_id"]
    assert again["session_id"] == sid
    logs = http_json(api.get(f"/sessions/{sid}/logs"))["logs"]
    sent = [*LOGS, *LOGS[:2]]
    assert [e["sequenceNumber"] for e in logs] == list(range(len(sent)))
    assert [(e["level"], e["message"]) for e in logs] == [(s["level"].lower(), s["message"]) for s in sent]
    assert [e.get("metadata") for e in logs] == [s.get("metadata") for s in sent]
    assert all(STAMP_021.fullmatch(e["timestamp"]) for e in logs), [e["timestamp"] for e in logs]
    assert [e["timestamp"] for e in logs] == sorted(e["timestamp"] for e in logs)
    page = http_json(api.get(f"/sessions/{sid}/logs", params={"startSequence": 4, "limit": 2}))
    assert [e["sequenceNumber"] for e in page["logs"]] == [4, 5]
    assert page["hasMore"] is True


def test_files_round_trip_with_checksums(
    dl021: Dreamlake021, server: ServerProcess, api: httpx.Client, tmp_path: Path
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    model = src / "model.bin"
    model.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several of the server's 1 MiB stream pieces
    ckpt = src / "ckpt.pt"
    ckpt.write_bytes(b"checkpoint" * 1000)
    notes = src / "notes.txt"
    notes.write_text("h\u00e9llo\n" * 10, encoding="utf-8")
    files: list[dict[str, Any]] = [
        {
            "path": str(model),
            "prefix": "/models",
            "tags": ["best", "v1"],
            "description": "best model",
            "metadata": {"epoch": 3, "acc": 0.95},
        },
        {"path": str(ckpt), "prefix": "/models/ckpt", "tags": ["v1"], "description": None, "metadata": None},
        {"path": str(notes), "prefix": "/docs", "tags": ["notes"], "description": None, "metadata": None},
    ]
    spec = {
        "files": files,
        "prefixes": ["/models", "/models/ckpt", "/docs", "/nothing"],
        "tags": [["best"], ["v1"], ["notes", "best"], ["nope"]],
        "dest": str(dest),
        "update": {"description": "renamed", "tags": ["old"], "metadata": {"epoch": 4}},
    }
    got = dl021.run(FILES, server.url, "user_name=alice", "files", spec)
    saved = got["saved"]
    ids = [f["id"] for f in saved]
    for meta, f in zip(saved, files, strict=True):
        blob = Path(f["path"]).read_bytes()
        assert meta["checksum"] == hashlib.sha256(blob).hexdigest()
        assert meta["sizeBytes"] == len(blob)
        assert (meta["path"], meta["filename"], meta["tags"]) == (
            f["prefix"],
            Path(f["path"]).name,
            f["tags"],
        )
        assert (meta["description"], meta["metadata"]) == (f["description"], f["metadata"])
        assert isinstance(meta["id"], str)
        assert meta["deletedAt"] is None
    assert got["all"] == saved
    assert got["by_prefix"] == {
        "/models": ids[:2],
        "/models/ckpt": [ids[1]],
        "/docs": [ids[2]],
        "/nothing": [],
    }
    assert got["by_tags"] == {"best": [ids[0]], "v1": ids[:2], "notes,best": [ids[0], ids[2]], "nope": []}
    assert got["downloads"] == {f["id"]: f["checksum"] for f in saved}  # 0.2.1 verified each itself
    updated = got["updated"]
    assert (updated["id"], updated["description"], updated["tags"], updated["metadata"]) == (
        ids[0],
        "renamed",
        ["old"],
        {"epoch": 4},
    )
    assert updated["checksum"] == saved[0]["checksum"]
    assert got["all_updated"] == [updated, *saved[1:]]
    assert got["deleted"]["id"] == ids[0]
    assert isinstance(got["deleted"]["deletedAt"], str)
    assert got["all_deleted"] == saved[1:]
    assert got["download_deleted"] == 404

    sid = got["session_id"]
    assert http_json(api.get(f"/sessions/{sid}/files"))["files"] == saved[1:]
    assert api.get(f"/sessions/{sid}/files/{ids[2]}/download").content == notes.read_bytes()

    # 0.2.1 checks the bytes against the checksum the server recorded: damaged bytes are refused.
    damage_object(server, f"files/{sid}/{ids[1]}")
    check = dl021.run(DOWNLOAD, server.url, "user_name=alice", "files", {"ids": ids[1:], "dest": str(dest)})
    assert check["downloads"][ids[2]] == saved[2]["checksum"]
    assert check["downloads"][ids[1]].startswith("ValueError: Checksum verification failed"), check
