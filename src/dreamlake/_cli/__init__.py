"""The ``dreamlake`` console script: parse the command line and dispatch to one module per command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import recover, serve, sync, token


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dreamlake <command> ...``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="dreamlake", description="dreamlake experiment tracking")
    commands = parser.add_subparsers(dest="command", required=True)
    recover.add_parser(commands)
    serve.add_parser(commands)
    sync.add_parser(commands)
    token.add_parser(commands)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
