"""``dreamlake serve``: run the server with uvicorn; print the URL once it is listening."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ._server import import_server


def add_parser(commands: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = commands.add_parser("serve", help="run the dreamlake server")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default 8000)")
    p.add_argument("--data", type=Path, default=Path(".dreamlake-server"), help="where both tiers live")
    p.add_argument("--hot", default=None, metavar="URL", help="mongodb://... (default: SQLite in --data)")
    p.add_argument(
        "--cold",
        default=None,
        metavar="URL",
        help="s3://bucket/prefix for the cold tier (default: a directory in --data); AWS_* variables apply",
    )
    p.add_argument("--chunk-size", type=int, default=10_000, help="points per cold-tier chunk")
    p.add_argument("--dev", action="store_true", help="also accept 0.2.x self-made tokens (loopback only)")
    p.add_argument("--jwt-secret", default=None, help="accept HS256 JWTs signed with this secret")
    p.add_argument("--max-body", type=int, default=64 * 1024 * 1024, help="request body limit in bytes")
    p.add_argument(
        "--max-buffered-chunks", type=int, default=200, help="hot chunks per track before ingest answers 503"
    )
    p.add_argument(
        "--archive-lease",
        type=float,
        default=10.0,
        help="seconds a server keeps a track to itself while archiving (another takes over after)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Bind, start, print ``dreamlake serve: listening on URL``, serve until SIGTERM/SIGINT."""
    server = import_server()
    import uvicorn

    try:
        config = server.ServerConfig(
            data=args.data,
            hot=args.hot,
            cold=args.cold,
            host=args.host,
            port=args.port,
            chunk_size=args.chunk_size,
            dev=args.dev,
            jwt_secret=args.jwt_secret,
            max_body=args.max_body,
            max_buffered_chunks=args.max_buffered_chunks,
            archive_lease=args.archive_lease,
        )
    except ValueError as exc:
        print(f"dreamlake serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio turns Nagle off (TCP_NODELAY) only for sockets that say so,
    # and with Nagle on every kept-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    url = f"http://{host}:{sock.getsockname()[1]}"

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(f"dreamlake serve: listening on {url}", flush=True)

    uv_config = uvicorn.Config(
        server.create_app(config),
        log_level=args.log_level,
        access_log=False,  # the app logs each request at debug level itself
        timeout_graceful_shutdown=30,
    )
    # uvicorn re-raises the stop signal once it has shut down; with these handlers in place that is a
    # no-op, so a clean stop exits 0 rather than dying by the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    uv_server = _Server(uv_config)
    uv_server.run(sockets=[sock])
    return 0 if uv_server.started else 1  # a tier that did not start (its error printed already)
