"""A tailed file's committed offset, as a store checkpoint.

How this works.  Each (tailer, path) has the checkpoint ``log:<name>:<path>``
holding a ``LogOffset``: the file's identity (device, inode and a hex
fingerprint of its first bytes), the offset whose lines have all been
handled, and the recent line rate for the offline ``files status``.  The
checkpoint's ``updated_at`` says when both were measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from masterchief.store.api import CheckpointStore, from_json, to_json

__all__ = ["LogOffset", "load_offset", "save_offset", "stored_offsets"]

_PREFIX = "log:"


@dataclass(frozen=True, slots=True)
class LogOffset:
    name: str
    path: str
    dev: int
    ino: int
    fingerprint: str  # hex
    offset: int
    lines_per_s: float | None = None


def _checkpoint(name: str, path: str) -> str:
    return f"{_PREFIX}{name}:{path}"


async def load_offset(store: CheckpointStore, name: str, path: str) -> LogOffset | None:
    saved = await store.checkpoint_get(_checkpoint(name, path))
    return from_json(LogOffset, saved.value) if saved is not None else None


async def save_offset(store: CheckpointStore, offset: LogOffset) -> None:
    await store.checkpoint_put(_checkpoint(offset.name, offset.path), to_json(offset))


async def stored_offsets(store: CheckpointStore) -> list[tuple[LogOffset, float]]:
    """Every stored offset with when it was written, by name and path."""
    return [(from_json(LogOffset, c.value), c.updated_at) for c in await store.checkpoints(_PREFIX)]
