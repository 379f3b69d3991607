from collections.abc import Callable
from typing import Any

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

def frame_lines(first_index: int, blob: bytes, /) -> bytes: ...
