from collections.abc import Callable, Generator
from typing import Any

class Gate:
    taken: int
    threshold: int
    def reset(self) -> None: ...
    def next_ticket(self) -> int: ...

class Spool:
    pos: int
    skipped: int
    active: int
    sealed: int | None
    def __init__(
        self,
        mapping: Any,
        epochs_at: int,
        halves_at: int,
        half_bytes: int,
        keys: dict[Any, int],
        define: Callable[[Any], int],
        pack: Callable[[Any], bytes],
    ) -> None: ...
    def rotate(self) -> bool: ...
    def free(self, half: int, /) -> None: ...
    def release(self) -> None: ...

class Fifo:
    appended: int
    def append(self, item: Any, /) -> bool | None: ...
    def push(self, item: Any, /) -> None: ...
    def attach(self, spool: Spool | None, track: int = 0, /) -> None: ...
    def last_in(self, half: int, /) -> int: ...
    def popleft(self) -> Any: ...
    def take(self, n: int, /) -> list[Any]: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> Any: ...

class Ready:
    def __await__(self) -> Generator[None]: ...

class TrackCore:
    def __init__(
        self,
        gate: Gate,
        items_append: Callable[[dict[str, Any]], bool | None],
        admit: Callable[[dict[str, Any], int], Any],
        normalize: Callable[[Any], dict[str, Any]],
        done: Any = None,
    ) -> None: ...
    def append(self, **fields: Any) -> Any: ...

class LogCore:
    def __init__(
        self,
        gate: Gate,
        items_append: Callable[[dict[str, Any]], bool | None],
        admit: Callable[[dict[str, Any], int], Any],
        levels: dict[str | None, str],
        clock: Callable[[], float],
        slow: Callable[..., Any],
        done: Any = None,
    ) -> None: ...
    def log(
        self,
        message: str | None = None,
        level: str | None = "info",
        metadata: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Any: ...
    def _log_put(self, entry: dict[Any, Any], /) -> Any: ...

def frame_lines(first_index: int, blob: bytes, /) -> bytes: ...
