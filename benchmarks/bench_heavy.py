"""Heavy points against a stalled sink: does ``max_queue_bytes`` bound the memory?

Run::

    python benchmarks/bench_heavy.py [--points N] [--floats F] [--bound MIB]

In a fresh subprocess per policy, a Session whose sink never writes (``dreamlake.testing.stalled``)
takes ``--points`` appends of ``values=[...]`` lists of ``--floats`` new floats each (a fresh list per
call, as a training loop makes them), with ``max_queue_bytes=--bound`` MiB. Reported: the growth of
peak RSS (``VmHWM``, reset after open) over the RSS after open, set against the bound; the points
admitted, dropped, and the queue's own estimate of what it holds. Baseline, in its own subprocess:
a plain list holding as many such points as the queue admitted (what they cost in memory). Bar: RSS
growth <= bound + the spool's size (its pages are mapped into the process: 2 x 32 MiB at the default
``max_queue``; a stalled sink fills them under ``drop_oldest``, whose drops free no spool room) + 16 MiB
(the allocator's slack, one point being built).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import drop_dreamlake_env, markdown, mb, peak_rss, reset_peak_rss, row
from dreamlake._agent.spool import half_bytes
from dreamlake._config import AgentConfig

ALLOWANCE = 2 * half_bytes(AgentConfig().max_queue) + 16 * 1024**2


def child(kind: str, directory: str, points: int, floats: int, bound: int, keep: int) -> dict[str, Any]:
    import warnings

    from dreamlake import QueueFullError, Session
    from dreamlake.testing import stalled

    if kind == "list":
        rss0 = reset_peak_rss()
        held = [{"step": i, "values": [float(i + k) for k in range(floats)]} for i in range(keep)]
        return {"rss_growth": peak_rss() - rss0, "held": len(held)}
    with stalled(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        session = Session("heavy", "bench", local_path=directory, max_queue_bytes=bound, on_full=kind).open()  # type: ignore[arg-type]
        track = session.track("weights")
        rss0 = reset_peak_rss()
        refused = 0
        for i in range(points):
            try:
                track.append(step=i, values=[float(i + k) for k in range(floats)])
            except QueueFullError:
                refused += 1
        grown = peak_rss() - rss0
        stats = session.agent_stats()
        out = {
            "rss_growth": grown,
            "held": session._queue.held,
            "held_bytes": session._queue.held_bytes,
            "dropped": stats["dropped"] + refused,
        }
    return out


def run(kind: str, args: argparse.Namespace, directory: Path, keep: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--dir", str(directory), "--points", str(args.points),
           "--floats", str(args.floats), "--bound", str(args.bound), "--keep", str(keep)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000)
    parser.add_argument("--floats", type=int, default=10_000)
    parser.add_argument("--bound", type=int, default=64, help="max_queue_bytes in MiB")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    bound = args.bound * 1024**2
    if args.child:
        print(json.dumps(child(args.child, args.dir, args.points, args.floats, bound, args.keep)))
        return 0
    drop_dreamlake_env()
    print(f"# heavy points, stalled sink: {args.points:,} x {args.floats:,} floats, "
          f"max_queue_bytes {args.bound} MiB\n\ncommand: `{' '.join([sys.executable, *sys.argv])}`\n")
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        for policy in ("drop_newest", "drop_oldest", "raise"):
            r = run(policy, args, Path(tmp) / policy)
            base = run("list", args, Path(tmp) / "list", keep=r["held"])
            ok = r["rss_growth"] <= bound + ALLOWANCE
            failed |= not ok
            rows.append(row(
                f"on_full={policy}: RSS growth ({r['held']} held, {r['dropped']} refused or dropped, "
                f"estimate {mb(r['held_bytes'])})",
                mb(r["rss_growth"]), f"{mb(base['rss_growth'])} (list of {r['held']})",
                r["rss_growth"] / bound, f"<= bound + {mb(ALLOWANCE)}", ok,
            ))
    print(markdown(rows))
    print("\nratio: RSS growth / max_queue_bytes. The baseline column is a plain list of the points held; "
          "the rest of the growth is the spool's mapped pages.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
