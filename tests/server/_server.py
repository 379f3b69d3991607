"""A real ``dreamlake serve`` in a child process on 127.0.0.1 and a free port, stopped by its PID."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

import httpx

_READY = "dreamlake serve: listening on "


class ServerProcess:
    """``python -m dreamlake serve --port 0 --data DIR [args]``; ``url`` once it listens."""

    def __init__(
        self,
        data: Path,
        *args: str,
        port: int = 0,
        timeout: float = 30.0,
        hot: str | None = None,
        cold: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data = data
        self.hot = hot  # mongodb://... or None (SQLite in ``data``)
        self.cold = cold  # s3://... or None (a directory in ``data``)
        self.env = env or {}  # AWS_* for the S3 tier
        tiers = [*(("--hot", hot) if hot else ()), *(("--cold", cold) if cold else ())]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dreamlake",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data",
                str(data),
                *tiers,
                *args,
            ],
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.stderr: list[str] = []
        lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, lines), daemon=True),
            threading.Thread(target=self._collect, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise RuntimeError(
                    f"dreamlake serve did not start in {timeout}s: {''.join(self.stderr)}"
                ) from None
            if line is None:
                self.proc.wait(timeout)
                raise RuntimeError(f"dreamlake serve exited ({self.proc.returncode}): {''.join(self.stderr)}")
            if line.startswith(_READY):
                self.url = line[len(_READY) :].strip()
                break

    @staticmethod
    def _pump(stream: object, lines: queue.Queue[str | None]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)
        lines.put(None)

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def client(self, token: str | None = None) -> httpx.Client:
        """An httpx client for this server, with ``token`` as bearer."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; SIGKILL if it does not stop in ``timeout``."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL by PID (the process group: nothing is left running)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for reader in self._readers:
            reader.join(10)  # they end at EOF, once the process is gone
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def make_token(data: Path, *workspaces: str, read_only: bool = False, hot: str | None = None) -> str:
    """``dreamlake token create`` (into ``--hot`` if given): its last line of stdout is the token."""
    args = [sys.executable, "-m", "dreamlake", "token", "create", "--data", str(data)]
    if hot is not None:
        args += ["--hot", hot]
    for workspace in workspaces:
        args += ["--workspace", workspace]
    if read_only:
        args.append("--read-only")
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]


def free_port() -> int:
    """A port nothing listens on now (for a server restarted on the same port, or none at all)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
