"""Local sessions written by this package read in the published dreamlake 0.2.1, and the other way round.

A session-scoped fixture installs ``dreamlake==0.2.1`` from the package index into a throwaway venv
(the only reason to skip: the index cannot be reached). 0.2.1 runs there in child processes that
cannot see this checkout (``python -I``, a cwd without ``src``, no ``PYTHONPATH``), driven by the
scripts in ``_compat021_scripts.py``; this package runs in the test process. Both sides write and
read the same data (:data:`TRACKS`, :data:`PARAMS`, :data:`LOGS`, the files of :func:`sources`),
through their public APIs.

Differences between the two that are expected, not failures:

- 0.2.1's ``stats()`` and ``list_all()`` report ``totalDataPoints`` (and the append results their
  indices) as str; this package reports ints.
- 0.2.1 has no API that reads logs back; its side reads ``logs/logs.jsonl`` as its own
  ``LocalStorage.write_log`` writes it.
- 0.2.1 writes ``createdAt`` into every line of a track's ``data.jsonl``; this package does not
  (README, storage layout), so 0.2.1's ``read()`` returns points written here without the
  ``createdAt`` its docstring promises (see :func:`test_stored_fields_match_021`).
- A non-finite float written here is stored as ``{"$float": "NaN"}`` (strict JSON), which 0.2.1
  reads back as that dict; so no NaN crosses from this package to 0.2.1 in these tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dreamlake import Session

from ._compat021_scripts import READ, WRITE
from ._dl021 import Venv021, install_021

pytestmark = pytest.mark.timeout(300)

WS = "compat"
UTC_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")

# The data both versions write: tracks (points given to append(), then one append_batch()),
# parameters (one set() call each), logs and files.
LOSS_APPEND = [{"value": 1.0, "step": 0}, {"value": 0.75, "step": 1}, {"value": 0.5, "step": 2}]
LOSS_BATCH = [{"value": 0.25 / (i + 1), "step": 3 + i} for i in range(4)]
METRICS_APPEND = [
    {
        "acc": 0.91,
        "ok": True,
        "note": None,
        "hist": [1, 2, 3],
        "conf": {"p": 0.5, "r": 0.25, "deep": {"x": [1.5, {"y": "z"}]}},
        "label": "h\u00e9llo \u2713",
        "big": 2**40,
        "neg": -3,
    }
]
METRICS_BATCH = [{"acc": 0.93, "epoch": 2, "label": "ascii"}, {"acc": 0.95, "epoch": 3, "list": ["a", "b"]}]
METRICS_FIELDS = {"description": "eval metrics", "tags": ["eval", "val"], "metadata": {"unit": "ratio"}}
TRACKS: dict[str, dict[str, Any]] = {
    "loss": {"append": LOSS_APPEND, "batch": LOSS_BATCH},
    "metrics": {"fields": METRICS_FIELDS, "append": METRICS_APPEND, "batch": METRICS_BATCH},
}
PARAMS: list[dict[str, Any]] = [
    {"model": {"lr": 0.001, "layers": {"hidden": 128, "act": "relu"}}, "optimizer": "adam", "seeds": [1, 2]},
    {"model": {"lr": 0.0005}, "epochs": 10},
]
PARAMS_FLAT = {
    "model.lr": 0.0005,
    "model.layers.hidden": 128,
    "model.layers.act": "relu",
    "optimizer": "adam",
    "seeds": [1, 2],
    "epochs": 10,
}
LOGS: list[dict[str, Any]] = [
    {"message": "training started", "level": "info", "metadata": {"epoch": 0}},
    {"message": "no metadata here", "level": "debug"},
    {"message": "loss is high", "level": "warn", "metadata": {"loss": 1.5, "where": "h\u00e9llo"},
     "style": "kwargs"},
    {"message": "checkpoint failed", "level": "error", "metadata": {"code": 500}, "style": "fluent"},
    {"message": "out of memory \u2713", "level": "fatal", "metadata": {"gpu": 0, "free": None},
     "style": "fluent"},
]
DEFAULT_FIELDS = {"description": None, "tags": [], "metadata": None}


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (written out here, not taken from either package)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *groups, last = key.split(".")
        node = out
        for group in groups:
            node = node.setdefault(group, {})
        node[last] = value
    return out


def points_of(tracks: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {name: [*ops.get("append", []), *ops.get("batch", [])] for name, ops in tracks.items()}


def sources(directory: Path) -> list[dict[str, Any]]:
    """Two files to save (as ``save()`` specs); the second has no description or metadata."""
    directory.mkdir()
    model = directory / "model.bin"
    model.write_bytes(bytes(range(256)) * 900 + b"tail")  # > 0.2.1's 8 KiB hashing block
    notes = directory / "notes.txt"
    notes.write_text("h\u00e9llo notes\n" * 10, encoding="utf-8")
    return [
        {
            "path": str(model),
            "prefix": "/models",
            "tags": ["best", "v1"],
            "description": "best model",
            "metadata": {"epoch": 3, "acc": 0.95},
        },
        {"path": str(notes), "prefix": "/docs", "tags": ["notes"], "description": None, "metadata": None},
    ]


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def log_lines(entries: Sequence[dict[str, Any]], first: int = 0) -> list[dict[str, Any]]:
    """The ``logs.jsonl`` lines 0.2.1 writes for ``entries``, without their timestamps."""
    lines = []
    for number, entry in enumerate(entries, first):
        line = {"sequenceNumber": number, "level": entry["level"], "message": entry["message"]}
        if entry.get("metadata"):
            line["metadata"] = entry["metadata"]
        lines.append(line)
    return lines


def check_log_lines(lines: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """``lines`` (as stored) equal ``expected`` apart from timestamps, which are UTC ISO and in order."""
    assert [{k: v for k, v in line.items() if k != "timestamp"} for line in lines] == expected
    stamps = [line["timestamp"] for line in lines]
    assert all(UTC_ISO.fullmatch(stamp) for stamp in stamps), stamps
    moments = [datetime.fromisoformat(stamp[:-1]) for stamp in stamps]
    assert moments == sorted(moments)


def indexed(read: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(entry["index"], entry["data"]) for entry in read["data"]]


def write_ours(session: Session, tracks: dict[str, dict[str, Any]], params: list[dict[str, Any]],
               logs: list[dict[str, Any]], files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write with this package what WRITE makes 0.2.1 write; return the saved files' metadata."""
    for name, ops in tracks.items():
        track = session.track(name, **ops.get("fields", {}))
        for point in ops.get("append", []):
            track.append(**point)
        if ops.get("batch"):
            assert track.append_batch(ops["batch"]) == {"count": len(ops["batch"])}
    for delta in params:
        session.parameters().set(**delta)
    for entry in logs:
        if entry.get("style") == "fluent":
            builder = session.log(metadata=entry.get("metadata"))
            assert builder is not None
            getattr(builder, entry["level"])(entry["message"])
        elif entry.get("style") == "kwargs":
            session.log(entry["message"], level=entry["level"], **entry["metadata"])
        else:
            session.log(entry["message"], level=entry["level"], metadata=entry.get("metadata"))
    return [
        session.file(
            f["path"], prefix=f["prefix"], tags=f["tags"], description=f["description"],
            metadata=f["metadata"],
        ).save()
        for f in files
    ]


@dataclass(frozen=True)
class Dreamlake021(Venv021):
    """0.2.1 writing and reading local session directories."""

    def run(self, script: str, root: Path, session: str, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.python_json("-c", script, str(root), WS, session, json.dumps(spec))
        return result

    def read(self, root: Path, session: str, tracks: Sequence[str], dest: Path) -> dict[str, Any]:
        dest.mkdir()
        spec = {
            "tracks": list(tracks),
            "page": [2, 3],
            "prefixes": ["/models", "/docs"],
            "tags": ["best", "notes", "v2"],
            "dest": str(dest),
        }
        return self.run(READ, root, session, spec)


@pytest.fixture(scope="session")
def dl021(tmp_path_factory: pytest.TempPathFactory) -> Dreamlake021:
    return install_021(Dreamlake021, tmp_path_factory.mktemp("dreamlake-0.2.1"))


def check_021_view(
    got: dict[str, Any],
    *,
    tracks: dict[str, list[dict[str, Any]]],
    fields: dict[str, dict[str, Any]],
    params: dict[str, Any],
    logs: list[dict[str, Any]],
    files: list[dict[str, Any]],
) -> None:
    """What READ printed (0.2.1's view of a session) holds exactly the given data."""
    assert got["version"] == "0.2.1"
    assert sorted(got["tracks"]) == sorted(tracks)
    for name, points in tracks.items():
        view = got["tracks"][name]
        n = len(points)
        assert indexed(view["all"]) == list(enumerate(points)), name
        assert (view["all"]["startIndex"], view["all"]["endIndex"]) == (0, n - 1)
        assert (view["all"]["total"], view["all"]["hasMore"]) == (n, False)
        page = list(enumerate(points))[2:5]
        assert indexed(view["page"]) == page, name
        assert view["page"]["total"] == len(page)
        assert view["page"]["hasMore"] == (n > 5)
        stats = view["stats"]
        assert (stats["name"], stats["trackId"]) == (name, f"local-track-{name}")
        assert stats["totalDataPoints"] == str(n)  # 0.2.1 reports counts as str
        expected_fields = fields.get(name, DEFAULT_FIELDS)
        assert {key: stats[key] for key in DEFAULT_FIELDS} == expected_fields, name
        assert all(UTC_ISO.fullmatch(stats[key]) for key in ("createdAt", "updatedAt")), stats
    assert [(t["name"], t["totalDataPoints"]) for t in got["list_all"]] == [
        (name, str(len(tracks[name]))) for name in sorted(tracks)
    ]
    assert got["params"] == params
    assert got["params_nested"] == nested(params)
    check_log_lines(got["logs"], logs)
    assert got["log_sequence"] == len(logs)  # the number 0.2.1 gives its next log
    assert got["files"] == files
    for prefix, ids in got["by_prefix"].items():
        assert ids == [f["id"] for f in files if f["path"].startswith(prefix)], prefix
    for tag, ids in got["by_tag"].items():
        assert ids == [f["id"] for f in files if tag in f["tags"]], tag
    assert got["downloads"] == {f["id"]: {"sha256": f["checksum"], "size": f["sizeBytes"]} for f in files}


def test_session_written_by_ours_is_read_and_continued_by_021(dl021: Dreamlake021, tmp_path: Path) -> None:
    root = tmp_path / "store"
    specs = sources(tmp_path / "src")
    with Session("from-ours", WS, local_path=root) as session:
        saved = write_ours(session, TRACKS, PARAMS, LOGS, specs)
    for entry, spec in zip(saved, specs, strict=True):
        assert entry["checksum"] == sha256(spec["path"])
        assert entry["sizeBytes"] == Path(spec["path"]).stat().st_size

    got = dl021.read(root, "from-ours", sorted(TRACKS), tmp_path / "dl-1")
    check_021_view(
        got,
        tracks=points_of(TRACKS),
        fields={"metrics": METRICS_FIELDS},
        params=PARAMS_FLAT,
        logs=log_lines(LOGS),
        files=saved,
    )

    # 0.2.1 writes on into the session: its numbering must continue from what this package wrote.
    more_loss = [{"value": 0.1, "step": 7}]
    more_batch = [{"value": 0.05, "step": 8}, {"value": 0.04, "step": 9}]
    more_logs = [{"message": "0.2.1 continues", "level": "info", "metadata": {"by": "0.2.1"}}]
    third = tmp_path / "src" / "extra.json"
    third.write_text('{"k": 1}\n', encoding="utf-8")
    third_spec = {"path": str(third), "prefix": "/models", "tags": ["v2"], "description": "x",
                  "metadata": None}
    wrote = dl021.run(
        WRITE,
        root,
        "from-ours",
        {
            "tracks": {"loss": {"append": more_loss, "batch": more_batch}},
            "params": [{"model": {"lr": 0.0001}, "from021": True}],
            "logs": more_logs,
            "files": [third_spec],
        },
    )
    single, batch = wrote["appends"]["loss"]
    assert single["index"] == "7"  # 0.2.1 took nextIndex from the metadata.json written here
    assert (batch["startIndex"], batch["endIndex"], batch["count"]) == ("8", "9", 2)

    loss = [*LOSS_APPEND, *LOSS_BATCH, *more_loss, *more_batch]
    files = [*saved, *wrote["files"]]
    with Session("from-ours", WS, local_path=root) as session:
        read = session.track("loss").read(0, 1000)
        assert indexed(read) == list(enumerate(loss))
        assert (read["total"], read["hasMore"]) == (10, False)
        assert session.track("loss").stats()["totalDataPoints"] == 10
        assert session.parameters().get() == {**PARAMS_FLAT, "model.lr": 0.0001, "from021": True}
        assert session.file().list() == files
        extra_id = wrote["files"][0]["id"]
        out = session.file(file_id=extra_id).download(tmp_path / "extra-copy.json")  # checks the SHA-256
        assert Path(out).read_bytes() == third.read_bytes()
    session_dir = root / WS / "from-ours"
    check_log_lines(read_jsonl(session_dir / "logs" / "logs.jsonl"), log_lines([*LOGS, *more_logs]))


def test_session_written_by_021_is_read_and_continued_by_ours(dl021: Dreamlake021, tmp_path: Path) -> None:
    root = tmp_path / "store"
    specs = sources(tmp_path / "src")
    scratch = tmp_path / "src" / "scratch.tmp"
    scratch.write_bytes(b"deleted later")
    scratch_spec = {"path": str(scratch), "prefix": "/models", "tags": ["best"], "description": None,
                    "metadata": None}
    wrote = dl021.run(
        WRITE,
        root,
        "from-021",
        {"tracks": TRACKS, "params": PARAMS, "logs": LOGS, "files": [*specs, scratch_spec], "delete": [2]},
    )
    saved = wrote["files"][:2]  # the third was deleted (0.2.1 keeps it in the index, marked deleted)
    assert [f["checksum"] for f in wrote["files"]] == [sha256(s["path"]) for s in [*specs, scratch_spec]]
    assert wrote["appends"]["loss"][-1]["endIndex"] == "6"
    session_dir = root / WS / "from-021"
    logs_path = session_dir / "logs" / "logs.jsonl"

    # This package reads what 0.2.1 wrote.
    all_points = points_of(TRACKS)
    with Session("from-021", WS, local_path=root) as session:
        for name, points in all_points.items():
            track = session.track(name)
            read = track.read()
            assert indexed(read) == list(enumerate(points)), name
            assert (read["startIndex"], read["endIndex"], read["total"], read["hasMore"]) == (
                0, len(points) - 1, len(points), False
            )
            page = track.read(start_index=2, limit=3)
            assert indexed(page) == list(enumerate(points))[2:5]
            assert page["hasMore"] == (len(points) > 5)
            stats = track.stats()
            assert (stats["name"], stats["trackId"], stats["totalDataPoints"]) == (
                name, f"local-track-{name}", len(points)
            )
            expected_fields = METRICS_FIELDS if name == "metrics" else DEFAULT_FIELDS
            assert {key: stats[key] for key in DEFAULT_FIELDS} == expected_fields
        listed = session.track("loss").list_all()
        assert [(t["name"], t["totalDataPoints"]) for t in listed] == [("loss", 7), ("metrics", 3)]
        assert session.parameters().get() == PARAMS_FLAT
        assert session.parameters().get(flatten=False) == nested(PARAMS_FLAT)
        assert session.file().list() == saved  # the deleted file is not listed
        assert session.file(prefix="/models").list() == saved[:1]
        assert session.file(tags=["notes"]).list() == saved[1:]
        for entry, spec in zip(saved, specs, strict=True):
            out = session.file(file_id=entry["id"]).download(tmp_path / f"copy-{entry['filename']}")
            assert Path(out).read_bytes() == Path(spec["path"]).read_bytes()
    check_log_lines(read_jsonl(logs_path), log_lines(LOGS))

    # This package writes on into the 0.2.1 session: numbers continue, nothing is duplicated.
    more = {
        "loss": {"append": [{"value": 0.1, "step": 7}, {"value": 0.09, "step": 8}],
                 "batch": [{"value": 0.08, "step": 9}, {"value": 0.07, "step": 10}]},
        "metrics": {"append": [{"acc": 0.97, "epoch": 4}]},
        "lr": {"fields": {"description": "schedule", "tags": ["opt"], "metadata": None},
               "append": [{"lr": 0.1 / (i + 1)} for i in range(6)]},
    }
    more_logs: list[dict[str, Any]] = [
        {"message": "resumed by the new package", "level": "info", "metadata": {"resume": True}},
        {"message": "lr decayed", "level": "debug", "metadata": {"lr": 0.05}, "style": "fluent"},
    ]
    more_params: list[dict[str, Any]] = [{"model": {"dropout": 0.1}, "epochs": 20}]
    new_model = tmp_path / "src" / "v2" / "model.bin"
    new_model.parent.mkdir()
    new_model.write_bytes(b"a better model" * 1000)
    replacement = {"path": str(new_model), "prefix": "/models", "tags": ["best", "v2"],
                   "description": "better", "metadata": {"epoch": 9}}
    with Session("from-021", WS, local_path=root) as session:
        (replaced,) = write_ours(session, more, more_params, more_logs, [replacement])
    # Same prefix and name as 0.2.1's model.bin: replaced in its place, as 0.2.1 does; bytes removed.
    assert replaced["id"] != saved[0]["id"]
    assert not (session_dir / "files" / saved[0]["id"]).exists()
    check_log_lines(read_jsonl(logs_path), log_lines([*LOGS, *more_logs]))
    assert (session_dir / "logs" / ".log_sequence").read_text() == str(len(LOGS) + len(more_logs))

    tracks = {
        "loss": [*all_points["loss"], *points_of(more)["loss"]],
        "metrics": [*all_points["metrics"], *points_of(more)["metrics"]],
        "lr": points_of(more)["lr"],
    }
    params = {**PARAMS_FLAT, "model.dropout": 0.1, "epochs": 20}
    files = [replaced, saved[1]]
    with Session("from-021", WS, local_path=root) as session:
        for name, points in tracks.items():
            assert indexed(session.track(name).read()) == list(enumerate(points)), name
        assert session.parameters().get() == params
        assert session.file().list() == files

    # And 0.2.1 reads the result, then numbers its own next point and log after this package's.
    got = dl021.read(root, "from-021", sorted(tracks), tmp_path / "dl-2")
    check_021_view(
        got,
        tracks=tracks,
        fields={"metrics": METRICS_FIELDS, "lr": more["lr"]["fields"]},
        params=params,
        logs=log_lines([*LOGS, *more_logs]),
        files=files,
    )
    last_log = [{"message": "0.2.1 again", "level": "warn"}]
    last = {"tracks": {"loss": {"append": [{"value": 0.0}]}}, "logs": last_log}
    wrote = dl021.run(WRITE, root, "from-021", last)
    assert wrote["appends"]["loss"][0]["index"] == str(len(tracks["loss"]))
    check_log_lines(read_jsonl(logs_path), log_lines([*LOGS, *more_logs, *last_log]))
    with Session("from-021", WS, local_path=root) as session:
        read = session.track("loss").read()
        assert indexed(read) == list(enumerate([*tracks["loss"], {"value": 0.0}]))


def _tree(session_dir: Path) -> tuple[set[str], set[str]]:
    """(visible, hidden) paths under a session, with file ids replaced by ``<id>``."""
    visible, hidden = set(), set()
    for path in session_dir.rglob("*"):
        if path.is_dir():
            continue
        rel = path.relative_to(session_dir).parts
        if rel[0] == "files" and len(rel) == 3:
            rel = ("files", "<id>", rel[2])
        (hidden if any(part.startswith(".") for part in rel) else visible).add("/".join(rel))
    return visible, hidden


def _types(doc: dict[str, Any]) -> dict[str, str]:
    return {key: type(value).__name__ for key, value in doc.items() if value is not None}


def test_stored_fields_match_021(dl021: Dreamlake021, tmp_path: Path) -> None:
    """Every file either version stores has the fields (and JSON types) the other one writes."""
    root = tmp_path / "store"
    specs = sources(tmp_path / "src")[:1]
    tracks = {"t": {"fields": METRICS_FIELDS, "append": [{"v": 1}], "batch": [{"v": 2}, {"v": 3}]}}
    logs = LOGS[:1]
    with Session("ours", WS, local_path=root) as session:
        write_ours(session, tracks, PARAMS[:1], logs, specs)
    dl021.run(WRITE, root, "theirs", {"tracks": tracks, "params": PARAMS[:1], "logs": logs, "files": specs})
    ours, theirs = root / WS / "ours", root / WS / "theirs"

    ours_visible, ours_hidden = _tree(ours)
    theirs_visible, theirs_hidden = _tree(theirs)
    assert ours_visible == theirs_visible
    assert theirs_hidden <= ours_hidden  # logs/.log_sequence, files/.files_metadata.json; ours adds locks

    def docs(session_dir: Path) -> dict[str, dict[str, Any]]:
        index = json.loads((session_dir / "files" / ".files_metadata.json").read_text())
        return {
            "session.json": json.loads((session_dir / "session.json").read_text()),
            "parameters.json": json.loads((session_dir / "parameters.json").read_text()),
            "tracks/t/metadata.json": json.loads((session_dir / "tracks/t/metadata.json").read_text()),
            "files index": index,
            "files entry": index["files"][0],
            "log line": read_jsonl(session_dir / "logs" / "logs.jsonl")[0],
            "point": read_jsonl(session_dir / "tracks/t/data.jsonl")[0],
        }

    mine, theirs_docs = docs(ours), docs(theirs)
    for name, doc in theirs_docs.items():
        missing = set(doc) - set(mine[name])
        if name == "point":
            # KNOWN INCOMPATIBILITY (this package -> 0.2.1): 0.2.1 stores a createdAt in every point
            # and documents read() entries as {index, data, createdAt}; points stored here carry
            # only index and data (README, storage layout).
            assert missing <= {"createdAt"}
        else:
            assert not missing, f"{name}: 0.2.1 writes {sorted(missing)}, this package does not"
        common = set(_types(doc)) & set(_types(mine[name]))
        assert {k: _types(mine[name])[k] for k in common} == {k: _types(doc)[k] for k in common}, name
    assert set(mine["files entry"]) == set(theirs_docs["files entry"])
    assert set(mine["log line"]) == set(theirs_docs["log line"])
    for doc in (mine, theirs_docs):
        assert doc["point"]["data"] == {"v": 1}
        assert doc["parameters.json"]["data"] == {
            "model.lr": 0.001, "model.layers.hidden": 128, "model.layers.act": "relu",
            "optimizer": "adam", "seeds": [1, 2],
        }
        assert doc["tracks/t/metadata.json"]["totalDataPoints"] == 3
        assert doc["tracks/t/metadata.json"]["nextIndex"] == 3
        assert doc["session.json"]["workspace"] == WS


# Non-finite floats written by 0.2.1. Its json.dumps stores them as the bare tokens NaN, Infinity and
# -Infinity (which Python's json, and so 0.2.1 itself, reads back); a NaN loss is an ordinary thing
# to log. Each test gets its own copy of one session 0.2.1 wrote, because reading may change it.
NONFINITE = {
    "tracks": {
        "last_nan": {"append": [{"value": 1.0, "step": 0}, {"value": math.nan, "step": 1}]},
        "mid_inf": {"append": [{"norm": math.inf}, {"norm": 2.0}]},
    },
    "params": [{"clip": math.inf, "lr": 0.1}],
    "logs": [
        {"message": "ok", "level": "info"},
        {"message": "diverged", "level": "error", "metadata": {"loss": math.nan}},
    ],
}


@pytest.fixture(scope="module")
def nonfinite_021(dl021: Dreamlake021, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nonfinite") / "store"
    dl021.run(WRITE, root, "nan", NONFINITE)
    data = root / WS / "nan" / "tracks" / "last_nan" / "data.jsonl"
    assert "NaN" in data.read_text().splitlines()[1]  # 0.2.1 wrote the bare token
    return root


@pytest.fixture
def nonfinite_root(nonfinite_021: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(nonfinite_021, root)
    return root


def test_021_nan_in_last_point_is_read_and_kept(nonfinite_root: Path) -> None:
    data = nonfinite_root / WS / "nan" / "tracks" / "last_nan" / "data.jsonl"
    with Session("nan", WS, local_path=nonfinite_root) as session:
        read = session.track("last_nan").read()
    # The torn-tail repair must not take 0.2.1's bare NaN for a torn write and truncate the line.
    assert len(data.read_text().splitlines()) == 2
    assert [entry["index"] for entry in read["data"]] == [0, 1]
    assert math.isnan(read["data"][1]["data"]["value"])


def test_021_infinity_inside_a_track_is_readable(nonfinite_root: Path) -> None:
    with Session("nan", WS, local_path=nonfinite_root) as session:
        # The 0.2.1 line holding Infinity is not strict JSON, which msgspec alone refuses.
        read = session.track("mid_inf").read()
    assert [entry["data"]["norm"] for entry in read["data"]] == [math.inf, 2.0]


def test_021_nonfinite_parameter_is_readable(nonfinite_root: Path) -> None:
    with Session("nan", WS, local_path=nonfinite_root) as session:
        # 0.2.1's parameters.json holds a bare Infinity.
        assert session.parameters().get() == {"clip": math.inf, "lr": 0.1}


def test_021_log_with_nan_metadata_survives_our_next_log(nonfinite_root: Path) -> None:
    logs_path = nonfinite_root / WS / "nan" / "logs" / "logs.jsonl"
    with Session("nan", WS, local_path=nonfinite_root) as session:
        session.log("resumed")
    lines = logs_path.read_text().splitlines()
    # The last 0.2.1 log line (its metadata holds NaN) is kept, and the next entry numbered after it.
    assert [json.loads(line)["message"] for line in lines] == ["ok", "diverged", "resumed"]
    assert [json.loads(line)["sequenceNumber"] for line in lines] == [0, 1, 2]
