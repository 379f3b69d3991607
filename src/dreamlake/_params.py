"""``session.parameters()``: flat dotted keys, merged across calls, processes and runs.

``set(model={"lr": 0.1})`` stores ``{"model.lr": 0.1}``. A key is either a value or a group of
keys, never both: once ``a`` holds a value, ``a.b`` is refused (and the other way round), because
``get(flatten=False)`` could not nest them. ``set()`` checks that against every key this process
knows of, then queues the change for the agent, which merges it into ``parameters.json`` under a
file lock (so two processes setting different keys lose neither).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._agent import Agent
from ._exceptions import InvalidArgumentError, ParameterConflictError
from ._values import normalize

if TYPE_CHECKING:
    from ._session import Session

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
    if conflicts((), keys):
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


def conflicts(known: Iterable[str], new: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs ``(new_key, other_key)`` where one is a group holding the other (``a`` and ``a.b``)."""
    keys = set(known)
    new = list(new)
    keys.update(new)
    groups: dict[str, str] = {}  # every proper dotted prefix -> one key under it
    for key in keys:
        parts = key.split(SEP)
        for i in range(1, len(parts)):
            groups.setdefault(SEP.join(parts[:i]), key)
    found = []
    for key in new:
        if key in groups:
            found.append((key, groups[key]))
        parts = key.split(SEP)
        found.extend(
            (key, prefix)
            for prefix in (SEP.join(parts[:i]) for i in range(1, len(parts)))
            if prefix in keys
        )
    return found


def merge(data: dict[str, Any], delta: Mapping[str, Any]) -> list[str]:
    """Merge ``delta`` into ``data``; drop and return the keys of ``data`` it conflicts with.

    Only a race between processes can get here with a conflict (each process checks its own
    ``set()`` calls first); the later change wins so the file stays nestable.
    """
    dropped = []
    for key, other in conflicts(data, delta):
        if other in data and other not in delta:
            del data[other]
            dropped.append(other)
        elif key in data and key not in delta:
            del data[key]
            dropped.append(key)
    data.update(delta)
    return dropped


class Parameters:
    """The session's parameters (hyperparameters, config). Get it with ``session.parameters()``."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._known: dict[str, Any] | None = None  # this process's view; loaded on first use
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
        if not delta:
            return self
        with self._lock:
            known = self._load()
            clash = conflicts(known, delta)
            if clash:
                key, other = clash[0]
                raise ParameterConflictError(
                    f"parameter {key!r} conflicts with {other!r}: a name cannot be both a value and "
                    "a group of parameters; rename one of them"
                )
            known.update(delta)
            self._session._queue.add_params(delta)
        return self

    def get(self, flatten: bool = True) -> dict[str, Any]:
        """Return every parameter of the session (also those set by other processes or runs).

        Args:
            flatten: Dotted keys (``{"model.lr": 0.1}``) if true, else nested dicts.
        """
        data: dict[str, Any] = self._session._call(Agent.read_parameters)
        with self._lock:
            self._known = dict(data)
        return data if flatten else unflatten(data)

    def _load(self) -> dict[str, Any]:
        if self._known is None:
            self._known = dict(self._session._call(Agent.read_parameters))
        return self._known
