"""Small helpers shared by the benchmark scripts in this folder (the table, formatting, RSS, facts).

Imported as ``from _harness import ...``: a script run as ``python benchmarks/bench_x.py`` has its own
folder on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import os
import platform
import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

Row = dict[str, Any]


# --------------------------------------------------------------------------------------------------
# the table


def row(measure: str, dl: str, base: str, ratio: float | None, bar: str, ok: bool | None) -> Row:
    """One row of the results table (``ratio`` rounded to 3 digits; ``ok`` None means no bar)."""
    return {
        "measure": measure,
        "dreamlake": dl,
        "baseline": base,
        "ratio": None if ratio is None else round(ratio, 3),
        "bar": bar,
        "ok": ok,
    }


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table: measure | dreamlake | baseline | ratio | bar | ok."""
    head = ["measure", "dreamlake", "baseline", "ratio", "bar", "ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        ok = "n/a" if r["ok"] is None else ("yes" if r["ok"] else "**NO**")
        lines.append(f"| {r['measure']} | {r['dreamlake']} | {r['baseline']} | {ratio} | {r['bar']} | {ok} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# formatting


def mb(nbytes: float) -> str:
    """Bytes as ``"12.3 MB"`` (MiB)."""
    return f"{nbytes / 2**20:,.1f} MB"


def ns(value: float) -> str:
    """Nanoseconds as ``"850 ns"``, or ``"12.5 us"`` from 10,000 ns up."""
    return f"{value:,.0f} ns" if value < 10_000 else f"{value / 1000:,.1f} us"


def fmt(values: Sequence[float], digits: int = 0) -> str:
    """A list of figures as ``"[1,234, 5,678]"`` with ``digits`` decimals."""
    return "[" + ", ".join(f"{v:,.{digits}f}" for v in values) + "]"


# --------------------------------------------------------------------------------------------------
# memory


def rss() -> int:
    """Current RSS of this process, in bytes."""
    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """Peak RSS of this process's address space.

    Linux: ``VmHWM`` from ``/proc/self/status``, which ``reset_peak_rss`` can reset. Not
    ``getrusage().ru_maxrss``: that one also keeps the high-water mark of the address space a
    process had before ``exec``, i.e. of the forked parent, and ``clear_refs`` does not reset it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def reset_peak_rss() -> int:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs``); return the RSS now.

    Without the reset (other systems), the peak may include earlier transients such as imports.
    """
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return rss()


# --------------------------------------------------------------------------------------------------
# environment and machine


def clean_env(**extra: str) -> dict[str, str]:
    """A copy of ``os.environ`` without ``DREAMLAKE_*`` variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMLAKE_")}
    env.update(extra)
    return env


def drop_dreamlake_env(say: Callable[[str], object] = print) -> None:
    """Remove every ``DREAMLAKE_*`` variable from ``os.environ``, telling ``say`` about each."""
    for key in [k for k in os.environ if k.startswith("DREAMLAKE_")]:
        say(f"note: ignoring {key}={os.environ.pop(key)!r}")


def apply_defaults(args: Any, defaults: dict[str, Any]) -> None:
    """Set each option of ``args`` that is still None to its value in ``defaults``."""
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def dist_version(distribution: str, missing: str = "?") -> str:
    """The installed version of ``distribution``, or ``missing`` if it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return missing


def platform_facts() -> dict[str, Any]:
    """Python, platform and CPU facts (the first keys of each script's ``machine_facts``)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
    }


def platform_line(facts: dict[str, Any]) -> str:
    """The start of the report's machine line: Python, platform, CPUs and RAM from ``facts``."""
    return (
        f"python {facts['python']} ({facts['implementation']}) on {facts['platform']}; "
        f"cpu_count {facts['cpu_count']} (affinity {facts['cpu_affinity']}), {facts['cpu_model']}; "
        f"{facts['memory']} RAM; "
    )


def terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: raise ``SystemExit(128 + signum)`` so ``finally``/``with`` blocks clean up."""
    raise SystemExit(128 + signum)
