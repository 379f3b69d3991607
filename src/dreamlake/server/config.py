"""The server's settings: where the tiers live, the chunk size, the limits, auth mode."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from .._schema.wire import DEV_JWT_SECRET

__all__ = ["DEV_JWT_SECRET", "ServerConfig", "is_loopback"]


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Everything ``dreamlake serve`` is told; the app keeps no other state of its own."""

    data: Path = Path(".dreamlake-server")
    hot: str | None = None  # mongodb://...; None: SQLite under ``data``
    cold: str | None = None  # s3://bucket/prefix; None: a directory under ``data``
    host: str = "127.0.0.1"
    port: int = 8000
    chunk_size: int = 10_000
    dev: bool = False
    jwt_secret: str | None = None
    max_body: int = 64 * 1024 * 1024  # bytes, also after decompression
    max_points: int = 1_000_000  # points per request
    max_read: int = 10_000  # points per read
    archive_interval: float = 0.5  # seconds between archiver passes when idle
    archive_lease: float = 10.0  # seconds a server keeps a track to itself while archiving it
    max_buffered_chunks: int = (
        200  # hot chunks per track before the bulk route answers 503 (on disk, not RAM)
    )

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError("--chunk-size must be at least 1")
        if self.hot is not None and not self.hot.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"--hot takes a mongodb:// or mongodb+srv:// URL; got {self.hot!r}")
        if self.cold is not None and not self.cold.startswith("s3://"):
            raise ValueError(f"--cold takes an s3://bucket/prefix URL; got {self.cold!r}")
        if self.dev and not is_loopback(self.host):
            raise ValueError(
                f"--dev accepts self-made 0.2.x tokens, so it binds to loopback only; got --host {self.host}"
            )

    @property
    def hot_path(self) -> Path:
        return self.data / "hot.sqlite3"

    @property
    def cold_path(self) -> Path:
        return self.data / "cold"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
