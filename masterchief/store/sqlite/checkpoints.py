"""SQLite ``CheckpointStore`` (named JSON values) and ``FileLedgerStore``.

How this works.  A checkpoint is one row: a name chosen by its owner
("rest:NAME", "log:NAME:PATH"), the value as JSON text and when it was
written; writes are upserts.  The file ledger remembers each watched
folder's files by content hash (seen -> dispatched -> done) and by
identity (dev, ino, size, mtime), so a file seen again is known without
reading it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

from ..api import Checkpoint, FileIdentity, FileState, JsonObject, LedgerCounts, LedgerEntry
from .connection import SqliteConnection

__all__ = ["SqliteCheckpoints", "SqliteFileLedger"]


def _checkpoint(row: Sequence[Any]) -> Checkpoint:
    return Checkpoint(name=row[0], value=json.loads(row[1]), updated_at=row[2])


class SqliteCheckpoints(SqliteConnection):
    async def checkpoint_get(self, name: str) -> Checkpoint | None:
        row = await self._fetchone(
            "SELECT name, value, updated_at FROM checkpoints WHERE name = ?", (name,)
        )
        return _checkpoint(row) if row is not None else None

    async def checkpoint_put(self, name: str, value: JsonObject) -> None:
        """Insert or replace checkpoint ``name``."""
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO checkpoints (name, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (name, text, time.time()),
            )

    async def checkpoints(self, prefix: str = "") -> list[Checkpoint]:
        """Checkpoints whose name starts with ``prefix``, by name."""
        rows = await self._fetchall(
            "SELECT name, value, updated_at FROM checkpoints"
            " WHERE substr(name, 1, ?) = ? ORDER BY name",
            (len(prefix), prefix),
        )
        return [_checkpoint(r) for r in rows]

    async def checkpoint_delete(self, name: str) -> bool:
        async with self._transaction() as tx:
            cur = await tx.execute("DELETE FROM checkpoints WHERE name = ?", (name,))
            return cur.rowcount > 0


_LEDGER = "SELECT watch, hash, dev, ino, size, mtime_ns, path, state, updated_at FROM file_ledger"


def _entry(row: Sequence[Any]) -> LedgerEntry:
    watch, digest, dev, ino, size, mtime_ns, path, state, updated_at = row
    return LedgerEntry(
        watch=watch,
        hash=digest,
        identity=FileIdentity(dev=dev, ino=ino, size=size, mtime_ns=mtime_ns),
        path=path,
        state=cast(FileState, state),
        updated_at=updated_at,
    )


class SqliteFileLedger(SqliteConnection):
    async def file_ledger_get(self, watch: str, content_hash: str) -> LedgerEntry | None:
        """The entry of a file known by its content hash, or None."""
        row = await self._fetchone(
            f"{_LEDGER} WHERE watch = ? AND hash = ?",
            (watch, content_hash),
        )
        return _entry(row) if row is not None else None

    async def file_ledger_find(self, watch: str, identity: FileIdentity) -> LedgerEntry | None:
        """The newest entry for a file with this identity, or None: the same
        file seen again, known without reading it."""
        i = identity
        row = await self._fetchone(
            f"{_LEDGER} WHERE watch = ? AND dev = ? AND ino = ?"
            " AND size = ? AND mtime_ns = ? ORDER BY updated_at DESC LIMIT 1",
            (watch, i.dev, i.ino, i.size, i.mtime_ns),
        )
        return _entry(row) if row is not None else None

    async def file_ledger_put(self, entry: LedgerEntry) -> None:
        """Insert or update a file's ledger row (identity, path and state)."""
        e, i = entry, entry.identity
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO file_ledger"
                " (watch, hash, dev, ino, size, mtime_ns, path, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (watch, hash) DO UPDATE SET dev = excluded.dev,"
                " ino = excluded.ino, size = excluded.size, mtime_ns = excluded.mtime_ns,"
                " path = excluded.path, state = excluded.state,"
                " updated_at = excluded.updated_at",
                (e.watch, e.hash, i.dev, i.ino, i.size, i.mtime_ns, e.path, e.state, time.time()),
            )

    async def file_ledger_counts(self, watch: str) -> LedgerCounts:
        """How many ledger rows a watched folder has in each state."""
        rows = await self._fetchall(
            "SELECT state, COUNT(*) FROM file_ledger WHERE watch = ? GROUP BY state", (watch,)
        )
        counts = {str(state): int(n) for state, n in rows}
        return LedgerCounts(
            seen=counts.get("seen", 0),
            dispatched=counts.get("dispatched", 0),
            done=counts.get("done", 0),
        )
