"""``dreamlake recover``: store what killed runs left in their spools, without waiting for the next
run of each session to open it (which does the same).

A spool whose process is alive is left alone. Recovering opens the session the spool belongs to,
in its mode: local, hybrid, or remote (whose points then go through the journal: ``dreamlake sync``
sends them, and runs this first).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .._agent.spool import dead_sessions
from .._config import DEFAULT_LOCAL_PATH
from .._exceptions import DreamlakeError


def add_parser(commands: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = commands.add_parser("recover", help="store what killed runs left in spools")
    p.add_argument("--local-path", type=Path, default=None, help="the local root (default ./.dreamlake)")
    p.add_argument("--api-key", default=None, help="token for remote sessions (default $DREAMLAKE_API_KEY)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Recover every dead spool; exit 0 if all were stored, 1 if one failed (each listed)."""
    root = args.local_path or Path(os.environ.get("DREAMLAKE_LOCAL_PATH") or DEFAULT_LOCAL_PATH)
    return 1 if recover_all(root, args.api_key or os.environ.get("DREAMLAKE_API_KEY")) else 0


def recover_all(root: Path, api_key: str | None) -> list[str]:
    """Recover the spools under ``root``; return what failed."""
    from .. import Session  # the public face: recovery is what opening a session does

    failed = []
    for identity in dead_sessions(root):
        label = f"{identity['workspace']}/{identity['session']}"
        remote, hybrid = identity.get("remote"), identity.get("hybrid", False)
        if remote is not None and not api_key:
            failed.append(f"{label}: a remote session; give --api-key or set DREAMLAKE_API_KEY")
            continue
        previous = os.environ.get("DREAMLAKE_LOCAL_PATH")
        os.environ["DREAMLAKE_LOCAL_PATH"] = str(root)  # remote mode keeps its spool and journal there
        try:
            session = Session(
                identity["session"],
                identity["workspace"],
                local_path=root if remote is None or hybrid else None,
                remote=remote,
                api_key=api_key if remote is not None else None,
            )
            with session:
                recovered = session.agent_stats()["recovered"]
            print(f"{label}: {recovered} points, log entries and parameter changes stored")
        except DreamlakeError as exc:
            failed.append(f"{label}: {exc}")
        finally:
            if previous is None:
                os.environ.pop("DREAMLAKE_LOCAL_PATH", None)
            else:
                os.environ["DREAMLAKE_LOCAL_PATH"] = previous
    for why in failed:
        print(f"not recovered: {why}", file=sys.stderr)
    return failed
