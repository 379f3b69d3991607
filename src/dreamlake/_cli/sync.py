"""``dreamlake sync``: send the journals earlier runs left behind (a killed job, a dead server).

Each journal is sent as its writer would have: sealed groups in order, each with its idempotency
key, so running it twice, or after the writer itself sent part of it, stores nothing twice. A
journal whose owner is still alive is left alone; a damaged one is skipped and listed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx

from .._config import DEFAULT_LOCAL_PATH
from .._sinks.journal import Journal, find_journals
from .._sinks.sender import RemoteError, Sender


def add_parser(commands: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = commands.add_parser("sync", help="send journals left by earlier runs")
    p.add_argument("--local-path", type=Path, default=None, help="the local root (default ./.dreamlake)")
    p.add_argument("--remote", default=None, help="server URL (default: the one each journal names)")
    p.add_argument("--api-key", default=None, help="token (default $DREAMLAKE_API_KEY)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Send every journal; exit 0 if everything was sent, 1 if something is left (each listed)."""
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
    paths = find_journals(root)
    for i, path in enumerate(paths, 1):
        try:
            journal = Journal.adopt(path)
        except (OSError, ValueError) as exc:
            left.append((path, f"unreadable journal ({exc})"))
            continue
        if journal is None:
            print(f"[{i}/{len(paths)}] {path.name}: its process is still running; left alone")
            continue
        try:
            why = await _send(journal, url or journal.header["url"], api_key, f"[{i}/{len(paths)}]")
        finally:
            journal.close(remove_if_done=True)
        if why:
            left.append((path, why))
    return left


async def _send(journal: Journal, url: str, api_key: str, progress: str) -> str | None:
    """Send one journal; why something is left, or None."""
    journal.seal_all()
    groups = journal.sendable()
    points, logs = journal.unsent()
    head = journal.header
    print(
        f"{progress} {head['workspace']}/{head['session']['name']}: {len(groups)} batches, "
        f"{points} points, {logs} log entries -> {url}"
    )
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as client:
        sender = Sender(client, journal, warn=False)
        for n, group in enumerate(groups, 1):
            try:
                with anyio.fail_after(120):
                    await sender.send(group)
            except RemoteError as exc:
                return f"the server refused a batch: {exc}"
            except TimeoutError:
                return f"the server at {url} did not answer ({sender.last_error})"
            print(f"  {n}/{len(groups)} sent", flush=True)
    if journal.refused:
        return f"{len(journal.refused)} batches were refused earlier and are kept in the file"
    return None
