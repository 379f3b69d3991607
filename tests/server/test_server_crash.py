"""``kill -9`` of the server at random moments, then a restart on the same ``--data`` (DESIGN §4.3).

Two kinds of trials, each on one data directory that every trial's crash and restart accumulate on:

- **During ingest**: writer threads send bulk batches (msgpack, an ``Idempotency-Key`` each), the server
  is killed at a random moment, a new one started. Every batch sent is sent again with its key: an
  acknowledged one comes back ``"repeat": true`` where it was first stored; one never acknowledged is
  stored now or was already. Then every point is read exactly once, at the index its batch was
  given, indices gap-free; log sequence numbers and the parameters' version count each batch once.
- **During archiving** (``--chunk-size 100``): thousands of points are ingested, and the server is
  killed while the archiver moves full chunks to the cold tier. After the restart, every point is read
  exactly once and in order both before and after the archiver finishes, with the same values and
  ``createdAt``, and the counters agree.

The randomness is seeded (``DREAMLAKE_CRASH_SEED`` to replay one run); every failure message names the
seed and the trial.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import zstandard

from ._server import ServerProcess, make_token

pytestmark = pytest.mark.timeout(240)

TRIALS = 8  # of each kind; both together stay well under a minute on two cores
INGEST_CHUNK = 500  # the archiver also runs during the ingest trials
WRITERS = 3
ARCHIVE_CHUNK = 100
ARCHIVE_TRACKS = {"x": 5_000, "y/z": 2_500}  # points per track, plus a random tail of 0-99
DEADLINE = 30.0  # seconds for any effect polled for

_ENCODER = msgspec.msgpack.Encoder()


@pytest.fixture
def seed() -> int:
    """The run's seed: ``DREAMLAKE_CRASH_SEED`` or a fresh one (named in every failure)."""
    given = os.environ.get("DREAMLAKE_CRASH_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def post_bulk(client: httpx.Client, sid: str, batch: dict[str, Any], key: str) -> httpx.Response:
    """``POST /sessions/{sid}/batches`` as the agent sends it: msgpack, zstd, an idempotency key."""
    body = zstandard.ZstdCompressor().compress(_ENCODER.encode(batch))
    headers = {"Content-Type": "application/msgpack", "Content-Encoding": "zstd", "Idempotency-Key": key}
    return client.post(f"/sessions/{sid}/batches", content=body, headers=headers)


def open_session(server: ServerProcess, token: str, name: str) -> str:
    with server.client(token) as api:
        r = api.post("/workspaces/ws/sessions", json={"name": name})
        assert r.status_code == 200, r.text
        session_id: str = r.json()["session"]["id"]
        return session_id


def wait_for(check: Callable[[], bool], where: str, what: str) -> None:
    """Poll ``check`` until true; fail at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{where}: {what} not reached in {DEADLINE}s")
        time.sleep(0.005)


@dataclass
class Sent:
    """A batch as sent, and the server's answer once it acknowledged it (200)."""

    key: str
    batch: dict[str, Any]
    answer: dict[str, Any] | None = None


class Writer(threading.Thread):
    """Sends bulk batches until stopped or the server goes away; keeps every batch it sent.

    Each point carries a payload unique in the whole run (``"p"``), so a point stored twice or at
    another index shows.
    """

    def __init__(self, url: str, token: str, sid: str, label: str, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.sid, self.label, self.rng = url, token, sid, label, rng
        self.sent: list[Sent] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def make_batch(self, k: int) -> dict[str, Any]:
        key = f"{self.label}:{k}"
        tracks = [
            {
                "name": "loss",
                "points": [{"p": f"{key}/loss/{j}", "v": j * 0.5} for j in range(self.rng.randint(1, 400))],
            }
        ]
        if (extra := self.rng.randint(0, 30)) > 0:
            tracks.append({"name": "val/acc", "points": [{"p": f"{key}/acc/{j}"} for j in range(extra)]})
        logs = [
            {"timestamp": time.time(), "level": "info", "message": f"{key}/log/{j}"}
            for j in range(self.rng.randint(0, 3))
        ]
        return {"tracks": tracks, "logs": logs, "parameters": [{"last": {self.label: k}}]}

    def run(self) -> None:
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        ) as client:
            for k in itertools.count():
                if self.stop.is_set():
                    return
                sent = Sent(f"{self.label}:{k}", self.make_batch(k))
                self.sent.append(sent)
                try:
                    r = post_bulk(client, self.sid, sent.batch, sent.key)
                except httpx.TransportError:
                    return  # the server was killed: sent, maybe stored, not acknowledged
                if r.status_code != 200:
                    self.errors.append(f"{sent.key}: {r.status_code} {r.text}")
                    return
                sent.answer = r.json()

    def acknowledged(self) -> int:
        return sum(s.answer is not None for s in self.sent)


def placement(answer: dict[str, Any]) -> tuple[Any, ...]:
    """Where a batch's contents went: each track's start index and count, the logs' sequence numbers,
    the parameters' version."""
    return answer["tracks"], answer["logs"], answer["parametersVersion"]


def resend(api: httpx.Client, sid: str, sent: list[Sent], where: str) -> None:
    """Send every batch again with its key: each is then stored exactly once, where its answer says."""
    for s in sent:
        r = post_bulk(api, sid, s.batch, s.key)
        assert r.status_code == 200, f"{where}: resending {s.key}: {r.status_code} {r.text}"
        answer = r.json()
        if s.answer is not None:
            assert answer["repeat"] is True, f"{where}: acknowledged {s.key} was stored again: {answer}"
            assert placement(answer) == placement(s.answer), f"{where}: {s.key} moved: {s.answer} -> {answer}"
        else:  # never acknowledged: stored before the crash (a repeat) or now; a third send repeats
            s.answer = answer
            again = post_bulk(api, sid, s.batch, s.key).json()
            assert again["repeat"] is True, f"{where}: unacknowledged {s.key} stored twice: {answer}, {again}"
            assert placement(again) == placement(answer), f"{where}: {s.key}: {answer} -> {again}"


def read_all(api: httpx.Client, url: str, start_param: str, items: str, where: str) -> list[dict[str, Any]]:
    """Every item of a paged route (``limit`` 10,000), following ``hasMore``."""
    out: list[dict[str, Any]] = []
    while True:
        r = api.get(url, params={start_param: len(out), "limit": 10_000})
        assert r.status_code == 200, f"{where}: {url}: {r.text}"
        page = r.json()
        out.extend(page[items])
        if not page["hasMore"] or not page[items]:
            return out


def read_track(api: httpx.Client, sid: str, name: str, where: str) -> list[dict[str, Any]]:
    return read_all(api, f"/sessions/{sid}/tracks/{name}/data", "startIndex", "data", where)


def stats_of(api: httpx.Client, sid: str, name: str, where: str) -> dict[str, int]:
    """A track's counters as ints, checked to agree with each other."""
    r = api.get(f"/sessions/{sid}/tracks/{name}/stats")
    assert r.status_code == 200, f"{where}: {r.text}"
    doc = r.json()
    total, buffered, chunked = (
        int(doc[k]) for k in ("totalDataPoints", "bufferedDataPoints", "chunkedDataPoints")
    )
    size = doc["chunkSize"]
    assert total == chunked + buffered, f"{where}: {doc}"
    assert doc["totalChunks"] * size == chunked, f"{where}: {doc}"
    return {"total": total, "buffered": buffered, "chunked": chunked, "size": size}


def check_exactly_once(api: httpx.Client, sid: str, sent: list[Sent], where: str) -> None:
    """Every point, log entry and parameter change of ``sent`` is stored once, where its answer put it,
    and nothing else is stored."""
    expected: dict[str, dict[int, dict[str, Any]]] = {}
    logs: dict[int, str] = {}
    for s in sent:
        assert s.answer is not None, f"{where}: {s.key} has no answer"
        for track, placed in zip(s.batch["tracks"], s.answer["tracks"], strict=True):
            assert (placed["name"], placed["count"]) == (track["name"], len(track["points"])), (where, placed)
            slots = expected.setdefault(track["name"], {})
            for index, point in enumerate(track["points"], placed["startIndex"]):
                assert index not in slots, f"{where}: index {index} of {track['name']} given twice"
                slots[index] = point
        assert s.answer["logs"]["count"] == len(s.batch["logs"]), (where, s.answer)
        for seq, entry in enumerate(s.batch["logs"], s.answer["logs"]["startSequence"]):
            assert seq not in logs, f"{where}: log sequence {seq} given twice"
            logs[seq] = entry["message"]

    listed = api.get(f"/sessions/{sid}/tracks").json()["tracks"]
    assert sorted(t["name"] for t in listed) == sorted(expected), f"{where}: {listed}"
    for name, slots in expected.items():
        points = read_track(api, sid, name, where)
        indices = [p["index"] for p in points]
        assert indices == list(range(len(points))), f"{where}: {name} indices are not 0..n-1 gap-free"
        assert sorted(slots) == indices, (
            f"{where}: {name}: {len(slots)} points acknowledged, {len(points)} stored"
        )
        payloads = [p["data"]["p"] for p in points]
        assert len(set(payloads)) == len(payloads), f"{where}: {name}: a point is stored twice"
        assert [p["data"] for p in points] == [slots[i] for i in indices], f"{where}: {name}: a point moved"
        stats = stats_of(api, sid, name, where)
        assert stats["total"] == len(points), (where, name, stats)

    stored_logs = read_all(api, f"/sessions/{sid}/logs", "startSequence", "logs", where)
    assert [e["sequenceNumber"] for e in stored_logs] == sorted(logs) == list(range(len(logs))), where
    assert [e["message"] for e in stored_logs] == [logs[seq] for seq in sorted(logs)], where
    params = api.get(f"/sessions/{sid}/parameters").json()
    assert params["version"] == len(sent), (
        f"{where}: {len(sent)} parameter changes, version {params['version']}"
    )
    last: dict[str, int] = {}  # each writer's batches are stored in order: its last one's change wins
    for s in sent:
        label, k = s.key.split(":")
        last[f"last.{label}"] = max(last.get(f"last.{label}", -1), int(k))
    assert params["data"] == last, where


def crash_during_ingest(
    server: ServerProcess, token: str, trial: int, rng: random.Random, where: str
) -> tuple[str, list[Sent]]:
    """Writers send batches into a new session until the server is killed at a random moment; the
    session's id and every batch sent (with the answers received)."""
    sid = open_session(server, token, f"ingest-{trial}")
    writers = [
        Writer(server.url, token, sid, f"t{trial}w{w}", random.Random(rng.getrandbits(64)))
        for w in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    try:
        enough = rng.randint(1, 20)
        wait_for(
            lambda: sum(w.acknowledged() for w in writers) >= enough, where, f"{enough} acknowledgements"
        )
        time.sleep(rng.uniform(0, 0.3))  # the kill's random moment, not a wait for an effect
    finally:
        server.kill()
        for writer in writers:
            writer.stop.set()
            writer.join(DEADLINE)
    assert not any(w.is_alive() for w in writers), f"{where}: a writer hangs after the kill"
    assert [e for w in writers for e in w.errors] == [], where
    return sid, [s for w in writers for s in w.sent]


def test_kill9_during_ingest_stores_each_batch_once(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = tmp_path / "data"
    token = make_token(data, "ws")
    args = ("--chunk-size", str(INGEST_CHUNK))
    done: list[tuple[str, list[Sent], str]] = []
    with contextlib.ExitStack() as servers:  # every server started is stopped (or already killed)
        server = servers.enter_context(ServerProcess(data, *args))
        for trial in range(TRIALS):
            where = f"seed={seed} ingest trial {trial}"
            sid, sent = crash_during_ingest(server, token, trial, rng, where)
            where += (
                f" ({len(sent)} batches sent, unacknowledged: {[s.key for s in sent if s.answer is None]})"
            )
            server = servers.enter_context(ServerProcess(data, *args))
            with server.client(token) as api:
                resend(api, sid, sent, where)
                check_exactly_once(api, sid, sent, where)
            done.append((sid, sent, where))

        # Later crashes (and the archiver, which ran meanwhile) disturbed nothing stored before them.
        with server.client(token) as api:
            for sid, sent, where in done:
                check_exactly_once(api, sid, sent, f"{where}, at the end")


def archive_batches(rng: random.Random, trial: int, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Bulk batches holding ``sizes[name]`` points of each track (point ``i`` is ``{"i": i, "p": ...}``):
    slices of random length (hot batches straddle chunk boundaries), then one batch with the remaining
    four fifths or more, so that the archiver has dozens of chunks to move once the last is stored."""
    sent = dict.fromkeys(sizes, 0)
    batches = []
    while any(sent[name] < n // 5 for name, n in sizes.items()):
        tracks = []
        for name, n in sizes.items():
            count = min(rng.randint(1, 300), max(0, n // 5 - sent[name]))
            if count:
                tracks.append({"name": name, "points": _points(trial, name, sent[name], count)})
                sent[name] += count
        batches.append({"tracks": tracks})
    batches.append(
        {
            "tracks": [
                {"name": name, "points": _points(trial, name, sent[name], n - sent[name])}
                for name, n in sizes.items()
            ]
        }
    )
    return batches


def _points(trial: int, name: str, first: int, count: int) -> list[dict[str, Any]]:
    return [{"i": i, "p": f"a{trial}/{name}/{i}"} for i in range(first, first + count)]


def check_in_order(
    api: httpx.Client, sid: str, trial: int, sizes: dict[str, int], where: str
) -> dict[str, list[dict[str, Any]]]:
    """Each track reads as exactly its points (see :func:`archive_batches`), once each, in order."""
    out = {}
    for name, n in sizes.items():
        points = read_track(api, sid, name, where)
        assert [p["index"] for p in points] == list(range(n)), f"{where}: {name} indices"
        assert [p["data"] for p in points] == _points(trial, name, 0, n), f"{where}: {name} points"
        out[name] = points
    return out


def crash_while_archiving(
    server: ServerProcess, token: str, trial: int, sizes: dict[str, int], rng: random.Random, where: str
) -> str:
    """Ingest ``sizes`` points into a new session, then kill the server while the archiver moves them:
    in even trials a random 0-300 ms after the last ingest, in odd ones once it has moved a random
    share of what ``x`` had left. The session's id."""
    full = ARCHIVE_CHUNK * (sizes["x"] // ARCHIVE_CHUNK)
    sid = open_session(server, token, f"archive-{trial}")
    try:
        with server.client(token) as api:
            for k, batch in enumerate(archive_batches(rng, trial, sizes)):
                r = post_bulk(api, sid, batch, f"a{trial}:{k}")
                assert r.status_code == 200, f"{where}: {r.text}"
            if trial % 2 == 0:
                time.sleep(rng.uniform(0, 0.3))  # the kill's random moment, not a wait for an effect
            else:
                chunked = stats_of(api, sid, "x", where)["chunked"]
                target = chunked + int(rng.uniform(0.05, 0.8) * (full - chunked))
                wait_for(
                    lambda: stats_of(api, sid, "x", where)["chunked"] >= target, where, f"{target} archived"
                )
    finally:
        server.kill()
    return sid


def check_recovered(
    api: httpx.Client, sid: str, trial: int, sizes: dict[str, int], where: str
) -> dict[str, dict[str, int]]:
    """After the restart: the points read exactly once and in order, before and after the archiver
    finishes (with the same values and ``createdAt``), and the counters then say all full chunks are
    cold. The counters as the restarted server first found them."""
    full = {name: n - n % ARCHIVE_CHUNK for name, n in sizes.items()}
    found = {name: stats_of(api, sid, name, where) for name in sizes}
    assert {name: s["total"] for name, s in found.items()} == sizes, f"{where}: {found}"
    before = check_in_order(api, sid, trial, sizes, f"{where}, just after the restart")

    def archived() -> bool:
        return all(stats_of(api, sid, name, where)["chunked"] == full[name] for name in sizes)

    wait_for(archived, where, f"chunkedDataPoints == {full}")
    after = check_in_order(api, sid, trial, sizes, f"{where}, once archived")
    assert after == before, f"{where}: archiving changed a point or its createdAt"
    for name, n in sizes.items():
        stats = stats_of(api, sid, name, where)
        assert (stats["total"], stats["chunked"], stats["buffered"]) == (n, full[name], n - full[name]), where
    return found


def test_kill9_while_archiving_keeps_each_point_once(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = tmp_path / "data"
    token = make_token(data, "ws")
    args = ("--chunk-size", str(ARCHIVE_CHUNK))
    at_restart: list[str] = []  # per trial: each track's chunked/total as the restarted server found it
    mid_archive = 0
    with contextlib.ExitStack() as servers:  # every server started is stopped (or already killed)
        server = servers.enter_context(ServerProcess(data, *args))
        for trial in range(TRIALS):
            where = f"seed={seed} archive trial {trial}"
            sizes = {name: n + rng.randint(0, ARCHIVE_CHUNK - 1) for name, n in ARCHIVE_TRACKS.items()}
            sid = crash_while_archiving(server, token, trial, sizes, rng, where)
            server = servers.enter_context(ServerProcess(data, *args))
            with server.client(token) as api:
                found = check_recovered(api, sid, trial, sizes, where)
            at_restart.append(" ".join(f"{name}:{s['chunked']}/{s['total']}" for name, s in found.items()))
            mid_archive += any(s["buffered"] >= ARCHIVE_CHUNK for s in found.values())
    # The kills must have hit the archiver at work (full chunks still hot), or they tested nothing.
    assert mid_archive > 0, f"seed={seed}: no kill landed while chunks were being archived: {at_restart}"
