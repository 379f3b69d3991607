"""The package's imports point one way (see the docstring of ``dreamlake/__init__.py``): the rules
know nothing of the client, storage knows nothing of the handles, the client never imports the server."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dreamlake

PACKAGE = Path(dreamlake.__file__).parent

# What each part may import besides itself; top-level leaves (_exceptions, _config, _speedups) are
# listed where allowed.
ALLOWED: dict[str, set[str]] = {
    "_schema": {"_exceptions"},
    "_disk": {"_schema", "_exceptions", "_speedups"},
    "_sinks": {"_disk", "_schema", "_config", "_exceptions"},
    "_agent": {"_sinks", "_schema", "_config", "_exceptions", "_speedups"},
    "_session": {"_agent", "_sinks", "_schema", "_config", "_exceptions"},
    "server": {"_schema", "_disk", "_exceptions"},
    "_cli": {"server", "_schema", "_disk", "_exceptions", "_config", "_session", "_sinks", "_agent"},
    "__init__": {"_session", "_config", "_exceptions"},
    "testing": {"_sinks", "_schema", "_exceptions"},
    "__main__": {"_cli"},
    "_config": {"_exceptions"},
}


def imported_parts(path: Path) -> set[str]:
    """The top-level parts of ``dreamlake`` that module ``path`` imports."""
    relative = path.relative_to(PACKAGE).parts
    depth = len(relative) - 1  # how deep the module sits below dreamlake/
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb to dreamlake/, then read the first part
                if node.level <= depth:
                    continue  # inside its own part
                names = (node.module or "").split(".")
                parts.add(names[0] if names[0] else node.names[0].name)
            elif node.module and node.module.startswith("dreamlake."):
                parts.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            parts.update(a.name.split(".")[1] for a in node.names if a.name.startswith("dreamlake."))
    return parts


def test_every_import_points_down() -> None:
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {target}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for target in imported_parts(path) - ALLOWED.get(_part(path), set()) - {_part(path)}
    ]
    assert wrong == []


def _part(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_the_client_never_imports_the_server() -> None:
    client = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ("server", "_cli")]
    assert client
    assert [str(p) for p in client if "server" in imported_parts(p)] == []


def test_importing_dreamlake_loads_neither_the_server_nor_http() -> None:
    server_modules = (
        "starlette", "uvicorn", "multipart", "zstandard", "httpx", "dreamlake.server", "pymongo", "obstore",
    )  # fmt: skip
    code = f"import sys, dreamlake; print(sorted(m for m in {server_modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# The drivers of the at-scale tiers, and the only modules that may import them.
DRIVERS = {
    "pymongo": {"server/hot/mongo.py", "server/hot/mongo_numbered.py"},
    "bson": {"server/hot/mongo.py", "server/hot/mongo_numbered.py"},
    "obstore": {"server/cold/s3.py"},
}


def test_tier_drivers_are_imported_only_by_their_tier_modules() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for name in names:
                allowed = DRIVERS.get(name.split(".")[0])
                if allowed is not None and path.relative_to(PACKAGE).as_posix() not in allowed:
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert wrong == []


def test_the_embedded_server_loads_neither_driver() -> None:
    code = (
        "import sys; from dreamlake.server.app import open_tiers; from dreamlake.server import ServerConfig; "
        "open_tiers(ServerConfig(data=__import__('pathlib').Path(sys.argv[1]))); "
        "print(sorted(m for m in ('pymongo', 'bson', 'obstore') if m in sys.modules))"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", code, tmp], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
