"""SQLite ``UserStore``: users, their hostmasks and channel flags.

How this works.  Handles and accounts are unique under rfc1459 folding by
expression indexes (``schema.py``); a broken rule leaves as
``ConflictError``.  Triggers count every change to the three user tables
in ``users_version``, so the running bot sees a change made by the CLI, by
another instance or by a hand-run sqlite3 with one cheap poll.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import MappingProxyType

import aiosqlite

from ..api import ConflictError, StoreError, UserRecord
from .connection import SqliteConnection
from .schema import USERS_VERSION

__all__ = ["SqliteUsers"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def _users_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute(USERS_VERSION) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


class SqliteUsers(SqliteConnection):
    async def load_users(self) -> list[UserRecord]:
        """Every user with hostmasks and channel flags, ordered by handle."""
        return (await self.load_users_versioned())[1]

    async def load_users_versioned(self) -> tuple[int, list[UserRecord]]:
        """``(users_version, every user)`` read from one snapshot, so the
        version is exactly the one these records are at."""
        async with self._transaction() as tx:
            version = await _users_version(tx)
            async with tx.execute(
                "SELECT handle, account, flags, info, password_hash, created_at"
                " FROM users ORDER BY lower(handle)"
            ) as cur:
                users = list(await cur.fetchall())
            masks: dict[str, list[str]] = {}
            async with tx.execute(
                "SELECT handle, mask FROM user_hostmasks ORDER BY handle, mask"
            ) as cur:
                for handle, mask in await cur.fetchall():
                    masks.setdefault(handle, []).append(mask)
            chans: dict[str, dict[str, str]] = {}
            async with tx.execute(
                "SELECT handle, channel, flags FROM user_chanflags ORDER BY handle, channel"
            ) as cur:
                for handle, channel, flags in await cur.fetchall():
                    chans.setdefault(handle, {})[channel] = flags
        return version, [
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

    async def users_version(self) -> int:
        """A number that changes with every write to the user tables (by any
        process: triggers keep it).  Cheap: one row; poll it."""
        row = await self._fetchone(USERS_VERSION)
        return int(row[0]) if row is not None else 0

    async def insert_user(self, user: UserRecord) -> UserRecord:
        """Add a new user; ``ConflictError`` if the handle or account is taken."""
        if not user.created_at:
            user = dataclasses.replace(user, created_at=_now())
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
