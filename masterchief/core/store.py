"""The store: the one data-access layer, SQLite (aiosqlite) for now.

How this works.  ``Store.open`` creates the file's folder, opens the
database in WAL mode (the bot and the ``masterchief`` CLI may use it at the
same time) and brings the schema up to date.  The schema is the list
``MIGRATIONS``: step *n* (1-based) holds the statements that take the
database from version *n-1* to *n*; ``schema_version`` records how far a
database got.  Later issues append steps -- never edit a released one.  Each
step runs in its own ``BEGIN IMMEDIATE`` transaction, and the version is
re-read inside it, so two processes opening the same new file do not both
migrate it.

All SQL lives in this module, parameterised (``?``) and kept to what SQLite
and PostgreSQL both accept, so a PostgreSQL backend can offer the same
methods.  Every statement runs under one lock: a connection is one
conversation, and a transaction must not interleave with another
coroutine's statements.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import aiosqlite

__all__ = [
    "MIGRATIONS",
    "ConflictError",
    "Store",
    "StoreError",
    "UserRecord",
]

MIGRATIONS: list[tuple[str, ...]] = [
    # 1: the user table (handles unique case-insensitively; accounts too).
    (
        """CREATE TABLE users (
            handle TEXT NOT NULL PRIMARY KEY,
            account TEXT,
            flags TEXT NOT NULL DEFAULT '',
            info TEXT NOT NULL DEFAULT '',
            password_hash TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE UNIQUE INDEX users_handle_lower ON users (lower(handle))",
        "CREATE UNIQUE INDEX users_account_lower ON users (lower(account))",
        """CREATE TABLE user_hostmasks (
            handle TEXT NOT NULL REFERENCES users (handle) ON DELETE CASCADE ON UPDATE CASCADE,
            mask TEXT NOT NULL,
            PRIMARY KEY (handle, mask)
        )""",
        """CREATE TABLE user_chanflags (
            handle TEXT NOT NULL REFERENCES users (handle) ON DELETE CASCADE ON UPDATE CASCADE,
            channel TEXT NOT NULL,
            flags TEXT NOT NULL,
            PRIMARY KEY (handle, channel)
        )""",
    ),
]
"""Schema steps; step *n* (1-based) migrates version n-1 to n.  Append only."""


class StoreError(Exception):
    """The store could not be opened or used; the message names the file."""


class ConflictError(StoreError):
    """A write broke a uniqueness rule (a handle or account already taken)."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user row with its hostmasks and channel flags, as stored."""

    handle: str
    account: str | None = None
    flags: str = ""
    info: str = ""
    password_hash: str | None = None
    created_at: str = ""
    hostmasks: tuple[str, ...] = ()
    chanflags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """An open store.  Use ``await Store.open(path)``; ``await store.close()``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path
        self.schema_version = 0

    @classmethod
    async def open(
        cls, path: Path | str, *, migrations: Sequence[Sequence[str]] = MIGRATIONS
    ) -> Store:
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

    # --- plumbing -------------------------------------------------------------

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
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    await conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        await conn.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as exc:
                raise ConflictError(f"{self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            async with self._lock, self._conn.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    # --- users ----------------------------------------------------------------

    async def load_users(self) -> list[UserRecord]:
        """Every user with hostmasks and channel flags, ordered by handle."""
        users = await self._fetchall(
            "SELECT handle, account, flags, info, password_hash, created_at"
            " FROM users ORDER BY lower(handle)"
        )
        masks: dict[str, list[str]] = {}
        for handle, mask in await self._fetchall(
            "SELECT handle, mask FROM user_hostmasks ORDER BY handle, mask"
        ):
            masks.setdefault(handle, []).append(mask)
        chans: dict[str, dict[str, str]] = {}
        for handle, channel, flags in await self._fetchall(
            "SELECT handle, channel, flags FROM user_chanflags ORDER BY handle, channel"
        ):
            chans.setdefault(handle, {})[channel] = flags
        return [
            UserRecord(
                handle=handle,
                account=account,
                flags=flags,
                info=info,
                password_hash=password_hash,
                created_at=created_at,
                hostmasks=tuple(masks.get(handle, ())),
                chanflags=MappingProxyType(chans.get(handle, {})),
            )
            for handle, account, flags, info, password_hash, created_at in users
        ]

    async def insert_user(self, user: UserRecord) -> UserRecord:
        """Add a new user; ``ConflictError`` if the handle or account is taken."""
        if not user.created_at:
            user = UserRecord(
                handle=user.handle,
                account=user.account,
                flags=user.flags,
                info=user.info,
                password_hash=user.password_hash,
                created_at=_now(),
                hostmasks=user.hostmasks,
                chanflags=user.chanflags,
            )
        try:
            async with self._transaction() as tx:
                await tx.execute(
                    "INSERT INTO users (handle, account, flags, info, password_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        user.handle,
                        user.account,
                        user.flags,
                        user.info,
                        user.password_hash,
                        user.created_at,
                    ),
                )
                await self._write_children(tx, user)
        except ConflictError as exc:
            raise ConflictError(f"user {user.handle!r} conflicts with a stored user") from exc
        return user

    async def save_user(self, user: UserRecord) -> None:
        """Replace a stored user's fields, hostmasks and channel flags."""
        try:
            async with self._transaction() as tx:
                cur = await tx.execute(
                    "UPDATE users SET account = ?, flags = ?, info = ?, password_hash = ?"
                    " WHERE handle = ?",
                    (user.account, user.flags, user.info, user.password_hash, user.handle),
                )
                if cur.rowcount != 1:
                    raise StoreError(f"user {user.handle!r} is not in the store")
                await tx.execute("DELETE FROM user_hostmasks WHERE handle = ?", (user.handle,))
                await tx.execute("DELETE FROM user_chanflags WHERE handle = ?", (user.handle,))
                await self._write_children(tx, user)
        except ConflictError as exc:
            raise ConflictError(f"user {user.handle!r} conflicts with a stored user") from exc

    async def delete_user(self, handle: str) -> bool:
        """Remove a user (hostmasks and channel flags go with it)."""
        async with self._transaction() as tx:
            cur = await tx.execute("DELETE FROM users WHERE handle = ?", (handle,))
            return cur.rowcount > 0

    @staticmethod
    async def _write_children(tx: aiosqlite.Connection, user: UserRecord) -> None:
        await tx.executemany(
            "INSERT INTO user_hostmasks (handle, mask) VALUES (?, ?)",
            [(user.handle, mask) for mask in user.hostmasks],
        )
        await tx.executemany(
            "INSERT INTO user_chanflags (handle, channel, flags) VALUES (?, ?, ?)",
            [(user.handle, chan, flags) for chan, flags in user.chanflags.items()],
        )
