"""``dreamlake sync``: send what killed runs (or runs that closed while their server was down) left
in their spools for a server.

Each spool is sent as its writer would have: first the batch it had sent without seeing the answer,
with the same idempotency key, then the rest, so running it twice, or after the writer itself sent
part of it, stores nothing twice. A spool whose owner is still alive is left alone; one that cannot
be read is listed and left as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx

from .._agent.recovery import outbox_of
from .._agent.spool import Orphan, claim, read_records, sides, spool_paths
from .._config import DEFAULT_LOCAL_PATH, AgentConfig
from .._sinks.sender import RemoteError, Sender

_BATCH_POINTS = AgentConfig().batch_size  # points per batch, as a session sends them


def add_parser(commands: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = commands.add_parser("sync", help="send what earlier runs left for a server")
    p.add_argument("--local-path", type=Path, default=None, help="the local root (default ./.dreamlake)")
    p.add_argument("--remote", default=None, help="server URL (default: the one each spool names)")
    p.add_argument("--api-key", default=None, help="token (default $DREAMLAKE_API_KEY)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Send every dead spool's server part; exit 0 if everything was sent, 1 if something is left."""
    root = args.local_path or Path(os.environ.get("DREAMLAKE_LOCAL_PATH") or DEFAULT_LOCAL_PATH)
    api_key = args.api_key or os.environ.get("DREAMLAKE_API_KEY")
    if not api_key:
        print("dreamlake sync: give --api-key or set DREAMLAKE_API_KEY", file=sys.stderr)
        return 2
    left = anyio.run(_sync_all, root, args.remote, api_key)
    for path, why in left:
        print(f"not sent: {path}: {why}", file=sys.stderr)
    return 1 if left else 0


async def _sync_all(root: Path, url: str | None, api_key: str) -> list[tuple[Path, str]]:
    left: list[tuple[Path, str]] = []
    paths = spool_paths(root)
    for i, path in enumerate(paths, 1):
        progress = f"[{i}/{len(paths)}] {path.name}"
        orphan = claim(path)
        if orphan == "alive":
            print(f"{progress}: its process is still running; left alone")
        elif orphan == "unreadable":
            left.append((path, "unreadable spool; left as it is"))
        elif isinstance(orphan, Orphan):
            if not sides(orphan.identity)[1]:
                print(f"{progress}: local mode; 'dreamlake recover' stores it")
                orphan.release()
                continue
            try:
                read_records(orphan)
                why = await _send(orphan, root, url or orphan.identity["url"], api_key, progress)
            finally:
                orphan.finish()
            if why:
                left.append((path, why))
            elif path.exists():
                print(f"  its local files' part is left: run 'dreamlake recover --local-path {root}'")
    return left


async def _send(orphan: Orphan, root: Path, url: str, api_key: str, progress: str) -> str | None:
    """Send one spool's server part; why something is left, or None."""
    outbox = outbox_of(orphan, _BATCH_POINTS)
    batches = list(outbox.sealed)
    points, logs, _ = outbox.unsent()
    identity = orphan.identity
    print(
        f"{progress}: {identity['workspace']}/{identity['session']}: {len(batches)} batches, "
        f"{points} points, {logs} log entries -> {url}"
    )
    headers = {"Authorization": f"Bearer {api_key}"}
    refused = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as client:
        head = {"workspace": identity["workspace"], "session": identity["spec"]}
        sender = Sender(client, outbox, head, root, str(orphan.path), warn=False)
        for n, batch in enumerate(batches, 1):
            try:
                with anyio.fail_after(120):
                    await sender.send(batch)
            except RemoteError as exc:
                if exc.status == 401:
                    return f"the server refused the token: {exc}"
                refused.append(str(exc))  # moved aside; the rest may still be stored
            except TimeoutError:
                return f"the server at {url} did not answer ({sender.last_error})"
            print(f"  {n}/{len(batches)} sent", flush=True)
    if refused:
        return f"{len(refused)} batch(es) were refused: {refused[0]}"
    return None
