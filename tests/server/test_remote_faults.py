"""The SDK in remote mode under real faults (DESIGN §4.2): a lost acknowledgement, a server that never
answers, 429 with ``Retry-After``, a refusal for good, a token that expires mid-run, a client killed
with SIGKILL while the server is down, several processes on one track, and what ``dreamlake sync``
does with spools it must leave alone or cannot read.

Faults are made for real: a small HTTP-aware TCP proxy on 127.0.0.1 between the SDK and a real
``dreamlake serve`` (it drops or replaces the answer to a chosen bulk request), a socket that accepts
and never answers, child processes killed by PID. Every server and child is stopped in a ``finally``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import random
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from dreamlake import Session, StorageError
from dreamlake._agent.spool import MAGIC, Orphan, claim, read_records
from dreamlake._sinks.remote import TokenRejected

from .._subproc import Child, block, make_script
from ._server import ServerProcess, free_port, make_token

pytestmark = pytest.mark.timeout(90)

WS = "ws"
UNUSED_KEY = "dl_" + "x" * 43  # for a server that never gets to check it


# --- helpers -----------------------------------------------------------------------------------


def stored_points(url: str, token: str, session: str, track: str = "t") -> list[dict[str, Any]]:
    """Every point of a track on the server, read over plain HTTP (a missing track reads as empty)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        created = c.post(f"/workspaces/{WS}/sessions", json={"name": session})
        assert created.status_code == 200, created.text
        sid = created.json()["session"]["id"]
        out: list[dict[str, Any]] = []
        while True:
            page = c.get(
                f"/sessions/{sid}/tracks/{track}/data", params={"startIndex": len(out), "limit": 10_000}
            )
            assert page.status_code == 200, page.text
            out.extend(page.json()["data"])
            if not page.json()["hasMore"]:
                return out


def check_stored_once(points: list[dict[str, Any]], count: int) -> None:
    """Indices 0..count-1, and point k carries ``i == k``: nothing lost, doubled or reordered."""
    assert [p["index"] for p in points] == list(range(len(points)))
    assert len(points) == count
    bad = next((k for k, p in enumerate(points) if p["data"]["i"] != k), None)
    assert bad is None, f"point {bad} holds i={points[bad]['data']['i']}"


@contextlib.contextmanager
def warned() -> Iterator[list[str]]:
    """The messages of the RuntimeWarnings raised meanwhile, from any thread (the agent's too)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    messages.extend(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached in {timeout} s")
        time.sleep(0.001)


def spools(root: Path) -> list[Path]:
    return sorted((root / ".spool").glob("*.spool"))


def unacked(path: Path) -> int:
    """Records in a dead writer's spool that its server has not acknowledged."""
    orphan = claim(path)
    assert isinstance(orphan, Orphan), orphan
    try:
        read_records(orphan)
        return sum(len(orphan.unacked(track_id)) for track_id in orphan.records)
    finally:
        orphan.release()


def sync(root: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m dreamlake sync --local-path ROOT --api-key TOKEN [args]``."""
    command = [sys.executable, "-m", "dreamlake", "sync", "--local-path", str(root), "--api-key", token]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def _read_message(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 message (head, body) from ``sock``; None if it closes first. Bodies must come
    with a Content-Length, as the SDK's requests and the server's JSON answers do."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        raise OSError("the test proxy does not do chunked bodies")
    length = int(fields.get(b"content-length", b"0"))
    while len(buf) < end + length:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    body = bytes(buf[end : end + length])
    del buf[: end + length]
    return head, body


def _header(head: bytes, name: bytes) -> str:
    match = re.search(rb"(?im)^" + name + rb":\s*(.*?)\r$", head)
    return match.group(1).decode() if match else ""


# What the proxy does with a bulk request: forward it, drop the answer, never answer, forward it and
# never answer; or bytes: answer those.
FORWARD, DROP, HANG, STORE_AND_HANG = "forward", "drop", "hang", "store and hang"
TOO_MANY = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"


@dataclasses.dataclass
class Exchange:
    """A bulk request (``POST .../batches``) as the proxy saw it."""

    key: str  # its Idempotency-Key
    at: float  # time.monotonic() when it arrived
    status: int = 0  # what the server (or the proxy) answered
    repeat: bool | None = None  # the server's "repeat" field, when it stored or replayed the batch
    dropped: bool = False  # the server answered, the proxy closed the connection instead


_L = TypeVar("_L", bound="_Listener")


class _Listener:
    """A threaded TCP server on 127.0.0.1 and a free port, each connection handled by ``handle``."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        listener = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with listener._lock:
                    listener._conns.add(self.request)
                try:
                    handle(self.request)
                except OSError:
                    pass  # the peer went away, or close() shut the socket
                finally:
                    with listener._lock:
                        listener._conns.discard(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # wakes the handler's recv()
                except OSError:
                    pass
        self._thread.join(10)

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class Proxy(_Listener):
    """An HTTP/1.1 proxy to ``upstream``: ``fault(n)`` says what to do with the n-th bulk request
    (0-based): FORWARD it, DROP the server's answer (close the client's connection after the server
    has stored the batch), HANG (never answer), STORE_AND_HANG (forward it, then never answer), or
    answer with the given bytes without forwarding.
    ``bulk`` records them."""

    def __init__(self, upstream: str, fault: Callable[[int], str | bytes]) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._fault = fault
        self.bulk: list[Exchange] = []
        super().__init__(self._serve)

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        while (request := _read_message(client, buf)) is not None:
            head, body = request
            method, target = head.split(b" ", 2)[:2]
            if method != b"POST" or not target.endswith(b"/batches"):
                client.sendall(self._forward(head, body)[0])
                continue
            with self._lock:
                exchange = Exchange(_header(head, b"idempotency-key"), time.monotonic())
                self.bulk.append(exchange)
                action = self._fault(len(self.bulk) - 1)
            if isinstance(action, bytes):
                exchange.status = int(action.split()[1])
                client.sendall(action)
                continue
            if action == HANG:
                self._stopping.wait()
                return
            answer, status, answer_body = self._forward(head, body)
            exchange.status = status
            if status == 200:
                exchange.repeat = json.loads(answer_body)["repeat"]
            if action == DROP:
                exchange.dropped = True
                return  # the connection closes without the answer
            if action == STORE_AND_HANG:
                self._stopping.wait()
                return
            client.sendall(answer)

    def _forward(self, head: bytes, body: bytes) -> tuple[bytes, int, bytes]:
        """Send one request upstream on a fresh connection; its answer, status and body."""
        with socket.create_connection(self._upstream, timeout=60) as upstream:
            upstream.sendall(head + body)
            answer = _read_message(upstream, bytearray())
        if answer is None:
            raise OSError("the server closed the connection without answering")
        return answer[0] + answer[1], int(answer[0].split()[1]), answer[1]


class SilentServer(_Listener):
    """Accepts connections and reads whatever arrives, but never answers."""

    def __init__(self) -> None:
        super().__init__(self._swallow)

    def _swallow(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue


# --- 1. a lost acknowledgement ----------------------------------------------------------------


def test_a_lost_acknowledgement_is_resent_with_its_key_and_stored_once(
    server: ServerProcess, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    with Proxy(server.url, lambda n: DROP if n == 1 else FORWARD) as proxy:
        # Only the explicit flushes make batches (no interval, no batch-size wake-up): three of them.
        with (
            warned() as messages,
            Session("lost-ack", WS, remote=proxy.url, api_key=token, flush_interval=3600) as s,
        ):
            track = s.track("t")
            for i in range(3000):
                track.append(i=i, payload=f"p{i}")
                if i % 1000 == 999:
                    s.flush()
            assert s.agent_stats()["retries"] == 1
    assert len(messages) == 1, messages  # the failure is warned about once
    assert "retrying" in messages[0]
    first, lost, resent, third = proxy.bulk  # one request more than batches: the resend
    assert lost.dropped
    assert lost.repeat is False  # the server had stored the batch when its answer was lost ...
    assert resent.key == lost.key
    assert resent.repeat is True  # ... and recognised the resend by its key
    assert len({first.key, lost.key, third.key}) == 3
    assert first.repeat is False
    assert third.repeat is False
    points = stored_points(server.url, token, "lost-ack")
    check_stored_once(points, 3000)
    assert [p["data"]["payload"] for p in points] == [f"p{i}" for i in range(3000)]
    assert spools(tmp_path) == []


# --- 2. a server that never answers -----------------------------------------------------------


def test_a_silent_server_holds_up_neither_open_nor_close_and_sync_sends_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, count = tmp_path / "root", 200_000
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(root))
    with SilentServer() as silent:
        started = time.monotonic()
        with Session("silent", WS, remote=silent.url, api_key=UNUSED_KEY, close_timeout=5) as s:
            # open() gives the session's creation one try of 5 s (RemoteSink.open), then goes on.
            assert time.monotonic() - started < 15
            track = s.track("t")
            for i in range(count):
                track.append(i=i)
            with warned() as messages:
                s.close(timeout=3)
    assert any(f"{count} points and 0 log entries" in m and "dreamlake sync" in m for m in messages), messages
    [path] = spools(root)
    assert unacked(path) == count  # the session is closed, so its lock is free

    server = ServerProcess(tmp_path / "server")
    try:
        token = make_token(server.data, WS)
        done = sync(root, token, "--remote", server.url)  # the spool names the silent server
        assert done.returncode == 0, done.stderr
        assert f"{count} points" in done.stdout
        check_stored_once(stored_points(server.url, token, "silent"), count)
    finally:
        server.kill()
    assert spools(root) == []


# --- 3. 429 with Retry-After ------------------------------------------------------------------


def test_429_is_retried_after_the_time_the_server_asks_for(
    server: ServerProcess, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    with Proxy(server.url, lambda n: TOO_MANY if n == 0 else FORWARD) as proxy:
        with warned() as messages, Session("busy", WS, remote=proxy.url, api_key=token) as s:
            track = s.track("t")
            for i in range(2000):
                track.append(i=i)
            s.flush()
            assert s.agent_stats()["retries"] >= 1
    assert any("HTTP 429" in m for m in messages), messages
    refused, *rest = proxy.bulk
    assert refused.status == 429
    assert rest[0].key == refused.key
    assert all(e.status == 200 for e in rest)
    # Retry-After: 1 was honoured (the backoff alone would have waited 0.1-0.2 s).
    assert rest[0].at - refused.at >= 0.95
    check_stored_once(stored_points(server.url, token, "busy"), 2000)


# --- 4. a refusal for good --------------------------------------------------------------------


def test_a_batch_the_server_refuses_for_good_is_moved_aside_and_later_batches_still_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server whose body limit is below one flush's batch answers 413 (not 401/408/429).
    root = tmp_path / "root"
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(root))
    server = ServerProcess(tmp_path / "server", "--max-body", "10000")
    try:
        token = make_token(server.data, WS)
        with Session("too-big", WS, remote=server.url, api_key=token, flush_interval=3600) as s:
            track = s.track("t")
            rng = random.Random(0)
            for i in range(3000):  # random floats: about 50 KB that gzip cannot bring under 10 KB
                track.append(i=i, x=rng.random())
            with pytest.warns(RuntimeWarning, match="413"), pytest.raises(StorageError, match="refused"):
                s.flush()
            for i in range(3000, 3010):
                track.append(i=i, x=0.0)
            s.flush()  # the refusal does not block what follows
        assert [p["data"]["i"] for p in stored_points(server.url, token, "too-big")] == list(
            range(3000, 3010)
        )
        # The refused batch is moved aside, whole, and not sent again; nothing is left to sync.
        [kept] = (root / ".refused").glob("*.msgpack")
        assert b"413" in kept.read_bytes()
        assert spools(root) == []
        done = sync(root, token)
        assert done.returncode == 0, done.stderr
        assert len(stored_points(server.url, token, "too-big")) == 10
    finally:
        server.kill()


# --- 5. a token rejected mid-run --------------------------------------------------------------


def test_a_token_that_expires_mid_run_leaves_the_rest_for_sync_with_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, secret = tmp_path / "root", "a-test-secret-of-at-least-32-bytes"
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(root))
    server = ServerProcess(tmp_path / "server", "--jwt-secret", secret)
    try:
        expires = int(time.time()) + 3
        short = jwt.encode({"workspaces": [WS], "exp": expires}, secret, algorithm="HS256")
        with Session("expiring", WS, remote=server.url, api_key=short, close_timeout=5) as s:
            track = s.track("t")
            for i in range(1000):
                track.append(i=i)
            s.flush()  # stored while the token is valid
            while time.time() < expires + 1:  # the token's clock, not the server's answers
                time.sleep(0.05)
            for i in range(1000, 2000):
                track.append(i=i)
            with pytest.raises(TokenRejected, match="dreamlake sync") as rejected:
                s.flush()
            assert isinstance(rejected.value, StorageError)
            assert rejected.value.status == 401
            assert s.agent_stats()["unsentPoints"] == 1000
            with (
                pytest.warns(RuntimeWarning, match="1000 points.*dreamlake sync"),
                pytest.raises(TokenRejected),
            ):
                s.close(timeout=5)
        [path] = spools(root)

        fresh = jwt.encode({"workspaces": [WS], "exp": int(time.time()) + 600}, secret, algorithm="HS256")
        refused = sync(root, short)
        assert refused.returncode == 1
        assert path.exists()
        done = sync(root, fresh)
        assert done.returncode == 0, done.stderr
        check_stored_once(stored_points(server.url, fresh, "expiring"), 2000)
    finally:
        server.kill()
    assert spools(root) == []


# --- 6. kill -9 of the client while the server is down ----------------------------------------

KILLED = """
from dreamlake import FlushTimeoutError

s = Session(NAME, WS, remote=URL, api_key=KEY, flush_interval=0.01).open()
track = s.track("t")
for i in range(N):
    track.append(i=i)
try:
    s.flush(timeout=0.5)
except FlushTimeoutError:
    pass
else:
    sys.exit("flush() returned although the server is down")
print("ready", flush=True)
for i in range(N, 3 * N):  # still appending, the agent handing batches over, when the kill lands
    track.append(i=i)
    if i % 1000 == 0:
        print("returned", i, flush=True)
time.sleep(60)
"""


def test_kill9_while_the_server_is_down_loses_no_append_that_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, count = tmp_path / "root", 50_000
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(root))
    port = free_port()
    url = f"http://127.0.0.1:{port}"  # nothing listens there yet
    script = make_script(block(KILLED), NAME="killed", WS=WS, URL=url, KEY=UNUSED_KEY, N=count)
    stop_at = random.randrange(count, 3 * count - 1000, 1000)
    with Child(script) as child:
        child.expect("ready")
        line = child.expect(lambda line: line == f"returned {stop_at}")
        child.kill()  # SIGKILL, by its PID (its process group), mid-append
    returned = int(line.split()[1]) + 1  # append(i) for every i below this had returned
    [path] = spools(root)

    server = ServerProcess(tmp_path / "server", port=port)
    try:
        token = make_token(server.data, WS)
        first = sync(root, token)  # to the URL the spool names: the server is back there
        assert first.returncode == 0, first.stderr
        again = sync(root, token)
        assert again.returncode == 0, again.stderr
        points = stored_points(url, token, "killed")
    finally:
        server.kill()
    assert returned <= len(points) <= 3 * count, f"stop at {stop_at}"  # every append that returned
    check_stored_once(points, len(points))  # a gap-free prefix of what was appended, each once
    assert spools(root) == []
    assert not path.exists()


# --- 7. several processes and threads on one remote track -------------------------------------

MULTI = """
import threading

with Session(NAME, WS, remote=URL, api_key=TOKEN, batch_size=500, flush_interval=0.01) as s:
    track = s.track("t")
    print("open", flush=True)
    sys.stdin.readline()  # all three start together

    def write(writer):
        for n in range(PER):
            track.append(w=writer, n=n)
            if n % 250 == 249:
                time.sleep(0.01)  # spread the writes, so the three processes' batches interleave

    threads = [threading.Thread(target=write, args=(f"{os.getpid()}-{k}",)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
print("done", flush=True)
"""


def test_three_processes_of_two_threads_share_one_remote_track(
    server: ServerProcess, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    per = 5000
    script = make_script(block(MULTI), NAME="shared", WS=WS, URL=server.url, TOKEN=token, PER=per)
    with contextlib.ExitStack() as stack:  # each child is killed (if need be) and reaped at the end
        children = [stack.enter_context(Child(script, stdin=True)) for _ in range(3)]
        for child in children:
            child.expect("open")
        for child in children:
            child.send("go\n")
        for child in children:
            assert child.wait(60) == 0, child.stderr
            assert child.lines == ["open", "done"]
            # A busy server may answer 503 (its archiver behind): retried, and warned about once.
            assert "Traceback" not in child.stderr, child.stderr
    points = stored_points(server.url, token, "shared")
    assert [p["index"] for p in points] == list(range(6 * per))
    order: dict[str, list[int]] = {}
    for p in points:
        order.setdefault(p["data"]["w"], []).append(p["data"]["n"])
    assert len(order) == 6
    for writer, ns in order.items():
        assert ns == list(range(per)), f"writer {writer}'s points are not all there in its order"
    # The premise: the processes' batches did interleave on the server.
    processes = [p["data"]["w"].split("-")[0] for p in points]
    assert sum(a != b for a, b in itertools.pairwise(processes)) >= 2
    assert spools(tmp_path) == []


# --- 8. dreamlake sync: a live owner's spool, a damaged one ---------------------------------

HOLDER = """
from dreamlake import FlushTimeoutError

s = Session(NAME, WS, remote=URL, api_key=KEY, flush_interval=0.01).open()
track = s.track("t")
for i in range(1000):
    track.append(i=i)
try:
    s.flush(timeout=0.5)
except FlushTimeoutError:
    pass
print("ready", flush=True)
sys.stdin.read()  # holds the session, and its spool's lock, until killed
"""


def test_sync_leaves_a_live_owners_spool_alone_and_goes_on_past_a_damaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(root))
    dead = f"http://127.0.0.1:{free_port()}"
    script = make_script(block(HOLDER), NAME="alive", WS=WS, URL=dead, KEY=UNUSED_KEY)
    with Child(script, stdin=True) as holder:
        holder.expect("ready")
        # An earlier run that ended with its points unsent: its close() names the spool it left.
        with warned() as messages, Session("left", WS, remote=dead, api_key=UNUSED_KEY) as left:
            for i in range(2000):
                left.track("t").append(i=i)
            left.close(timeout=0.5)
        [kept] = [m for m in messages if "dreamlake sync" in m]
        assert "2000 points" in kept
        left_path = Path(re.search(r"kept in (\S+\.spool)", kept).group(1))  # type: ignore[union-attr]
        [alive_path] = [p for p in spools(root) if p != left_path]
        damaged = root / ".spool" / "damaged.spool"
        damaged.write_bytes(random.Random(0).randbytes(4096))

        server = ServerProcess(tmp_path / "server")
        try:
            token = make_token(server.data, WS)
            done = sync(root, token, "--remote", server.url)
            assert done.returncode == 1, done.stderr
            assert f"{alive_path.name}: its process is still running; left alone" in done.stdout
            assert alive_path.name not in done.stderr
            assert f"not sent: {damaged}: unreadable spool" in done.stderr
            check_stored_once(stored_points(server.url, token, "left"), 2000)
            assert stored_points(server.url, token, "alive") == []
        finally:
            server.kill()
        assert holder.proc.poll() is None  # the owner is still running ...
        assert alive_path.exists()  # ... and its spool is still there
        assert not left_path.exists()
        assert damaged.exists()


# --- what these faults brought out -------------------------------------------------------------


# agent_stats() runs in the caller's thread and sums over the outbox's batches while the agent's
# thread adds one at every flush (and drops one at every acknowledgement); with the server down they
# only grow. Unguarded, that raised "dictionary changed size during iteration" within a second.
def test_agent_stats_can_be_read_from_another_thread_while_the_agent_spools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    dead = f"http://127.0.0.1:{free_port()}"
    s = Session("stats", WS, remote=dead, api_key=UNUSED_KEY, batch_size=10, flush_interval=0.001).open()
    errors: list[Exception] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                s.agent_stats()
            except Exception as exc:
                errors.append(exc)
                return

    poller = threading.Thread(target=poll)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads take turns often: the race shows in well under a second
    with warned():  # the dead server, and what close() leaves in the spool: as expected
        poller.start()
        try:
            track = s.track("t")
            deadline = time.monotonic() + 3
            i = 0
            while time.monotonic() < deadline and not errors:
                track.append(i=i)
                i += 1
                if i % 10 == 0:
                    time.sleep(0.0002)  # let the agent flush: one more group each time
        finally:
            stop.set()
            poller.join()
            sys.setswitchinterval(switch)
            s.close(timeout=0.5)
    assert errors == []


# Past its deadline close() warns that it gave up, then closes the HTTP client under the request
# still in flight: the sender must not take that ReadError for a failing server and warn "retrying
# with backoff" as well (nothing will retry; DESIGN §4.2: close() warns once).
def test_close_past_its_deadline_warns_once(
    server: ServerProcess, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    with Proxy(server.url, lambda n: HANG) as proxy:
        s = Session("hung", WS, remote=proxy.url, api_key=token).open()
        s.track("t").append(i=0)
        with warned() as messages:
            s.close(timeout=1)
        assert len(proxy.bulk) == 1  # the batch was in flight when close() gave up
    assert [m for m in messages if "dreamlake sync" in m], messages
    assert len(messages) == 1, messages


# A file that is not a spool is listed and left as it is, by `dreamlake sync` and by any new session
# in the same root; so is one that looks like a spool until its names.
@pytest.mark.parametrize("damage", ["random", "names"])
def test_sync_keeps_a_spool_it_cannot_read_as_it_was(tmp_path: Path, damage: str) -> None:
    damaged = tmp_path / ".spool" / "damaged.spool"
    damaged.parent.mkdir()
    content = random.Random(1).randbytes(4096)
    if damage == "names":  # a header that checks out, then no session where the names begin
        content = MAGIC + (4096).to_bytes(8, "little") + bytes(9 << 20)
    damaged.write_bytes(content)
    done = sync(tmp_path, UNUSED_KEY, "--remote", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert f"not sent: {damaged}: unreadable spool" in done.stderr
    with warned():
        Session("other", WS, local_path=tmp_path).close()
    assert damaged.read_bytes() == content


TIMED_OUT_FLUSH = """
import warnings

from dreamlake import FlushTimeoutError

s = Session(NAME, WS, remote=URL, api_key=KEY, batch_size=N, max_queue=N, flush_interval=3600).open()
track = s.track("t")
for i in range(N):
    track.append(i=i)
try:
    s.flush(timeout=0.01)
except FlushTimeoutError as exc:
    print("timed out:", exc, flush=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # what is left in the spool, as expected
    s.close(timeout=1)
"""


# DESIGN §4.2: past its timeout flush() raises FlushTimeoutError "and everything is in the journal"
# (the spool).
# So the timeout bounds the wait for the server, not the hand-over: one hand-over of 200,000 points
# takes longer than 10 ms, and a timeout covering it raised with them all still in memory.
def test_a_timed_out_flush_leaves_everything_in_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    dead = f"http://127.0.0.1:{free_port()}"
    script = make_script(block(TIMED_OUT_FLUSH), NAME="slow", WS=WS, URL=dead, KEY=UNUSED_KEY, N=200_000)
    with Child(script) as child:
        line = child.expect(lambda line: line.startswith("timed out:"))
        assert child.wait() == 0, child.stderr
    in_memory = re.search(r"(\d+) points are still in memory", line)
    assert in_memory is not None, line
    assert int(in_memory.group(1)) == 0
    [path] = spools(tmp_path)
    assert unacked(path) == 200_000


STUCK_CLOSE = """
from dreamlake import FlushTimeoutError

s = Session(NAME, WS, remote=URL, api_key=KEY).open()
s.track("t").append(i=0)
try:
    s.flush(timeout=0.5)
except FlushTimeoutError:
    print("flush timed out", flush=True)
s.close(timeout=2)
print("closed", flush=True)
"""


# A flush() that timed out leaves its wait for the server running on the agent's loop; close() must
# cancel it, not wait for it (that hung for ever with the server down: DESIGN §4.2, close(timeout)
# never hangs on a dead server).
def test_close_after_a_timed_out_flush_still_returns_on_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    dead = f"http://127.0.0.1:{free_port()}"
    script = make_script(block(STUCK_CLOSE), NAME="stuck", WS=WS, URL=dead, KEY=UNUSED_KEY)
    with Child(script) as child:
        child.expect("flush timed out")
        child.expect("closed", timeout=10)  # close(timeout=2), with room to spare
        assert child.wait() == 0, child.stderr
    assert len(spools(tmp_path)) == 1  # the point waits in the spool


IN_FLIGHT = """
from dreamlake import FlushTimeoutError

s = Session(NAME, WS, remote=URL, api_key=KEY, flush_interval=3600).open()
track = s.track("t")
for i in range(N):
    track.append(i=i)
try:
    s.flush(timeout=2)  # the batch reaches the server, which stores it; its answer never comes
except FlushTimeoutError:
    print("in flight", flush=True)
time.sleep(60)
"""


# kill -9 while a batch is on the wire, after the server stored it: the spool says which batch was in
# flight, so `dreamlake sync` resends that very batch with its idempotency key (not the same points
# under a new key, which would store them twice).
def test_kill9_with_a_batch_in_flight_resends_it_under_its_key(
    server: ServerProcess, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMLAKE_LOCAL_PATH", str(tmp_path))
    count = 20_000
    with Proxy(server.url, lambda n: STORE_AND_HANG) as proxy:
        script = make_script(block(IN_FLIGHT), NAME="in-flight", WS=WS, URL=proxy.url, KEY=token, N=count)
        with Child(script) as child:
            child.expect("in flight")
            child.kill()
        [sent] = proxy.bulk
        assert sent.status == 200  # stored; the client never heard
        assert sent.repeat is False
    check_stored_once(stored_points(server.url, token, "in-flight"), count)
    [path] = spools(tmp_path)
    assert unacked(path) == count
    done = sync(tmp_path, token, "--remote", server.url)
    assert done.returncode == 0, done.stderr
    check_stored_once(stored_points(server.url, token, "in-flight"), count)  # not twice
    assert spools(tmp_path) == []


BURST = """
os.environ["DREAMLAKE_LOCAL_PATH"] = ROOT  # remote mode's spool goes under it
kw = {"local_path": ROOT} if HYBRID else {}
s = Session(NAME, WS, remote=URL, api_key=KEY, flush_interval=0.005, batch_size=2000, **kw).open()
track = s.track("t")
stop = random.randrange(100, N)
for i in range(N):
    if i == stop - 100:
        s.log("the kill comes soon")
        s.parameters().set(stopped_at=stop)
    track.append(i=i, x=i * 0.5, tag=f"p{i}")
    if i == stop:
        os.write(1, f"returned {i}\\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
"""


# kill -9 at a random moment of a burst, the server up, some batches acknowledged and one perhaps on
# the wire: the next run of the session (in the same mode) sends what the spool held, each point
# once, in order; in hybrid mode the local files get each point once too.
@pytest.mark.parametrize("hybrid", [False, True])
@pytest.mark.parametrize("trial", range(3))
def test_kill9_in_a_burst_and_the_next_run_stores_every_returned_call_once(
    server: ServerProcess, token: str, tmp_path: Path, hybrid: bool, trial: int
) -> None:
    root, count, name = tmp_path / "root", 20_000, f"burst-{hybrid}-{trial}"
    kw: dict[str, Any] = {"local_path": root} if hybrid else {}
    script = make_script(
        "import os, random, signal\n" + block(BURST),
        NAME=name, WS=WS, URL=server.url, KEY=token, N=count, ROOT=str(root), HYBRID=hybrid,
    )  # fmt: skip
    with Child(script) as child:
        line = child.expect(lambda line: line.startswith("returned "))
        child.wait(30)
    returned = int(line.split()[1]) + 1
    [left] = spools(root)
    owed = unacked(left)  # what the server had not acknowledged (the agent may have sent it all)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DREAMLAKE_LOCAL_PATH", str(root))
        with Session(name, WS, remote=server.url, api_key=token, **kw) as s:
            recovered = s.agent_stats()["recovered"]
            # Hybrid mode also counts what its local files lacked.
            assert recovered >= owed if hybrid else recovered == owed, (s.agent_stats(), child.stderr)
            assert s.parameters().get()["stopped_at"] == returned - 1
    points = stored_points(server.url, token, name)
    check_stored_once(points, returned)
    assert [p["data"]["tag"] for p in points] == [f"p{i}" for i in range(returned)]
    if hybrid:
        lines = (root / WS / name / "tracks" / "t" / "data.jsonl").read_text().splitlines()
        assert [json.loads(line)["index"] for line in lines] == list(range(returned))
        assert [json.loads(line)["data"]["i"] for line in lines] == list(range(returned))
    assert spools(root) == []
