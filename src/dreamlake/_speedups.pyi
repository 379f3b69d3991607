from collections.abc import Callable
from typing import Any

from ._logs import LogBuilder

class Gate:
    taken: int
    threshold: int
    def reset(self) -> None: ...
    def next_ticket(self) -> int: ...

class TrackCore:
    def __init__(
        self,
        gate: Gate,
        items_append: Callable[[dict[str, Any]], None],
        admit: Callable[[dict[str, Any], int], None],
        normalize: Callable[[Any], dict[str, Any]],
    ) -> None: ...
    def append(self, **fields: Any) -> None: ...

class LogCore:
    def __init__(
        self,
        gate: Gate,
        items_append: Callable[[dict[str, Any]], None],
        admit: Callable[[dict[str, Any], int], None],
        levels: dict[str | None, str],
        clock: Callable[[], float],
        slow: Callable[..., LogBuilder | None],
    ) -> None: ...
    def log(
        self,
        message: str | None = None,
        level: str | None = "info",
        metadata: dict[str, Any] | None = None,
        **extra: Any,
    ) -> LogBuilder | None: ...
    def _log_put(self, entry: dict[str, Any], /) -> None: ...

def frame_lines(first_index: int, blob: bytes, /) -> bytes: ...
