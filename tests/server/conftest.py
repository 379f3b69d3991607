"""Fixtures for the server tests: one real server per module and tier pair, tokens made by the CLI,
and the MongoDB (SecantusDB) and S3 (SeaweedFS) services, started once per session."""

from __future__ import annotations

import dataclasses
import itertools
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._server import ServerProcess, make_token
from ._services import BUCKET, SeaweedS3, SecantusDB, environment

_names = itertools.count()


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` (its host, credentials and options kept)."""
    parts = urllib.parse.urlsplit(url)
    query = parts.query
    if "@" in parts.netloc and "authsource=" not in query.lower():
        # Credentials are checked against the URL's database unless authSource says otherwise:
        # keep checking them where they were.
        source = parts.path.strip("/") or "admin"
        query = f"{query}&authSource={source}" if query else f"authSource={source}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{name}", query, ""))


@dataclasses.dataclass(frozen=True)
class ScaleStore:
    """The MongoDB + S3 services; ``fresh()`` gives a new database and prefix on them."""

    mongo: str  # mongodb://host:port, without a database
    s3: SeaweedS3

    def fresh(self) -> tuple[str, str]:
        """``(--hot URL, --cold URL)`` that no other test uses."""
        name = f"dltest{os.getpid()}x{next(_names)}"
        return with_database(self.mongo, name), f"s3://{BUCKET}/{name}"


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB: ``DREAMLAKE_TEST_MONGODB_URI`` if set, else SecantusDB on a free port."""
    given = os.environ.get("DREAMLAKE_TEST_MONGODB_URI")
    if given:
        yield given
        return
    db = SecantusDB(tmp_path_factory.mktemp("secantusdb") / "data")
    try:
        yield db.url
    finally:
        db.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """SeaweedFS with bucket ``BUCKET``; its ``AWS_*`` variables set in this process too."""
    store = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        with environment(store.env()):
            yield store
    finally:
        store.stop()


@pytest.fixture(scope="session")
def scale(mongo_url: str, s3: SeaweedS3) -> ScaleStore:
    """Both services of the MongoDB + S3 tier pair."""
    return ScaleStore(mongo_url, s3)


@pytest.fixture(scope="module", params=["embedded", "mongo-s3"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``dreamlake serve --dev --chunk-size 100`` (small chunks, so tests cross tiers cheaply), on
    the embedded tiers and on MongoDB + S3."""
    data = tmp_path_factory.mktemp("server")
    hot = cold = None
    env: dict[str, str] = {}
    if request.param == "mongo-s3":
        store: ScaleStore = request.getfixturevalue("scale")
        hot, cold = store.fresh()
        env = store.s3.env()
    with ServerProcess(data, "--dev", "--chunk-size", "100", hot=hot, cold=cold, env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    """A token for workspaces ``ws`` and ``ws2``."""
    return make_token(server.data, "ws", "ws2", hot=server.hot)


@pytest.fixture(scope="module")
def other_token(server: ServerProcess) -> str:
    """A token for workspace ``other`` only."""
    return make_token(server.data, "other", hot=server.hot)


@pytest.fixture(scope="module")
def read_token(server: ServerProcess) -> str:
    """A read-only token for ``ws``."""
    return make_token(server.data, "ws", read_only=True, hot=server.hot)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh ``--data`` directory."""
    return tmp_path / "data"
