"""``session.file()``: save, list, download, delete, update; bad input; a 200 MB file with flat memory."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from dreamlake import (
    ChecksumError,
    FileMissingError,
    InvalidArgumentError,
    InvalidNameError,
    InvalidValueError,
    Session,
    StorageError,
)
from dreamlake._disk.filestore import FileStore

from ._subproc import SESSION, WORKSPACE, block, make_script, run_script


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def index(session: Session) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = json.loads(
        (session.path / "files" / ".files_metadata.json").read_text()
    )["files"]
    return files


@pytest.fixture
def session(tmp_path: Path) -> Any:
    with Session("f", "w", local_path=tmp_path / "store") as s:
        yield s


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(os.urandom(100_000))
    return path


def test_save_returns_metadata_and_stores_a_copy(session: Session, model: Path) -> None:
    before = (model.read_bytes(), model.stat().st_mtime_ns)
    meta = session.file(model, prefix="/models", tags=["ckpt"], description="best",
                        metadata={"epoch": 3}).save()
    assert meta["filename"] == "model.pt"
    assert meta["path"] == "/models"
    assert meta["sizeBytes"] == 100_000
    assert meta["checksum"] == sha256(model)
    assert (meta["tags"], meta["description"], meta["metadata"]) == (["ckpt"], "best", {"epoch": 3})
    # As in 0.2.x: the platform's mimetypes table (on some machines .pt is not octet-stream).
    assert meta["contentType"] == (mimetypes.guess_type("model.pt")[0] or "application/octet-stream")
    assert meta["uploadedAt"].endswith("Z")
    assert meta["deletedAt"] is None
    stored = session.path / "files" / meta["id"] / "model.pt"
    assert stored.read_bytes() == before[0]
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before  # the source is untouched
    assert index(session) == [meta]


def test_saving_the_same_prefix_and_name_replaces_the_earlier_file(
    session: Session, model: Path
) -> None:
    first = session.file(model, prefix="/models").save()
    model.write_bytes(b"new weights")
    second = session.file(model, prefix="/models/").save()  # same prefix, spelled differently
    other = session.file(model, prefix="/other").save()
    assert second["id"] != first["id"]
    assert not (session.path / "files" / first["id"]).exists()
    assert [f["id"] for f in session.file().list()] == [second["id"], other["id"]]


def test_list_filters_by_prefix_and_tags(session: Session, model: Path) -> None:
    a = session.file(model, prefix="/models/best", tags=["ckpt", "best"]).save()
    b = session.file(model, prefix="/models", tags=["ckpt"]).save()
    c = session.file(model, prefix="/plots", tags=["fig"]).save()
    ids = lambda files: sorted(f["id"] for f in files)  # noqa: E731
    assert ids(session.file().list()) == sorted([a["id"], b["id"], c["id"]])
    assert ids(session.file(prefix="/models").list()) == sorted([a["id"], b["id"]])
    assert ids(session.file(prefix="/model").list()) == []  # a folder, not a string prefix
    assert ids(session.file(tags=["best", "fig"]).list()) == sorted([a["id"], c["id"]])


def test_download_verifies_the_checksum(session: Session, model: Path, tmp_path: Path) -> None:
    meta = session.file(model).save()
    out = session.file(file_id=meta["id"]).download(tmp_path / "copy.pt")
    assert Path(out).read_bytes() == model.read_bytes()
    (tmp_path / "outdir").mkdir()
    into_dir = session.file(file_id=meta["id"], dest_path=tmp_path / "outdir").download()
    assert Path(into_dir) == tmp_path / "outdir" / "model.pt"
    # Damage the stored copy: the download fails and leaves nothing behind.
    stored = session.path / "files" / meta["id"] / "model.pt"
    data = stored.read_bytes()
    stored.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # b"x" + ... was a no-op 1 time in 256
    with pytest.raises(ChecksumError, match="does not match"):
        session.file(file_id=meta["id"]).download(tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_delete_and_update(session: Session, model: Path) -> None:
    meta = session.file(model, tags=["a"], description="d").save()
    updated = session.file(file_id=meta["id"]).update(tags=["b"], metadata={"k": 1})
    assert (updated["tags"], updated["metadata"], updated["description"]) == (["b"], {"k": 1}, "d")
    assert session.file(tags=["b"]).list()[0]["metadata"] == {"k": 1}
    gone = session.file(file_id=meta["id"]).delete()
    assert gone["id"] == meta["id"]
    assert gone["deletedAt"].endswith("Z")
    assert session.file().list() == []
    assert not (session.path / "files" / meta["id"]).exists()
    assert index(session)[0]["deletedAt"] == gone["deletedAt"]  # soft delete in the index (0.2.x)
    with pytest.raises(FileMissingError):
        session.file(file_id=meta["id"]).delete()
    with pytest.raises(FileMissingError):
        session.file(file_id="nope").download()
    with pytest.raises(InvalidArgumentError, match="file_id"):
        session.file().delete()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"file_path": "missing.bin"}, FileMissingError),
        ({"file_path": "."}, InvalidArgumentError),  # a directory
        ({}, InvalidArgumentError),  # no file_path
        ({"file_path": "model.pt", "prefix": "/../../etc"}, InvalidNameError),
        ({"file_path": "model.pt", "prefix": "a/./b"}, InvalidNameError),
        ({"file_path": "model.pt", "prefix": "a\\..\\b"}, InvalidNameError),
        ({"file_path": "model.pt", "metadata": {"f": object()}}, InvalidValueError),
        ({"file_path": "model.pt", "metadata": "not a dict"}, InvalidValueError),
        ({"file_path": "model.pt", "tags": "ckpt"}, InvalidValueError),
    ],
)
def test_bad_input_is_refused_and_leaves_nothing(
    session: Session, model: Path, kwargs: dict[str, Any], error: type[Exception],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(model.parent)  # relative paths name the model or are missing
    with pytest.raises(error):
        session.file(**kwargs).save()
    assert sorted(p.name for p in (session.path / "files").iterdir()) == []


def test_missing_file_is_also_a_value_error_as_in_0_2(session: Session) -> None:
    with pytest.raises(ValueError, match="no such file"):
        session.file("does-not-exist").save()


def test_save_without_waiting(session: Session, model: Path) -> None:
    future = session.file(model, prefix="/bg").save(wait=False)
    assert isinstance(future, Future)
    session.flush()  # waits for the save
    assert future.done()
    assert session.file(prefix="/bg").list() == [future.result()]


def test_a_failed_background_save_is_raised_from_flush(
    session: Session, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileStore, "save", fail)
    # The warning comes from the agent as soon as the save fails, possibly before flush() is called.
    with pytest.warns(RuntimeWarning, match="No space left"):  # noqa: PT031
        future = session.file(model).save(wait=False)
        with pytest.raises(StorageError, match="No space left"):
            session.flush()
    assert isinstance(future.exception(), StorageError)
    session.flush()  # reported once


def test_list_sees_a_save_started_before_it(session: Session, model: Path) -> None:
    futures = [session.file(model, prefix=f"/p{i}").save(wait=False) for i in range(5)]
    assert len(session.file().list()) == 5
    assert all(f.done() for f in futures)


def test_a_200_mb_file_saves_with_flat_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    block_ = os.urandom(1 << 20)
    with open(big, "wb") as f:
        for i in range(200):
            chunk = bytes([i]) + block_[1:]
            digest.update(chunk)
            f.write(chunk)
    script = make_script(
        block("""
        import resource
        with Session(NAME, WS, local_path=ROOT) as s:
            s.file(BIG).save()  # warm up: threads, imports
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            meta = s.file(BIG, prefix="/big").save()
            out = s.file(file_id=meta["id"]).download(OUT)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"grew_kb": after - before, "checksum": meta["checksum"],
                          "size": meta["sizeBytes"]}))
        """),
        ROOT=str(tmp_path / "store"), NAME=SESSION, WS=WORKSPACE, BIG=str(big), OUT=str(tmp_path / "out.bin"),
    )
    code, lines, stderr = run_script(script, timeout=240)
    assert code == 0, stderr
    result = json.loads(lines[-1])
    assert result["size"] == 200 << 20
    assert result["checksum"] == digest.hexdigest()
    assert sha256(tmp_path / "out.bin") == digest.hexdigest()
    assert result["grew_kb"] < 32 * 1024, result  # 200 MB through 1 MiB chunks
