"""Configuration trees: YAML read into plain data, merged, with the file each
key came from.

How this works.  ``read_yaml`` reads one file (its errors name the file and
line); ``mark_origins`` records, for every key path in a tree, the file that
supplied it, and ``merge`` deep-merges one tree over another (mappings key
by key, any other value replaces) keeping that record up to date, so every
later error can name the file the operator has to edit (``origin_of``) and
the key (``dotted``).  The main configuration (engine.py) and deploy module
config both load through these.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
)

from masterchief.config.secrets import Secret
from masterchief.errors import ConfigError

__all__ = [
    "Key",
    "KeyPath",
    "dotted",
    "drop_key",
    "holds",
    "mark_origins",
    "merge",
    "origin_of",
    "put_at",
    "read_yaml",
    "secrets_in",
]

Key = str | int
KeyPath = tuple[Key, ...]


def holds(data: Any, key: Key, *, new: bool = False) -> bool:
    """Whether ``data[key]`` exists (or, with ``new``, may be set in a dict)."""
    if isinstance(data, dict):
        return new or key in data
    return isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data)


def put_at(data: Any, path: KeyPath, value: Any) -> None:
    """Set ``value`` at ``path`` in plain data, if the path's parent exists."""
    if not path:
        return
    for part in path[:-1]:
        if not holds(data, part):
            return
        data = data[part]
    if holds(data, path[-1], new=True):
        data[path[-1]] = value


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or type(exc).__name__}", file=path) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = exc.problem or "invalid YAML"
        raise ConfigError(f"YAML syntax error: {problem}", file=where) from None
    except yaml.YAMLError:
        raise ConfigError("not valid YAML (is it UTF-8 text?)", file=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("the top level should be a mapping of keys to values", file=path)
    return data


def mark_origins(value: Any, source: str, origins: dict[KeyPath, str], path: KeyPath) -> None:
    origins[path] = source
    if isinstance(value, dict):
        for k, v in value.items():
            mark_origins(v, source, origins, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            mark_origins(v, source, origins, (*path, i))


def merge(
    base: dict[str, Any],
    over: dict[str, Any],
    source: str,
    origins: dict[KeyPath, str],
    path: KeyPath,
) -> None:
    """Deep-merge ``over`` into ``base`` in place, recording where keys came from."""
    for key, value in over.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value, source, origins, here)
            continue
        base[key] = value
        n = len(here)
        for old in [p for p in origins if p[:n] == here]:
            del origins[old]
        mark_origins(value, source, origins, here)


def origin_of(origins: Mapping[KeyPath, str], loc: KeyPath) -> str:
    for i in range(len(loc), -1, -1):
        found = origins.get(loc[:i])
        if found is not None:
            return found
    return "<config>"


def dotted(loc: KeyPath) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def drop_key(data: Any, path: KeyPath) -> None:
    """Remove the key at ``path``; inside a list, the list's own key (an item
    cannot go without shifting the others), so the field takes its default."""
    keys = [i for i, part in enumerate(path) if isinstance(part, str)]
    if not keys:
        return
    path = path[: keys[-1] + 1]
    for part in path[:-1]:
        if not holds(data, part):
            return
        data = data[part]
    if isinstance(data, dict):
        data.pop(path[-1], None)


def secrets_in(value: Any) -> Iterator[Secret]:
    """Every ``Secret`` in ``value``: a model's fields, a mapping's values, a
    list's or tuple's items (to register them for redaction)."""
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secrets_in(getattr(value, name))
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from secrets_in(v)
    elif isinstance(value, tuple | list):
        for v in value:
            yield from secrets_in(v)
