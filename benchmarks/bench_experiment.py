"""Experiment-API benchmarks of dreamlake: ``log()`` per call, ``parameters().set()`` rate, logs end to end.

Run it as a script (it imports helpers from ``bench_core.py`` beside it)::

    python benchmarks/bench_experiment.py [--quick] [--json [PATH]] [--rounds N] [--block N]
        [--set-new N] [--set-same N] [--param-rounds N] [--logs N] [--e2e-runs N]

``--json`` alone prints the results as JSON on stdout (the report then goes to stderr); ``--json PATH``
writes them to PATH as ``bench_core.py`` does. By default the run takes about 30-40 s on the project's
machine (2 vCPU VM), under 15 s with ``--quick``. As in ``bench_core.py``, every dreamlake figure is
set against a baseline measured in the same run, the run works in a temporary directory deleted at
the end, and ``DREAMLAKE_*`` environment variables are removed, so "default options" are the
package defaults.

Methods
-------
1. Per-call cost of ``log()`` against ``append()``. Seven loop bodies, each written out as a
   ``for i in range(n)`` loop (loop overhead included on every side), timed with
   ``time.perf_counter_ns`` around ``--block`` calls (default 50,000):

   - ``append``: ``track.append(value=0.5, step=i)`` (the reference of ``bench_core.py``);
   - ``log``: ``session.log(MESSAGE, level="info")``;
   - ``log_step``: ``session.log(MESSAGE, level="info", step=i)`` (one metadata keyword);
   - ``log_fluent``: ``session.log(metadata={"step": i}).info(MESSAGE)`` (0.2.x builder);
   - ``bare``: ``lst.append({"value": 0.5, "step": i})``, ``bench_core.py``'s baseline;
   - ``bare_log``: ``lst.append({"timestamp": time.time(), "level": "info", "message": MESSAGE,
     "metadata": None})``, the entry ``log()`` queues, built by hand (what any logger must do);
   - ``bare_log_step``: the same with ``"metadata": {"step": i}``, the entry of ``log_step``.

   Each round opens a fresh Session with ``batch_size`` and ``max_queue`` = 2 x block and a one-hour
   ``flush_interval`` (as ``bench_core.py`` does for ``append``), so the agent sleeps while a block
   runs and the figure is the call, not backpressure; ``s.flush()`` runs after every dreamlake block,
   outside the timing, ``gc.collect()`` before every block, on all sides. The session directory is
   deleted after each round. ``--rounds`` rounds (default 7) follow one discarded warm-up round; the
   seven sides run in the order above in even rounds and reversed in odd ones. The figure per side is
   the median over rounds of the mean ns per call; each ratio is the median over rounds of that
   round's ratio (the machine's speed swings up to 2x from one second to the next, so only figures
   measured side by side are divided).

2. ``session.parameters().set(**kw)`` rate, until on disk. (a) "new keys": call ``i`` sets
   ``set(**{f"group{i}": {"lr": 0.1, "bs": 32}})`` (two new dotted keys per call), ``--set-new`` calls
   (default 400); (b) "same key": ``set(lr=i)``, ``--set-same`` calls (default 1,000). The timed region
   is the loop plus a final ``session.flush()``. Each measurement uses a fresh Session with the default
   agent options, on which ``parameters().get()`` has run before the timing (the first ``set()`` of a
   process otherwise loads the stored keys, one round trip to the agent). Afterwards
   ``parameters.json`` must hold exactly the expected keys and ``version`` == number of calls.
   Baseline, what a naive synchronous implementation does: keep the dict, ``update`` it with the same
   keywords, then ``json.dump`` the whole dict to a temporary file and ``os.replace`` it over
   ``parameters.json`` at every call (no fsync, like dreamlake). ``--param-rounds`` rounds (default
   5) after one warm-up round, dreamlake first in even rounds; figures are medians of calls/s, the
   ratio the median of per-round time ratios dreamlake / baseline (< 1: dreamlake is faster).
   Per-call work on both sides grows with the number of keys already set, so the "new keys" rate
   depends on ``--set-new``.

3. Logs end to end: ``--logs`` (default 200,000) ``session.log(MESSAGE, level="info")`` calls on a
   Session with the default agent options, timed from the first call until ``close()`` returns; then
   ``logs/logs.jsonl`` must have exactly N lines, line k holding ``sequenceNumber`` k, level ``info``
   and the message (every line is decoded with the standard ``json`` module). Baseline: the
   ``bare_log`` loop of section 1 for the same N. ``--e2e-runs`` (default 3) pairs, alternating
   which side goes first; medians are reported.

Not in the table: a breakdown measured in the same run (blocks of up to 20,000 calls, median of 3,
flushes outside the timing) of what a ``log()`` call is made of: ``time.time()``, the internal
queueing call (``Session._log_put(entry)``), the Python slow path (``Session._log_slow``),
``_values.normalize`` of an entry with metadata and of the metadata alone; and of the agent's
per-entry encoding cost (``_jsonl.encode_log_lines`` and the ``_clock.utc_iso`` it calls per entry,
against ``_jsonl.encode_lines`` per track point).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _harness import Row, apply_defaults, drop_dreamlake_env, fmt, ns, platform_line
from bench_core import machine_facts
from dreamlake import Session
from dreamlake._disk.jsonl import LEVEL, TIMESTAMP, encode_lines, encode_log_lines
from dreamlake._disk.jsonl import MESSAGE as MESSAGE_KEY
from dreamlake._schema.timestamps import utc_iso
from dreamlake._schema.values import normalize

perf_counter_ns = time.perf_counter_ns
WORKSPACE = "bench"
TRACK = "loss"
MESSAGE = "epoch done"

LOG_SIDES = ("append", "log", "log_step", "log_fluent", "bare", "bare_log", "bare_log_step")
# (numerator, denominator) of the per-round ratios of section 1
LOG_RATIOS = (
    ("append", "bare"),
    ("log", "append"),
    ("log_step", "append"),
    ("log_fluent", "append"),
    ("log", "bare_log"),
    ("log_step", "bare_log_step"),
)


def ratio_key(num: str, den: str) -> str:
    return f"{num}/{den}"


# --------------------------------------------------------------------------------------------------
# 1. log() per call


def append_block(session: Session, n: int) -> int:
    track = session.track(TRACK)
    start = perf_counter_ns()
    for i in range(n):
        track.append(value=0.5, step=i)
    return perf_counter_ns() - start


def log_block(session: Session, n: int) -> int:
    start = perf_counter_ns()
    for _ in range(n):
        session.log(MESSAGE, level="info")
    return perf_counter_ns() - start


def log_step_block(session: Session, n: int) -> int:
    start = perf_counter_ns()
    for i in range(n):
        session.log(MESSAGE, level="info", step=i)
    return perf_counter_ns() - start


def log_fluent_block(session: Session, n: int) -> int:
    start = perf_counter_ns()
    for i in range(n):
        session.log(metadata={"step": i}).info(MESSAGE)  # type: ignore[union-attr]
    return perf_counter_ns() - start


def bare_block(lst: list[dict[str, Any]], n: int) -> int:
    start = perf_counter_ns()
    for i in range(n):
        lst.append({"value": 0.5, "step": i})  # noqa: PERF401 -- the baseline is this very loop
    return perf_counter_ns() - start


def bare_log_block(lst: list[dict[str, Any]], n: int) -> int:
    start = perf_counter_ns()
    for _ in range(n):
        lst.append(  # noqa: PERF401 -- the baseline is this very loop
            {"timestamp": time.time(), "level": "info", "message": MESSAGE, "metadata": None}
        )
    return perf_counter_ns() - start


def bare_log_step_block(lst: list[dict[str, Any]], n: int) -> int:
    start = perf_counter_ns()
    for i in range(n):
        lst.append(  # noqa: PERF401 -- the baseline is this very loop
            {"timestamp": time.time(), "level": "info", "message": MESSAGE, "metadata": {"step": i}}
        )
    return perf_counter_ns() - start


DL_BLOCKS: dict[str, Callable[[Session, int], int]] = {
    "append": append_block,
    "log": log_block,
    "log_step": log_step_block,
    "log_fluent": log_fluent_block,
}
BARE_BLOCKS: dict[str, Callable[[list[dict[str, Any]], int], int]] = {
    "bare": bare_block,
    "bare_log": bare_log_block,
    "bare_log_step": bare_log_step_block,
}


def bench_log(root: Path, rounds: int, block: int) -> dict[str, Any]:
    """Section 1; see the module docstring."""
    bound = 2 * block
    means: dict[str, list[float]] = {side: [] for side in LOG_SIDES}
    ratios: dict[str, list[float]] = {ratio_key(a, b): [] for a, b in LOG_RATIOS}
    unexpected_flushes = 0
    for r in range(-1, rounds):  # round -1 is a warm-up, discarded
        order = LOG_SIDES if r % 2 == 0 else LOG_SIDES[::-1]
        directory = root / f"round{r + 1}"
        session = Session(
            f"log{r + 1}", WORKSPACE, local_path=directory,
            batch_size=bound, max_queue=bound, flush_interval=3600.0,
        )
        figures: dict[str, float] = {}
        explicit = 0
        with session:
            session.track(TRACK)
            for side in order:
                gc.collect()
                if side in DL_BLOCKS:
                    figures[side] = DL_BLOCKS[side](session, block) / block
                    session.flush()  # the agent writes between blocks, never during one
                    explicit += 1
                else:
                    lst: list[dict[str, Any]] = []
                    figures[side] = BARE_BLOCKS[side](lst, block) / block
                    del lst
            stats = session.agent_stats()
        shutil.rmtree(directory, ignore_errors=True)
        if stats["written"] != explicit * block:
            raise RuntimeError(f"log bench: {explicit * block} calls but {stats['written']} written")
        unexpected_flushes += stats["flushes"] - explicit
        if r < 0:
            continue
        for side in LOG_SIDES:
            means[side].append(figures[side])
        for a, b in LOG_RATIOS:
            ratios[ratio_key(a, b)].append(figures[a] / figures[b])
    return {
        "rounds": rounds,
        "block": block,
        "mean_ns": {side: statistics.median(v) for side, v in means.items()},
        "ratio": {key: statistics.median(v) for key, v in ratios.items()},
        "per_round_mean_ns": means,
        "per_round_ratio": ratios,
        "unexpected_agent_flushes": unexpected_flushes,
    }


def log_breakdown(root: Path, n: int) -> dict[str, Any]:
    """ns per call of the parts of ``log()`` and of the agent's encoding; median of 3 blocks of ``n``."""
    out: dict[str, Any] = {}

    def measure(label: str, body: Callable[[], Any], after: Callable[[], Any] | None = None) -> None:
        samples = []
        for _ in range(3):
            gc.collect()
            start = perf_counter_ns()
            body()
            samples.append((perf_counter_ns() - start) / n)
            if after is not None:
                after()  # outside the timing
        out[label] = statistics.median(samples)

    clock = time.time
    measure("time.time()", lambda: [clock() for _ in range(n)])
    bound = 2 * n
    session = Session("breakdown", WORKSPACE, local_path=root, batch_size=bound, max_queue=bound,
                      flush_interval=3600.0)
    with session:
        flush = session.flush
        measure("session.log(msg, level='info')",
                lambda: [session.log(MESSAGE, level="info") for _ in range(n)], flush)
        measure("Session._log_put(entry dict built in the loop)",
                lambda: [session._log_put({TIMESTAMP: 1.0, LEVEL: "info", MESSAGE_KEY: MESSAGE})
                         for _ in range(n)], flush)
        measure("Session._log_slow(msg, level='info')",
                lambda: [session._log_slow(MESSAGE, level="info") for _ in range(n)], flush)
    shutil.rmtree(root, ignore_errors=True)
    entries: list[dict[str, Any]] = [
        {"timestamp": time.time(), "level": "info", "message": MESSAGE, "metadata": {"step": i}}
        for i in range(n)
    ]
    measure("_values.normalize(entry with metadata)", lambda: [normalize(e) for e in entries])
    measure("_values.normalize(metadata)", lambda: [normalize(e["metadata"]) for e in entries])
    # Queued entries as log() builds them (_jsonl.encode_log_lines): flat, own fields under 0, 1, 2.
    queued = [{TIMESTAMP: e["timestamp"], LEVEL: "info", MESSAGE_KEY: MESSAGE} for e in entries]
    queued_step = [dict(q, step=i) for i, q in enumerate(queued)]
    measure("agent: _jsonl.encode_log_lines per entry", lambda: encode_log_lines(0, queued))
    measure("agent: _jsonl.encode_log_lines per entry with metadata",
            lambda: encode_log_lines(0, queued_step))
    measure("agent: _clock.utc_iso per entry", lambda: [utc_iso(e["timestamp"]) for e in entries])
    points = [{"value": 0.5, "step": i} for i in range(n)]
    measure("agent: _jsonl.encode_lines per track point", lambda: encode_lines(0, points))
    return out


# --------------------------------------------------------------------------------------------------
# 2. parameters().set()


def params_file(directory: Path, name: str) -> Path:
    return directory / WORKSPACE / name / "parameters.json"


def expected_params(n: int, new_keys: bool) -> dict[str, Any]:
    if new_keys:
        return {f"group{i}.{key}": value for i in range(n) for key, value in (("lr", 0.1), ("bs", 32))}
    return {"lr": n - 1}


def dl_set(directory: Path, n: int, new_keys: bool) -> dict[str, Any]:
    """``n`` calls of ``session.parameters().set(...)`` then ``flush()``, on a fresh default Session."""
    name = "params"
    with Session(name, WORKSPACE, local_path=directory) as session:
        session.parameters().get()  # loads the stored keys: the first set() would otherwise wait for it
        flushes0 = session.agent_stats()["flushes"]
        gc.collect()
        start = perf_counter_ns()
        if new_keys:
            for i in range(n):
                session.parameters().set(**{f"group{i}": {"lr": 0.1, "bs": 32}})
        else:
            for i in range(n):
                session.parameters().set(lr=i)
        loop_end = perf_counter_ns()
        session.flush()
        end = perf_counter_ns()
        flushes = session.agent_stats()["flushes"] - flushes0
    doc = json.loads(params_file(directory, name).read_text())
    ok = doc.get("data") == expected_params(n, new_keys) and doc.get("version") == n
    if not ok:
        raise RuntimeError(f"parameters.json after {n} set() calls is wrong: version {doc.get('version')}")
    return {
        "seconds": (end - start) / 1e9,
        "loop_s": (loop_end - start) / 1e9,
        "flush_s": (end - loop_end) / 1e9,
        "agent_flushes": flushes,
        "bytes": params_file(directory, name).stat().st_size,
    }


def naive_set(directory: Path, n: int, new_keys: bool) -> dict[str, Any]:
    """Baseline: update a dict, ``json.dump`` all of it to a temp file and ``os.replace`` it, per call."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "parameters.json"
    tmp = directory / ".parameters.json.tmp"
    params: dict[str, Any] = {}
    gc.collect()
    start = perf_counter_ns()
    if new_keys:
        for i in range(n):
            params.update(**{f"group{i}": {"lr": 0.1, "bs": 32}})
            with open(tmp, "w") as f:
                json.dump(params, f)
            os.replace(tmp, path)
    else:
        for i in range(n):
            params.update(lr=i)
            with open(tmp, "w") as f:
                json.dump(params, f)
            os.replace(tmp, path)
    end = perf_counter_ns()
    if json.loads(path.read_text()) != params:
        raise RuntimeError("naive parameters file is wrong")
    return {"seconds": (end - start) / 1e9, "bytes": path.stat().st_size}


def bench_params(root: Path, rounds: int, set_new: int, set_same: int) -> dict[str, Any]:
    """Section 2; see the module docstring."""
    variants = {"new": (set_new, True), "same": (set_same, False)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        v: {"dreamlake": [], "baseline": []} for v in variants
    }
    for r in range(-1, rounds):  # round -1 is a warm-up, discarded
        order = ("dreamlake", "baseline") if r % 2 == 0 else ("baseline", "dreamlake")
        for variant, (n, new_keys) in variants.items():
            for side in order:
                directory = root / f"{variant}-{side}-{r + 1}"
                result = (dl_set if side == "dreamlake" else naive_set)(directory, n, new_keys)
                shutil.rmtree(directory, ignore_errors=True)
                if r >= 0:
                    runs[variant][side].append(result)
    out: dict[str, Any] = {"rounds": rounds}
    for variant, (n, _) in variants.items():
        dl, base = runs[variant]["dreamlake"], runs[variant]["baseline"]
        out[variant] = {
            "calls": n,
            "rate": {
                "dreamlake": statistics.median(n / x["seconds"] for x in dl),
                "baseline": statistics.median(n / x["seconds"] for x in base),
            },
            "ratio": statistics.median(d["seconds"] / b["seconds"] for d, b in zip(dl, base, strict=True)),
            "runs": runs[variant],
        }
    return out


# --------------------------------------------------------------------------------------------------
# 3. logs end to end


def verify_logs(path: Path, n: int) -> dict[str, Any]:
    """Decode every line of ``logs.jsonl``: N lines, line k numbered k, with the level and message."""
    bad = lines = 0
    with open(path, "rb") as f:
        for k, line in enumerate(f):
            lines += 1
            entry = json.loads(line)
            numbered = entry.get("sequenceNumber") == k
            if not numbered or entry.get("level") != "info" or entry.get("message") != MESSAGE:
                bad += 1
    return {"lines": lines, "bad_lines": bad, "bytes": path.stat().st_size, "ok": lines == n and bad == 0}


def e2e_logs(directory: Path, n: int) -> dict[str, Any]:
    gc.collect()
    session = Session("e2e", WORKSPACE, local_path=directory).open()  # default agent options
    start = time.perf_counter()
    for _ in range(n):
        session.log(MESSAGE, level="info")
    loop_end = time.perf_counter()
    session.close()
    end = time.perf_counter()
    stats = session.agent_stats()
    check = verify_logs(directory / WORKSPACE / "e2e" / "logs" / "logs.jsonl", n)
    return {
        "seconds": end - start,
        "loop_s": loop_end - start,
        "close_s": end - loop_end,
        "agent_flushes": stats["flushes"],
        "config": {
            "batch_size": session.config.batch_size,
            "max_queue": session.config.max_queue,
            "flush_interval": session.config.flush_interval,
        },
        "check": check,
    }


def e2e_bare(n: int) -> dict[str, Any]:
    gc.collect()
    lst: list[dict[str, Any]] = []
    start = time.perf_counter()
    for _ in range(n):
        lst.append(  # noqa: PERF401 -- the baseline is this very loop
            {"timestamp": time.time(), "level": "info", "message": MESSAGE, "metadata": None}
        )
    end = time.perf_counter()
    del lst
    return {"seconds": end - start}


def bench_e2e(root: Path, runs: int, n: int) -> dict[str, Any]:
    dl: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    for r in range(runs):
        for side in ("dreamlake", "baseline") if r % 2 == 0 else ("baseline", "dreamlake"):
            if side == "dreamlake":
                directory = root / f"e2e-{r}"
                dl.append(e2e_logs(directory, n))
                shutil.rmtree(directory, ignore_errors=True)
            else:
                bare.append(e2e_bare(n))
    return {"logs": n, "runs": dl, "bare": bare}


# --------------------------------------------------------------------------------------------------
# report


def row(measure: str, dl: str, base: str, ratio: float | None, note: str) -> Row:
    return {
        "measure": measure,
        "dreamlake": dl,
        "baseline": base,
        "ratio": None if ratio is None else round(ratio, 3),
        "note": note,
    }


def markdown(rows: list[Row]) -> str:
    head = ["measure", "dreamlake", "baseline (same run)", "ratio", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['measure']} | {r['dreamlake']} | {r['baseline']} | {ratio} | {r['note']} |")
    return "\n".join(lines)


def build_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    lg = results["log"]
    m, ratio = lg["mean_ns"], lg["ratio"]
    per = f"median of {lg['rounds']} per-round ratios"
    rows.append(row("`track.append(value=0.5, step=i)` mean per call", ns(m["append"]),
                    f"{ns(m['bare'])} (bare `list.append(dict)`)", ratio["append/bare"],
                    f"append / bare; {per} (bench_core's reference row)"))
    rows.append(row("`session.log(msg, level=\"info\")` mean per call", ns(m["log"]),
                    f"{ns(m['append'])} (`track.append`)", ratio["log/append"], f"log / append; {per}"))
    rows.append(row("`session.log(msg, level=\"info\", step=i)` mean per call", ns(m["log_step"]),
                    f"{ns(m['append'])} (`track.append`)", ratio["log_step/append"],
                    f"log(step=) / append; {per}"))
    rows.append(row("`session.log(metadata={\"step\": i}).info(msg)` mean per call", ns(m["log_fluent"]),
                    f"{ns(m['append'])} (`track.append`)", ratio["log_fluent/append"],
                    f"info; fluent / append; {per}"))
    rows.append(row("`session.log(msg, level=\"info\")` vs the entry built by hand", ns(m["log"]),
                    f"{ns(m['bare_log'])} (bare `list.append` of the log-entry dict)",
                    ratio["log/bare_log"], f"info; log / bare log entry; {per}"))
    rows.append(row("`session.log(msg, level=\"info\", step=i)` vs the entry built by hand",
                    ns(m["log_step"]),
                    f"{ns(m['bare_log_step'])} (bare `list.append` of the entry with metadata dict)",
                    ratio["log_step/bare_log_step"], f"info; log(step=) / bare entry; {per}"))

    pr = results["params"]
    labels = {
        "new": "`parameters().set(**{f\"group{i}\": {\"lr\": .1, \"bs\": 32}})` (new keys)",
        "same": "`parameters().set(lr=i)` (same key)",
    }
    for variant in ("new", "same"):
        v = pr[variant]
        rows.append(row(f"{labels[variant]}, {v['calls']:,} calls + flush()",
                        f"{v['rate']['dreamlake']:,.0f} calls/s",
                        f"{v['rate']['baseline']:,.0f} calls/s (json.dump + os.replace per call)",
                        v["ratio"], f"time ratio; median of {pr['rounds']} rounds; < 1: dreamlake faster"))

    if "e2e" in results:
        e2e = results["e2e"]
        n = e2e["logs"]
        runs = len(e2e["runs"])
        dl_s = statistics.median(r["seconds"] for r in e2e["runs"])
        bare_s = statistics.median(r["seconds"] for r in e2e["bare"])
        rows.append(row(f"end to end {n:,} `log()` calls, first call to close() (median of {runs})",
                        f"{n / dl_s:,.0f} logs/s ({dl_s:.2f} s)",
                        f"{n / bare_s:,.0f} entries/s ({bare_s:.2f} s, bare log-entry loop)",
                        dl_s / bare_s, "time ratio"))
        checks = [r["check"] for r in e2e["runs"]]
        all_ok = all(c["ok"] for c in checks)
        rows.append(row("end to end: lines in logs.jsonl / lines with a wrong sequenceNumber (every run)",
                        f"{checks[0]['lines']:,} / {sum(c['bad_lines'] for c in checks):,}",
                        f"{n:,} / 0", None,
                        "all written, numbered 0..N-1" + ("" if all_ok else " **FAILED**")))
    return rows


def notes(results: dict[str, Any]) -> str:
    out = ["Notes:"]
    lg = results["log"]
    per_side = lg["per_round_mean_ns"]
    out.extend(f"- {side}: mean ns per call per round {fmt(per_side[side])}" for side in LOG_SIDES)
    per_round = "; ".join(f"{k} {fmt(v, 2)}" for k, v in lg["per_round_ratio"].items())
    out.append(f"- per-round ratios: {per_round}")
    if lg["unexpected_agent_flushes"]:
        out.append(f"- WARNING: the agent flushed {lg['unexpected_agent_flushes']} times on its own during "
                   "the log bench: it may have run during a timed block")
    bd = results.get("breakdown")
    if bd:
        parts = "; ".join(f"{k} {v:,.0f} ns" if isinstance(v, float) else f"{k} {v}" for k, v in bd.items())
        out.append(f"- breakdown (ns per call or entry, one block, median of 3): {parts}")
    pr = results["params"]
    for variant in ("new", "same"):
        v = pr[variant]
        dl, base = v["runs"]["dreamlake"], v["runs"]["baseline"]
        out.append(
            f"- set() {variant}: dreamlake per round total s {fmt([x['seconds'] for x in dl], 3)}, of which "
            f"the set() loop {fmt([x['loop_s'] for x in dl], 3)} and the final flush() "
            f"{fmt([x['flush_s'] for x in dl], 3)}; agent flushes (parameters.json rewrites at most) "
            f"{[x['agent_flushes'] for x in dl]}; baseline s {fmt([x['seconds'] for x in base], 3)}; "
            f"final file {dl[0]['bytes']:,} B (baseline {base[0]['bytes']:,} B)"
        )
    if "e2e" in results:
        runs = results["e2e"]["runs"]
        out.append(
            f"- logs end to end per run (s): {fmt([r['seconds'] for r in runs], 3)}, of which the log() loop "
            f"{fmt([r['loop_s'] for r in runs], 3)} and close() {fmt([r['close_s'] for r in runs], 3)}; "
            f"bare loop {fmt([r['seconds'] for r in results['e2e']['bare']], 3)}; agent flushes "
            f"{[r['agent_flushes'] for r in runs]}; logs.jsonl {runs[0]['check']['bytes']:,} B; "
            f"agent options {runs[0]['config']}"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="dreamlake experiment-API benchmarks (see the module docstring)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller, faster run (rough figures)")
    parser.add_argument("--json", metavar="PATH", nargs="?", const="-",
                        help="print the results as JSON on stdout (report on stderr), or write them to PATH")
    parser.add_argument("--rounds", type=int, default=None, help="log() rounds (default 7, quick 3)")
    parser.add_argument("--block", type=int, default=None, help="calls per log() block (default 50,000)")
    parser.add_argument("--set-new", type=int, default=None, help="set() calls with new keys (default 400)")
    parser.add_argument("--set-same", type=int, default=None, help="set() calls, same key (default 1,000)")
    parser.add_argument("--param-rounds", type=int, default=None, help="set() rounds (default 5, quick 2)")
    parser.add_argument("--logs", type=int, default=None, help="end-to-end log() calls (default 200,000)")
    parser.add_argument("--e2e-runs", type=int, default=None, help="end-to-end runs (default 3, quick 1)")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end logs section")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 3 if quick else 7,
        "block": 10_000 if quick else 50_000,
        "set_new": 150 if quick else 400,
        "set_same": 300 if quick else 1_000,
        "param_rounds": 2 if quick else 5,
        "logs": 50_000 if quick else 200_000,
        "e2e_runs": 1 if quick else 3,
    }
    apply_defaults(args, defaults)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = sys.stderr if args.json == "-" else sys.stdout

    def say(*parts: object) -> None:
        print(*parts, file=report, flush=True)

    drop_dreamlake_env(say)

    command = shlex.join([sys.executable, *sys.argv])
    facts = machine_facts()
    say(f"# dreamlake experiment-API benchmarks\n\ncommand: `{command}`\n")
    say(
        platform_line(facts)
        + f"clocksource {facts['clocksource']}; "
        f"dreamlake {facts['dreamlake']} (sources sha256 {facts['dreamlake_sources_sha256']}), "
        f"msgspec {facts['msgspec']}, anyio {facts['anyio']}\n"
    )
    started = time.perf_counter()
    results: dict[str, Any] = {"step_seconds": {}}
    last_start, last_label = started, ""

    def step(label: str) -> None:
        nonlocal last_start, last_label
        now = time.perf_counter()
        if last_label:
            results["step_seconds"][last_label] = round(now - last_start, 2)
        last_start, last_label = now, label
        if label:
            say(f"- {label} ...")

    tmp = Path(tempfile.mkdtemp(prefix="dreamlake-bench-exp-"))
    try:
        step(f"log() vs append() per call: {args.rounds} rounds x {args.block:,} calls per side")
        results["log"] = bench_log(tmp / "log", args.rounds, args.block)

        step("log() breakdown (not in the table)")
        results["breakdown"] = log_breakdown(tmp / "breakdown", min(args.block, 20_000))

        step(f"parameters().set(): {args.param_rounds} rounds, {args.set_new:,} new-key and "
             f"{args.set_same:,} same-key calls")
        results["params"] = bench_params(tmp / "params", args.param_rounds, args.set_new, args.set_same)

        if not args.no_e2e:
            step(f"logs end to end: {args.e2e_runs} x {args.logs:,} log() calls")
            results["e2e"] = bench_e2e(tmp / "e2e", args.e2e_runs, args.logs)
        step("")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started

    rows = build_rows(results)
    say()
    say(markdown(rows))
    say()
    say(notes(results))
    say(f"\ntotal benchmark time {elapsed:.0f} s; per step (s): {results['step_seconds']}")
    failed = [r["measure"] for r in rows if "FAILED" in r["note"]]
    if args.json:
        payload = {
            "command": command,
            "machine": facts,
            "params": vars(args),
            "rows": rows,
            "results": results,
            "failed": failed,
            "elapsed_s": elapsed,
        }
        text = json.dumps(payload, indent=2)
        if args.json == "-":
            print(text, flush=True)
        else:
            Path(args.json).write_text(text + "\n")
            say(f"JSON written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
