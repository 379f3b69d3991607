"""``session.parameters()``: flat dotted keys, merged across calls, processes and runs.

``set(model={"lr": 0.1})`` stores ``{"model.lr": 0.1}``. A key is either a value or a group of
keys, never both: once ``a`` holds a value, ``a.b`` is refused (and the other way round), because
``get(flatten=False)`` could not nest them. ``set()`` checks that against every key this process
knows of, then queues the change for the agent, which merges it into ``parameters.json`` under a
file lock (so two processes setting different keys lose neither).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._agent.agent import Agent
from .._exceptions import InvalidArgumentError, ParameterConflictError
from .._schema.values import normalize

if TYPE_CHECKING:
    from .async_session import AsyncSession
    from .session import Session

SEP = "."


def flatten(params: Mapping[str, Any], parent: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; values must already be JSON types."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if not key or any(not part for part in key.split(SEP)):
            raise InvalidArgumentError(
                f"parameter name {parent + SEP + key if parent else key!r} has an empty part; "
                "use names like 'model.lr'"
            )
        full = f"{parent}{SEP}{key}" if parent else key
        if isinstance(value, dict):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``. A key that is also a group (only possible in files
    written by other tools) keeps its dotted remainder rather than losing either value."""
    out: dict[str, Any] = {}
    keys = list(flat)
    if KeySet().conflicts(keys):
        keys.sort(key=lambda k: k.count(SEP))  # values before the groups below them
    for key in keys:
        node = out
        parts = key.split(SEP)
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                node[SEP.join(parts[i:])] = flat[key]
                break
            node = child
        else:
            node[parts[-1]] = flat[key]
    return out


def _groups_of(key: str) -> Iterator[str]:
    """The groups a dotted name implies: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = key.split(SEP)
    return (SEP.join(parts[:i]) for i in range(1, len(parts)))


class KeySet:
    """Parameter names and the groups they imply, so a conflict check costs the size of the change,
    not of everything set so far."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.values: set[str] = set()
        self.groups: set[str] = set()
        self.update(keys)

    def update(self, keys: Iterable[str]) -> None:
        """Add names."""
        for key in keys:
            self.values.add(key)
            self.groups.update(_groups_of(key))

    def conflicts(self, new: Collection[str]) -> list[tuple[str, str]]:
        """Pairs ``(name, clash)`` where a name of ``new`` would be both a value and a group, with
        what is known or with another name of ``new``; ``clash`` is ``"a"`` or ``"a.*"``."""
        change = KeySet(new)
        found = []
        for key in new:
            if key in self.groups or key in change.groups:
                found.append((key, f"{key}{SEP}*"))
            found.extend(
                (key, group) for group in _groups_of(key) if group in self.values or group in change.values
            )
        return found


def merge(data: dict[str, Any], deltas: Iterable[Mapping[str, Any]]) -> list[str]:
    """Merge ``deltas`` in order into ``data``; drop and return the keys of ``data`` they conflict with.

    Only a race between processes can get here with a conflict (each process checks its own
    ``set()`` calls first); the later change wins so the file stays nestable.
    """
    keys = KeySet(data)
    dropped: list[str] = []
    for delta in deltas:
        clashes = keys.conflicts(delta)
        for key, clash in clashes:
            if clash.endswith(SEP + "*"):  # ``key`` is a group in data: its values go
                doomed = [k for k in data if k.startswith(key + SEP) and k not in delta]
            else:
                doomed = [clash] if clash in data and clash not in delta else []
            for name in doomed:
                del data[name]
            dropped.extend(doomed)
        data.update(delta)
        keys = KeySet(data) if clashes else keys
        keys.update(delta)
    return dropped


def _accept(known: KeySet, delta: dict[str, Any]) -> None:
    """Add the names of ``delta`` to ``known``, or raise if one would be both a value and a group."""
    clashes = known.conflicts(delta)
    if clashes:
        key, other = clashes[0]
        raise ParameterConflictError(
            f"parameter {key!r} conflicts with {other!r}: a name cannot be both a value and "
            "a group of parameters; rename one of them"
        )
    known.update(delta)


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
                _accept(self._load(), delta)
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
            _accept(self._known, delta)  # no await between the check and the queueing
            self._session._queue.add_params(delta)
            if self._session.config.durability == "sync":
                await self._session.flush()
        return self

    async def get(self, flatten: bool = True) -> dict[str, Any]:
        """As :meth:`Parameters.get`."""
        data: dict[str, Any] = await self._session._acall(Agent.read_parameters)
        self._known = KeySet(data)
        return data if flatten else unflatten(data)
