"""One SQLite connection: opening, WAL, migrations, transactions.

How this works.  ``SqliteConnection.open`` creates the file's folder, opens
the database in WAL mode (the bot and the ``masterchief`` CLI may use it at
the same time) and brings the schema up to date from ``schema.MIGRATIONS``.
Each step runs in its own ``BEGIN IMMEDIATE`` transaction, and the version
is re-read inside it, so two processes opening the same new file do not
both migrate it.  The aggregate modules beside this one subclass it and
use only ``_transaction`` and ``_fetchall``.

Every statement runs under one lock: a connection is one conversation, and
a transaction must not interleave with another coroutine's statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import aiosqlite

from ..api import ConflictError, StoreError
from .schema import MIGRATIONS

__all__ = ["CHUNK", "SqliteConnection", "marks"]

CHUNK = 500
"""Rows (or ids) per statement: well under SQLite's limit on parameters."""


def marks(n: int) -> str:
    """``n`` comma-separated ``?`` placeholders (only these are ever formatted
    into our SQL, so the S608 warnings on those statements are false)."""
    return ", ".join("?" * n)


class SqliteConnection:
    """An open database.  Use ``await cls.open(path)``; ``await close()``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path
        self.schema_version = 0

    @classmethod
    async def open(
        cls, path: Path | str, *, migrations: Sequence[Sequence[str]] = MIGRATIONS
    ) -> Self:
        """Open (creating if needed) the database at ``path`` and migrate it."""
        path = Path(path)
        on_disk = str(path) != ":memory:"
        try:
            created = on_disk and not path.exists()
            if on_disk:
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(path, isolation_level=None)
            if created:
                # Password hashes live here: owner-only (SQLite gives -wal/-shm the same mode).
                path.chmod(0o600)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        store = cls(conn, path)
        try:
            await store._setup(migrations)
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self) -> None:
        """One trivial read through the store's connection: it answers."""
        await self._fetchall("SELECT 1")

    async def _enable_wal(self) -> None:
        """Switch to WAL.  The switch needs a moment of exclusive access and
        SQLite answers "database is locked" at once (busy_timeout does not
        apply) while another connection is opening the same new file."""
        for attempt in range(50):
            try:
                await self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                await asyncio.sleep(0.02 * (1 + attempt % 5))

    async def _setup(self, migrations: Sequence[Sequence[str]]) -> None:
        conn = self._conn
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            await self._enable_wal()
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            # 1 MiB of page cache instead of SQLite's 2 MB default: the hot
            # pages are the tails of append-mostly tables, and the bot's RSS
            # budget (bench/rtt.py, < 60 MB) is tight.
            await conn.execute("PRAGMA cache_size = -1024")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            for target in range(1, len(migrations) + 1):
                async with self._transaction() as tx:
                    current = await self._version(tx)
                    if current >= target:
                        continue
                    for statement in migrations[target - 1]:
                        await tx.execute(statement)
                    await tx.execute("DELETE FROM schema_version")
                    await tx.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            self.schema_version = await self._version(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot prepare the store: {exc}") from None
        if self.schema_version > len(migrations):
            raise StoreError(
                f"{self.path}: schema version {self.schema_version} is newer than this "
                f"MasterChief knows ({len(migrations)}); upgrade MasterChief"
            )

    @staticmethod
    async def _version(conn: aiosqlite.Connection) -> int:
        async with conn.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run statements atomically: commit at the end, roll back on any exception.

        SQLite errors leave as ``ConflictError`` (a uniqueness rule) or
        ``StoreError``; other exceptions pass through unchanged.
        """
        async with self._lock:
            conn = self._conn
            try:
                await self._begin(conn)
                try:
                    yield conn
                    await conn.execute("COMMIT")
                except BaseException:
                    # Never let a failing ROLLBACK replace the original exception:
                    # a cancelled statement must still leave as CancelledError.
                    if conn.in_transaction:
                        with contextlib.suppress(Exception):
                            await asyncio.shield(conn.execute("ROLLBACK"))
                    raise
            except sqlite3.IntegrityError as exc:
                raise ConflictError(f"{self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc

    @staticmethod
    async def _begin(conn: aiosqlite.Connection) -> None:
        """BEGIN IMMEDIATE that a cancellation cannot leave half-done: the
        statement runs on aiosqlite's thread anyway, so on cancel wait for it
        and roll it back before re-raising."""
        begin = asyncio.ensure_future(conn.execute("BEGIN IMMEDIATE"))
        try:
            await asyncio.shield(begin)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await begin
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
            raise

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            async with self._lock, self._conn.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None
