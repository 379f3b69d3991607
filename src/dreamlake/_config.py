"""Agent options: one frozen dataclass, defaults overridable by ``DREAMLAKE_*`` variables.

Precedence: an explicit ``Session(...)`` keyword beats the environment, which beats the default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Literal, get_args

from ._exceptions import ConfigError

OnFull = Literal["block", "drop_oldest", "drop_newest", "raise"]
ON_FULL_POLICIES: tuple[str, ...] = get_args(OnFull)
Durability = Literal["buffered", "flush", "sync"]
DURABILITY_LEVELS: tuple[str, ...] = get_args(Durability)

DEFAULT_LOCAL_PATH = ".dreamlake"


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Options of the background agent.

    Attributes:
        max_queue: Most points (and log entries) held in memory, queued or being written.
        max_queue_bytes: Most bytes those points hold, as estimated when each is appended
            (CPython's own sizes: exact for a point of numbers and ASCII strings, proportional for
            other strings, lists and nested dicts). ``on_full`` applies when either bound is
            reached; a point is admitted while the bytes held are below the bound, so they exceed
            it by at most one point.
        on_full: What ``append`` does when the queue is full: ``"block"`` waits for room,
            ``"drop_oldest"``/``"drop_newest"`` discard a point (counted and warned about),
            ``"raise"`` raises :class:`QueueFullError`.
        batch_size: Queued points that wake the agent early; also the most points per write.
        flush_interval: Seconds between flushes when the batch size is not reached.
        close_timeout: Seconds ``close()`` (and exit handlers) wait for the queue to drain.
        durability: When accepted data is safe from a crash. ``"buffered"``: it reaches the
            operating system at every flush, so a killed process (kill -9) loses at most what was
            appended since the last flush (at most ``flush_interval`` seconds' worth), and a
            machine crash what the OS had not written yet. ``"flush"``: every flush also fsyncs
            (files and their directories), so a machine crash loses no more than kill -9 does.
            ``"sync"``: every ``append``/``log``/``set`` returns only once it is fsynced; slow.
            In remote mode ``"flush"`` also writes the spool to disk at every flush, and
            ``"sync"`` returns once the server has acknowledged the call.
        spool: Record every accepted point in a file mapped into memory (``_agent/spool.py``),
            so that kill -9 loses nothing accepted: the next run stores it (in remote mode it is
            also the journal: points stay there until the server acknowledged them). Off, kill -9
            loses what was not flushed (remote mode: acknowledged) yet.
    """

    max_queue: int = 500_000
    # Twice what max_queue scalar points hold (~250 bytes each): they meet max_queue first.
    max_queue_bytes: int = 256 * 1024**2
    on_full: OnFull = "block"
    batch_size: int = 50_000
    flush_interval: float = 1.0
    close_timeout: float = 60.0
    durability: Durability = "buffered"
    spool: bool = True

    def __post_init__(self) -> None:
        if self.on_full not in ON_FULL_POLICIES:
            raise ConfigError(f"on_full must be one of {ON_FULL_POLICIES}, got {self.on_full!r}")
        if self.durability not in DURABILITY_LEVELS:
            raise ConfigError(
                f"durability must be one of {DURABILITY_LEVELS}, got {self.durability!r}"
            )
        if not isinstance(self.spool, bool):
            raise ConfigError(f"spool must be True or False, got {self.spool!r}")
        for name in ("max_queue", "max_queue_bytes", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        for name in ("flush_interval", "close_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.batch_size > self.max_queue:
            raise ConfigError(
                f"batch_size ({self.batch_size}) cannot exceed max_queue ({self.max_queue})"
            )

    @property
    def batch_bytes(self) -> int:
        """Bytes held that wake the agent early: the same share of ``max_queue_bytes`` as
        ``batch_size`` is of ``max_queue``."""
        return max(1, self.max_queue_bytes * self.batch_size // self.max_queue)

    @classmethod
    def resolve(
        cls, overrides: Mapping[str, Any], environ: Mapping[str, str] = os.environ
    ) -> AgentConfig:
        """Build the config from explicit keywords, then ``DREAMLAKE_*`` variables, then defaults."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            explicit = overrides.get(field.name)
            if explicit is not None:
                values[field.name] = explicit
                continue
            var = "DREAMLAKE_" + field.name.upper()
            raw = environ.get(var)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse_env(var, raw, field.default)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown agent option(s): {', '.join(sorted(unknown))}")
        return cls(**values)


def _parse_env(var: str, raw: str, default: Any) -> Any:
    kind = type(default)
    if kind is str:
        return raw
    if kind is bool:
        flag = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                "off": False}.get(raw.strip().lower())
        if flag is None:
            raise ConfigError(f"{var}={raw!r} is not a valid switch (use 1/0, true/false, yes/no, on/off)")
        return flag
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a valid {kind.__name__}") from None
