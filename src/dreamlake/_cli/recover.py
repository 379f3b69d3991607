"""``dreamlake recover``: store what killed runs left in their spools, without waiting for the next
run of each session to open it (which does the same). A spool whose process is alive is left alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .._agent.spool import dead_sessions, sides
from .._config import DEFAULT_LOCAL_PATH
from .._exceptions import DreamlakeError
from .._session.session import Session


def add_parser(commands: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = commands.add_parser("recover", help="store what killed runs left in spools")
    p.add_argument("--local-path", type=Path, default=None, help="the local root (default ./.dreamlake)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Recover every dead spool; exit 0 if all were stored, 1 if one failed (each listed)."""
    root = args.local_path or Path(os.environ.get("DREAMLAKE_LOCAL_PATH") or DEFAULT_LOCAL_PATH)
    failed = 0
    for identity in dead_sessions(root):
        label = f"{identity['workspace']}/{identity['session']}"
        if not sides(identity)[0]:
            print(f"{label}: remote mode (no local files): 'dreamlake sync' sends it")
            continue
        try:
            # Opening the session is what recovers it.
            with Session(identity["session"], identity["workspace"], local_path=root) as session:
                recovered = session.agent_stats()["recovered"]
        except DreamlakeError as exc:
            print(f"not recovered: {label}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{label}: {recovered} points, log entries and parameter changes stored")
    return 1 if failed else 0
