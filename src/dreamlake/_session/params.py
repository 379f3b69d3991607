"""``session.parameters()``: flat dotted keys, merged across calls, processes and runs.

``set(model={"lr": 0.1})`` stores ``{"model.lr": 0.1}``. A key is either a value or a group of
keys, never both: once ``a`` holds a value, ``a.b`` is refused (and the other way round), because
``get(flatten=False)`` could not nest them. ``set()`` checks that against every key this process
knows of, then queues the change for the agent, which merges it into ``parameters.json`` under a
file lock (so two processes setting different keys lose neither).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .._agent.agent import Agent
from .._schema.params import KeySet, accept, flatten, unflatten
from .._schema.values import normalize

if TYPE_CHECKING:
    from .async_session import AsyncSession
    from .session import Session

class Parameters:
    """The session's parameters (hyperparameters, config). Get it with ``session.parameters()``."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._known: KeySet | None = None  # the names this process knows of; loaded on first use
        self._lock = threading.Lock()

    def set(self, **params: Any) -> Parameters:
        """Merge ``params`` into the session's parameters; nested dicts become dotted keys.

        Returns ``self``, so calls can be chained. The change is written by the agent (queued, not
        awaited); ``get()`` and ``flush()`` see it.

        Raises:
            InvalidValueError: A value cannot be stored as JSON (a ``TypeError``).
            InvalidArgumentError: A name has an empty part (``"a..b"``).
            ParameterConflictError: A key would be both a value and a group (``a`` and ``a.b``).
            WriteProtectedError: The session is write-protected.
        """
        self._session._check_writable()
        delta = flatten(normalize(params))
        if delta:
            with self._lock:
                accept(self._load(), delta)
                self._session._queue.add_params(delta)
            if self._session.config.durability == "sync":
                self._session.flush()
        return self

    def get(self, flatten: bool = True) -> dict[str, Any]:
        """Return every parameter of the session (also those set by other processes or runs).

        Args:
            flatten: Dotted keys (``{"model.lr": 0.1}``) if true, else nested dicts.
        """
        data: dict[str, Any] = self._session._call(Agent.read_parameters)
        with self._lock:
            self._known = KeySet(data)
        return data if flatten else unflatten(data)

    def _load(self) -> KeySet:
        if self._known is None:
            self._known = KeySet(self._session._call(Agent.read_parameters))
        return self._known


class AsyncParameters:
    """The parameters of an ``AsyncSession``: ``await params.set(...)``, ``await params.get()``."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._known: KeySet | None = None

    async def set(self, **params: Any) -> AsyncParameters:
        """As :meth:`Parameters.set`."""
        self._session._check_writable()
        delta = flatten(normalize(params))
        if delta:
            if self._known is None:
                self._known = KeySet(await self._session._acall(Agent.read_parameters))
            accept(self._known, delta)  # no await between the check and the queueing
            self._session._queue.add_params(delta)
            if self._session.config.durability == "sync":
                await self._session.flush()
        return self

    async def get(self, flatten: bool = True) -> dict[str, Any]:
        """As :meth:`Parameters.get`."""
        data: dict[str, Any] = await self._session._acall(Agent.read_parameters)
        self._known = KeySet(data)
        return data if flatten else unflatten(data)
