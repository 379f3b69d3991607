"""The published dreamlake 0.2.1 in a throwaway venv, for the compatibility tests (local and remote)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

# pip output that means the package index could not be reached (the one reason to skip).
UNREACHABLE = (
    "Could not find a version",
    "No matching distribution",
    "ConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Failed to establish a new connection",
    "Network is unreachable",
    "Max retries exceeded",
)

V = TypeVar("V", bound="Venv021")


def clean_env() -> dict[str, str]:
    """This environment without what would point a child Python at this checkout."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


@dataclass(frozen=True)
class Venv021:
    """The published dreamlake 0.2.1, installed in its own venv."""

    venv: Path
    workdir: Path  # cwd of every child: an empty directory, so no ``src`` on its path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def python_json(self, *args: str) -> Any:
        """Run ``python -I *args`` in the venv; return the JSON on the last line of its stdout."""
        proc = subprocess.run(
            [str(self.python), "-I", *args],
            cwd=self.workdir,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            pytest.fail(f"dreamlake 0.2.1 failed (status {proc.returncode}):\n{proc.stderr}")
        return json.loads(proc.stdout.splitlines()[-1])


def install_021(kind: type[V], base: Path, *pins: str) -> V:
    """A venv under ``base`` with ``dreamlake==0.2.1`` (and ``pins``) from the package index; skips only
    when the index cannot be reached."""
    dl = kind(base / "venv", base / "cwd")
    dl.workdir.mkdir()
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(dl.venv)],
        cwd=dl.workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert made.returncode == 0, f"python -m venv failed:\n{made.stdout}\n{made.stderr}"
    pip = subprocess.run(
        [str(dl.venv / "bin" / "pip"), "install", "dreamlake==0.2.1", *pins],
        cwd=dl.workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    if pip.returncode != 0:
        output = f"{pip.stdout}\n{pip.stderr}"
        reason = next((marker for marker in UNREACHABLE if marker in output), None)
        if reason is not None:
            pytest.skip(f"cannot install dreamlake==0.2.1, the package index is unreachable (pip: {reason})")
        pytest.fail(
            f"pip install dreamlake==0.2.1 {' '.join(pins)} failed (status {pip.returncode}):\n{output}"
        )
    # The venv must run the published 0.2.1, never this checkout.
    version, module = dl.python_json(
        "-c",
        "import dreamlake, json; from importlib.metadata import version; "
        "print(json.dumps([version('dreamlake'), dreamlake.__file__]))",
    )
    assert version == "0.2.1"
    assert Path(module).resolve().is_relative_to(dl.venv.resolve()), module
    return dl
