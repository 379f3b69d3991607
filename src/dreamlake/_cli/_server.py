"""Import the optional server package, or say which extra to install."""

from __future__ import annotations

import types


def import_server() -> types.ModuleType:
    """``dreamlake.server``; a clear error when the ``server`` extra is missing."""
    try:
        import dreamlake.server as server
    except ImportError as exc:
        raise SystemExit(
            f"dreamlake: this command needs the server extra ({exc.name} is missing): "
            "pip install 'dreamlake[server]'"
        ) from None
    return server
