"""``dreamlake token create``: make an API token; print it once (the server keeps only its hash)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio

from ._server import import_server


def add_parser(commands: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = commands.add_parser("token", help="manage API tokens")
    actions = p.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a token for one or more workspaces")
    create.add_argument(
        "--workspace", action="append", required=True, help="a workspace it reaches (repeatable)"
    )
    create.add_argument("--data", type=Path, default=Path(".dreamlake-server"), help="the server's --data")
    create.add_argument("--hot", default=None, metavar="URL", help="the server's --hot (mongodb://...)")
    create.add_argument("--read-only", action="store_true", help="it may read, not write")
    create.set_defaults(run=run_create)


def run_create(args: argparse.Namespace) -> int:
    """Store the hash of a new token in the hot tier (fine while the server runs) and print it."""
    server = import_server()
    from dreamlake.server.app import open_hot
    from dreamlake.server.auth import create_token

    async def create() -> str:
        hot = open_hot(server.ServerConfig(data=args.data, hot=args.hot))
        await hot.start()
        try:
            return await create_token(hot, args.workspace, args.read_only)
        finally:
            await hot.stop()

    try:
        token = anyio.run(create, backend="asyncio")  # pymongo's async client runs on asyncio only
    except ConnectionError as exc:  # the tier's TierUnavailableError
        raise SystemExit(f"dreamlake token create: {exc}") from None
    kind = "read-only token" if args.read_only else "token"
    print(f"# {kind} for {', '.join(args.workspace)}; shown once, keep it secret")
    print(token)
    return 0
