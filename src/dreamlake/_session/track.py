"""The track handles: ``session.track(name)`` of a ``Session`` (:class:`Track`) or an
``AsyncSession`` (:class:`AsyncTrack`). Their ``append`` is the hot path (C, in ``_agent/hotpath.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._agent.agent import Agent
from .._agent.hotpath import TrackCore
from .._agent.queue import READY, PointQueue, TrackBuffer
from .._exceptions import InvalidArgumentError, InvalidValueError
from .._schema.values import normalize

if TYPE_CHECKING:
    from .async_session import AsyncSession
    from .session import Session


class Track(TrackCore):
    """A named time series of points. Get one with ``session.track(name)``; it is cheap to keep.

    ``append(**fields)`` queues one point (fire-and-forget, about a microsecond). Values may be int,
    float (NaN and ±Infinity included), bool, str, None, datetimes, numpy/torch/jax scalars, and lists
    or dicts of those; anything else raises :class:`InvalidValueError` (a ``TypeError``) naming the
    field, and nothing is queued. It raises :class:`SessionClosedError` on a closed session and
    :class:`QueueFullError` when the queue is full under ``on_full="raise"``.
    """

    __slots__ = ("_buffer", "_session", "name")

    def __init__(self, session: Session, queue: PointQueue, buffer: TrackBuffer) -> None:
        # admit(buffer, ...) with the buffer as owner: a partial per track would be three more
        # objects for every full garbage collection of a wide session
        super().__init__(queue.gate, buffer.items.append, queue.admit, normalize, owner=buffer)
        self._session = session
        self._buffer = buffer
        self.name = buffer.spec.name

    def append_batch(self, points: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Queue several points in order; all are checked before any is queued.

        Returns:
            ``{"count": n}``. Indices are assigned when the points are written; ``read()`` shows them.

        Raises:
            InvalidArgumentError: ``points`` is empty (a ``ValueError``).
            InvalidValueError: A point is not a dict or holds a value that cannot be stored.
        """
        checked = _checked_batch(points)
        append = self.append
        for point in checked:
            append(**point)
        return {"count": len(checked)}

    def read(self, start_index: int = 0, limit: int = 1000) -> dict[str, Any]:
        """Return points ``start_index .. start_index + limit - 1``, including every point appended so far.

        Returns:
            ``{"data": [{"index": i, "data": {...}}, ...], "startIndex", "endIndex", "total", "hasMore"}``
            where ``total`` is the number of points returned and ``hasMore`` whether more follow.
        """
        _check_count("start_index", start_index, minimum=0)
        _check_count("limit", limit, minimum=1)
        return self._session._call(Agent.read, self.name, start_index, limit)

    def stats(self) -> dict[str, Any]:
        """Return the track's counters and descriptive fields (after writing what is queued)."""
        return self._session._call(Agent.track_stats, self.name)

    def list_all(self) -> list[dict[str, Any]]:
        """List every track of the session (the 0.2.x spelling of ``session.tracks()``)."""
        return self._session.tracks()


class AsyncTrack(TrackCore):
    """A track of an ``AsyncSession``: ``await track.append(**fields)`` and the rest awaitable.

    ``append`` returns at once with something already done while the queue has room, so awaiting it
    costs about what the synchronous ``append`` costs; when the queue is full under
    ``on_full="block"`` it waits for room without blocking the event loop. ``append_nowait`` never
    waits: when the queue is full it applies ``on_full``, except that ``block`` raises
    :class:`QueueFullError`. Call both from the session's event loop.
    """

    __slots__ = ("_buffer", "_session", "append_nowait", "name")

    def __init__(self, session: AsyncSession, queue: PointQueue, buffer: TrackBuffer) -> None:
        super().__init__(queue.gate, buffer.items.append, queue.admit_async, normalize, READY, buffer)
        nowait = TrackCore(queue.gate, buffer.items.append, queue.admit_nowait, normalize, owner=buffer)
        self.append_nowait = nowait.append
        self._session = session
        self._buffer = buffer
        self.name = buffer.spec.name

    async def append_batch(self, points: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Queue several points in order (waiting for room if needed); all are checked first."""
        checked = _checked_batch(points)
        append = self.append
        for point in checked:
            await append(**point)
        return {"count": len(checked)}

    async def read(self, start_index: int = 0, limit: int = 1000) -> dict[str, Any]:
        """As :meth:`Track.read`."""
        _check_count("start_index", start_index, minimum=0)
        _check_count("limit", limit, minimum=1)
        result: dict[str, Any] = await self._session._acall(Agent.read, self.name, start_index, limit)
        return result

    async def stats(self) -> dict[str, Any]:
        """As :meth:`Track.stats`."""
        result: dict[str, Any] = await self._session._acall(Agent.track_stats, self.name)
        return result

    async def list_all(self) -> list[dict[str, Any]]:
        """List every track of the session (the 0.2.x spelling of ``session.tracks()``)."""
        return await self._session.tracks()


def _checked_batch(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``points`` checked and normalized, or the error for the first bad one (nothing is queued)."""
    if isinstance(points, (str, bytes, dict)) or not isinstance(points, Sequence):
        raise InvalidValueError(f"append_batch takes a list of dicts, got {type(points).__name__}")
    if not points:
        raise InvalidArgumentError("append_batch needs at least one point")
    checked = []
    for i, point in enumerate(points):
        try:
            checked.append(normalize(point))
        except InvalidValueError as exc:
            raise InvalidValueError(f"point {i}: {exc}") from None
    return checked


def _check_count(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValueError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
