"""``dreamlake serve``: the server (optional extra ``dreamlake[server]``).

A request goes ``app.py`` → ``compat.py`` (the 0.2.x routes) or ``ingest.py`` (the bulk route) →
``store.py`` → ``hot/`` (recent points, indexes); ``archiver.py`` moves full chunks to ``cold/``, and
``points.py`` reads across both. It imports ``_schema``, ``_disk`` and ``_exceptions``, never the client.
"""

from .app import create_app
from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
