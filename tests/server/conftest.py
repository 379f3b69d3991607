"""Fixtures for the server tests: one real server per module, and tokens made by the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._server import ServerProcess, make_token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``dreamlake serve --dev --chunk-size 100`` (small chunks, so tests cross tiers cheaply)."""
    data = tmp_path_factory.mktemp("server")
    with ServerProcess(data, "--dev", "--chunk-size", "100") as proc:
        yield proc


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    """A token for workspaces ``ws`` and ``ws2``."""
    return make_token(server.data, "ws", "ws2")


@pytest.fixture(scope="module")
def other_token(server: ServerProcess) -> str:
    """A token for workspace ``other`` only."""
    return make_token(server.data, "other")


@pytest.fixture(scope="module")
def read_token(server: ServerProcess) -> str:
    """A read-only token for ``ws``."""
    return make_token(server.data, "ws", read_only=True)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh ``--data`` directory."""
    return tmp_path / "data"
