"""Helpers for tests that run dreamlake in child processes and check its files by plain reading.

A child is ``sys.executable -c <script>`` in its own process group (so a forked grandchild that hangs
is killed with it), with stdout read line by line in a thread so every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

WORKSPACE = "ws"
SESSION = "run"
_TIMED_OUT = "\0timed out\0"  # a str no child prints (compared by identity)

# Every child script starts with this; parameters follow as ``NAME = repr(value)`` lines.
_PRELUDE = """\
import json
import os
import signal
import sys
import time

from dreamlake import Session

"""


def make_script(*blocks: str, **params: Any) -> str:
    """The prelude, one ``NAME = value`` line per parameter, then the blocks (see :func:`block`)."""
    assigns = "".join(f"{name} = {value!r}\n" for name, value in params.items())
    return _PRELUDE + assigns + "".join(blocks)


def block(code: str, indent: int = 0) -> str:
    """``code`` dedented, then indented by ``indent`` spaces (to nest it in the previous block)."""
    return textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", " " * indent)


class Child:
    """A Python child process; use as a context manager so it is always reaped (or killed)."""

    def __init__(self, script: str, *, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []  # every stdout line read so far, in order
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._stderr.extend, args=(self.proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump_stdout(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def stderr(self) -> str:
        """What the child wrote to stderr so far (complete once it has been waited for)."""
        return "".join(self._stderr)

    def next_line(self, timeout: float = 30.0) -> str | None:
        """The next stdout line, or ``None`` at end of output; fails the test after ``timeout``."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            line = _TIMED_OUT
        if line is _TIMED_OUT:  # outside the except block: no chained exception in the report
            self.kill()
            pytest.fail(f"no output from the child within {timeout} s; stderr:\n{self.stderr}")
        if line is not None:
            self.lines.append(line)
        return line

    def expect(self, predicate: Callable[[str], bool] | str, timeout: float = 30.0) -> str:
        """Read stdout lines until one matches (equals a str, or satisfies a predicate)."""
        match = predicate if callable(predicate) else (lambda line: line == predicate)
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                self.wait(timeout=10)
                pytest.fail(
                    f"the child ended (status {self.proc.returncode}) before printing the expected "
                    f"line; stdout: {self.lines[-5:]}\nstderr:\n{self.stderr}"
                )
            if match(line):
                return line

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the child to end and return its status; a hang fails the test (and kills it)."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = None
        if status is None:  # outside the except block: no chained TimeoutExpired in the report
            self.kill()
            pytest.fail(f"the child did not end within {timeout} s (deadlock?); stderr:\n{self.stderr}")
        for reader in self._readers:
            reader.join(timeout=10)
        while True:  # keep every line printed before the end
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return status

    def kill(self) -> None:
        """SIGKILL the child's process group (it and anything it forked), unless already reaped."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(10)

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def run_script(script: str, timeout: float = 60.0) -> tuple[int, list[str], str]:
    """Run ``script`` to its end; return ``(status, stdout lines, stderr)``."""
    with Child(script) as child:
        status = child.wait(timeout)
        return status, child.lines, child.stderr


def track_dir(root: Path, track: str, session: str = SESSION, workspace: str = WORKSPACE) -> Path:
    return root / workspace / session / "tracks" / track


def read_points(
    root: Path, track: str, session: str = SESSION, workspace: str = WORKSPACE
) -> list[dict[str, Any]]:
    """The ``data`` of every line of a track's data.jsonl, checking the file is intact.

    Every line must be complete and parse as ``{"index": i, "data": {...}}``, and line k must carry
    index k. A missing file fails the test.
    """
    path = track_dir(root, track, session, workspace) / "data.jsonl"
    assert path.exists(), f"{path} was never written"
    raw = path.read_bytes()
    assert not raw or raw.endswith(b"\n"), f"torn last line: {raw[-80:]!r}"
    points = []
    for k, line in enumerate(raw.split(b"\n")[:-1]):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"line {k} of {path} does not parse: {line[:200]!r}")
        assert isinstance(entry, dict), f"line {k}: {entry!r}"
        assert set(entry) == {"index", "data"}, f"line {k}: {entry!r}"
        assert entry["index"] == k, f"line {k} carries index {entry['index']} (indices not contiguous)"
        points.append(entry["data"])
    return points


def read_metadata(
    root: Path, track: str, session: str = SESSION, workspace: str = WORKSPACE
) -> dict[str, Any]:
    path = track_dir(root, track, session, workspace) / "metadata.json"
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


def read_session_json(root: Path, session: str = SESSION, workspace: str = WORKSPACE) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / workspace / session / "session.json").read_text())
    return data


def check_steps(points: list[dict[str, Any]], key: str = "step") -> None:
    """Point k has ``key == k``: nothing lost, duplicated or reordered (single-writer tracks)."""
    bad = next((k for k, p in enumerate(points) if p.get(key) != k), None)
    assert bad is None, f"point {bad} has {key}={points[bad].get(key)!r}"


def no_errors(stderr: str) -> None:
    """The child reported no traceback and no dreamlake error."""
    assert "Traceback" not in stderr, stderr
    assert "dreamlake:" not in stderr, stderr
