"""Parameter names: flat dotted keys, and the rule that a name is a value or a group, never both."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from .._exceptions import InvalidArgumentError, ParameterConflictError

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


def accept(known: KeySet, delta: dict[str, Any]) -> None:
    """Add the names of ``delta`` to ``known``, or raise if one would be both a value and a group."""
    clashes = known.conflicts(delta)
    if clashes:
        key, other = clashes[0]
        raise ParameterConflictError(
            f"parameter {key!r} conflicts with {other!r}: a name cannot be both a value and "
            "a group of parameters; rename one of them"
        )
    known.update(delta)
