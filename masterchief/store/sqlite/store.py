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
import contextlib
import json
import sqlite3
import time
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
    "DeliveryRecord",
    "EventLogRecord",
    "OutboxRecord",
    "ReplayRequest",
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

MIGRATIONS.append(
    # 2: webhook deliveries (durable intake, deduplicated) and the IRC outbox.
    (
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            provider TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            event_key TEXT NOT NULL,
            received_at REAL NOT NULL,
            body TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            done INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE UNIQUE INDEX deliveries_dedup ON deliveries (provider, dedup_key)",
        "CREATE INDEX deliveries_pending ON deliveries (done, id)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            target TEXT NOT NULL,
            text TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'text',
            fold_key TEXT,
            meta TEXT,
            created_at REAL NOT NULL
        )""",
    )
)

MIGRATIONS.append(
    # REST pollers: what each one last saw, so change detection survives restarts.
    (
        """CREATE TABLE rest_poll_state (
            name TEXT NOT NULL PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            hash TEXT,
            etag TEXT,
            last_modified TEXT,
            failures INTEGER NOT NULL DEFAULT 0,
            failing_since REAL,
            updated_at REAL NOT NULL
        )""",
    )
)


MIGRATIONS.append(
    # Watched folders: the file ledger (seen -> dispatched -> done), keyed by content hash.
    (
        """CREATE TABLE file_ledger (
            watch TEXT NOT NULL,
            hash TEXT NOT NULL,
            dev INTEGER NOT NULL,
            ino INTEGER NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            path TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (watch, hash)
        )""",
        "CREATE INDEX file_ledger_identity ON file_ledger (watch, dev, ino, size, mtime_ns)",
    )
)

MIGRATIONS.append(
    # Tailed logs: the committed offset of each file, with the file's identity.
    (
        """CREATE TABLE log_offsets (
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            dev INTEGER NOT NULL,
            ino INTEGER NOT NULL,
            fingerprint BLOB NOT NULL,
            offset INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (name, path)
        )""",
    )
)


MIGRATIONS.append(
    # Deploy jobs (history and audit), the one-run-per-(module, env) lease,
    # the event log and replay requests from the CLI to the running bot.
    (
        """CREATE TABLE jobs (
            id TEXT NOT NULL PRIMARY KEY,
            module TEXT NOT NULL,
            module_version TEXT NOT NULL,
            env TEXT NOT NULL,
            mode TEXT NOT NULL,
            params TEXT NOT NULL,
            digest TEXT NOT NULL,
            requester TEXT NOT NULL,
            requester_account TEXT,
            requester_nick TEXT,
            channel TEXT,
            status TEXT NOT NULL,
            approvals TEXT NOT NULL DEFAULT '[]',
            reason TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            exit_code INTEGER,
            summary TEXT,
            tail TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX jobs_status ON jobs (status, created_at)",
        "CREATE INDEX jobs_created ON jobs (created_at)",
        """CREATE TABLE deploy_leases (
            module TEXT NOT NULL,
            env TEXT NOT NULL,
            job_id TEXT NOT NULL,
            holder TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (module, env)
        )""",
        """CREATE TABLE event_log (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL,
            time REAL NOT NULL,
            type TEXT NOT NULL,
            key TEXT NOT NULL,
            origin TEXT NOT NULL,
            payload TEXT NOT NULL,
            outcome TEXT NOT NULL DEFAULT '',
            replay_of TEXT
        )""",
        "CREATE UNIQUE INDEX event_log_id ON event_log (id)",
        "CREATE INDEX event_log_time ON event_log (time)",
        "CREATE INDEX event_log_type ON event_log (type, time)",
        """CREATE TABLE replay_requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL,
            requested_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            result TEXT
        )""",
    )
)

MIGRATIONS.append(
    # Tailed logs: lines per second over the last minute, measured when the
    # offset was written (``updated_at``), for the offline ``files status``.
    ("ALTER TABLE log_offsets ADD COLUMN lines_per_s REAL",)
)

MIGRATIONS.append(
    # Users, two rules:
    # 1. Handles and accounts are unique under rfc1459 case folding, the
    #    coarsest standard CASEMAPPING (ascii and strict-rfc1459 make fewer
    #    names equal), so no server can see two records as one name.  The
    #    folding is lower() (ASCII only in SQLite, like ``irc_lower``) with
    #    []\~ made {}|^.  Rows that already collide are made distinct first,
    #    failing closed: the later handle gets a ``_<rowid>`` suffix, the later
    #    account is cleared.
    # 2. ``users_version`` counts every change to the user tables -- by
    #    trigger, so any writer (the CLI, another instance, a hand-run sqlite3)
    #    bumps it -- and the running bot polls it to reload its table.  (SQLite
    #    trigger syntax: a PostgreSQL backend needs its own trigger function.)
    #    Not ``PRAGMA data_version``: it moves on any other connection's commit
    #    to any table (replay requests, another instance's outbox), only for the
    #    connection that asks, and has no PostgreSQL twin; one row does.
    (
        "UPDATE users SET handle = handle || '_' || rowid WHERE rowid NOT IN"
        " (SELECT MIN(rowid) FROM users GROUP BY"
        " replace(replace(replace(replace(lower(handle),"
        " '[', '{'), ']', '}'), '\\', '|'), '~', '^'))",
        "UPDATE users SET account = NULL WHERE account IS NOT NULL AND rowid NOT IN"
        " (SELECT MIN(rowid) FROM users WHERE account IS NOT NULL GROUP BY"
        " replace(replace(replace(replace(lower(account),"
        " '[', '{'), ']', '}'), '\\', '|'), '~', '^'))",
        "CREATE UNIQUE INDEX users_handle_rfc1459 ON users"
        " (replace(replace(replace(replace(lower(handle),"
        " '[', '{'), ']', '}'), '\\', '|'), '~', '^'))",
        "CREATE UNIQUE INDEX users_account_rfc1459 ON users"
        " (replace(replace(replace(replace(lower(account),"
        " '[', '{'), ']', '}'), '\\', '|'), '~', '^'))",
        "CREATE TABLE users_version"
        " (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
        "INSERT INTO users_version (id, version) VALUES (1, 1)",
        "CREATE TRIGGER users_insert_bumps_version AFTER INSERT ON users"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END",
        "CREATE TRIGGER users_update_bumps_version AFTER UPDATE ON users"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END",
        "CREATE TRIGGER users_delete_bumps_version AFTER DELETE ON users"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END",
        "CREATE TRIGGER user_hostmasks_insert_bumps_version AFTER INSERT ON user_hostmasks"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END",
        "CREATE TRIGGER user_hostmasks_update_bumps_version AFTER UPDATE ON user_hostmasks"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END",
        "CREATE TRIGGER user_hostmasks_delete_bumps_version AFTER DELETE ON user_hostmasks"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END",
        "CREATE TRIGGER user_chanflags_insert_bumps_version AFTER INSERT ON user_chanflags"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END",
        "CREATE TRIGGER user_chanflags_update_bumps_version AFTER UPDATE ON user_chanflags"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END",
        "CREATE TRIGGER user_chanflags_delete_bumps_version AFTER DELETE ON user_chanflags"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END",
    )
)


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


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A verified webhook delivery as stored (``body`` is the JSON text)."""

    id: int
    provider: str
    dedup_key: str
    event_key: str
    received_at: float
    body: str
    meta: str = "{}"
    done: bool = False


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An announcement waiting for IRC.  ``kind`` "alert" entries may be folded
    into storm summaries by ``fold_key``; ``meta`` is JSON for the folder."""

    id: int
    target: str
    text: str
    kind: str
    fold_key: str | None
    meta: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class EventLogRecord:
    """One row of the event log.  ``origin`` and ``payload`` are JSON text,
    already redacted; ``time`` is epoch seconds; ``seq`` is given by the store."""

    id: str
    time: float
    type: str
    key: str
    origin: str
    payload: str
    outcome: str = ""
    replay_of: str | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A request (from ``masterchief events replay``) for the running bot to
    dispatch a logged Event again.  ``state``: pending -> running -> done or
    failed; pending -> cancelled when nobody took it in time."""

    id: int
    event_id: str
    requested_at: float
    state: str
    result: str | None = None


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

    # --- users ----------------------------------------------------------------

    async def load_users(self) -> list[UserRecord]:
        """Every user with hostmasks and channel flags, ordered by handle."""
        return (await self.load_users_versioned())[1]

    async def load_users_versioned(self) -> tuple[int, list[UserRecord]]:
        """``(users_version, every user)`` read from one snapshot, so the
        version is exactly the one these records are at."""
        async with self._transaction() as tx:
            version = await self._users_version(tx)
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
        [(version,)] = await self._fetchall("SELECT version FROM users_version WHERE id = 1")
        return int(version)

    @staticmethod
    async def _users_version(conn: aiosqlite.Connection) -> int:
        async with conn.execute("SELECT version FROM users_version WHERE id = 1") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row is not None else 0

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

    # --- webhook deliveries ---------------------------------------------------

    async def insert_delivery(
        self,
        provider: str,
        dedup_key: str,
        event_key: str,
        body: str,
        meta: str = "{}",
        received_at: float | None = None,
    ) -> int | None:
        """Store a verified delivery; its id, or None when (provider, dedup_key)
        was already stored (a duplicate delivery)."""
        when = time.time() if received_at is None else received_at
        try:
            async with self._transaction() as tx:
                cur = await tx.execute(
                    "INSERT INTO deliveries"
                    " (provider, dedup_key, event_key, received_at, body, meta)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (provider, dedup_key, event_key, when, body, meta),
                )
                return cur.lastrowid
        except ConflictError:
            return None

    async def delivery_done(self, delivery_id: int) -> None:
        """Mark a delivery dispatched (its handlers have run)."""
        async with self._transaction() as tx:
            await tx.execute("UPDATE deliveries SET done = 1 WHERE id = ?", (delivery_id,))

    async def pending_deliveries(self, limit: int = 1000) -> list[DeliveryRecord]:
        """Stored but not yet dispatched deliveries, oldest first (crash recovery)."""
        rows = await self._fetchall(
            "SELECT id, provider, dedup_key, event_key, received_at, body, meta, done"
            " FROM deliveries WHERE done = 0 ORDER BY id LIMIT ?",
            (limit,),
        )
        return [DeliveryRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows]

    async def prune_deliveries(self, older_than: float) -> int:
        """Forget dispatched deliveries received before ``older_than`` (epoch s)."""
        async with self._transaction() as tx:
            cur = await tx.execute(
                "DELETE FROM deliveries WHERE done = 1 AND received_at < ?", (older_than,)
            )
            return cur.rowcount

    async def record_deliveries(
        self,
        new: Sequence[tuple[str, str, str, str, str, float]],
        done: Sequence[int] = (),
    ) -> list[int | None]:
        """Group commit for webhook intake (``masterchief.sources.webhooks.writer``): store
        ``new`` deliveries ``(provider, dedup_key, event_key, body, meta,
        received_at)`` and mark the ``done`` ids dispatched, in one
        transaction.  Returns each new delivery's id in order, or None for a
        duplicate (already stored, or earlier in ``new``)."""
        # Only "?" placeholders are formatted into these statements (S608).
        ids: list[int | None] = []
        async with self._transaction() as tx:
            for start in range(0, len(done), 500):
                chunk = list(done[start : start + 500])
                marks = ", ".join("?" * len(chunk))
                sql = f"UPDATE deliveries SET done = 1 WHERE id IN ({marks})"  # noqa: S608
                await tx.execute(sql, chunk)
            for start in range(0, len(new), 500):
                rows = new[start : start + 500]
                values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(rows))
                params = [
                    v
                    for provider, key, event_key, body, meta, when in rows
                    for v in (provider, key, event_key, when, body, meta)
                ]
                sql = (
                    "INSERT INTO deliveries"  # noqa: S608
                    " (provider, dedup_key, event_key, received_at, body, meta)"
                    f" VALUES {values}"
                    " ON CONFLICT (provider, dedup_key) DO NOTHING"
                    " RETURNING id, provider, dedup_key"
                )
                async with tx.execute(sql, params) as cur:
                    stored = {(p, k): int(i) for i, p, k in await cur.fetchall()}
                for provider, key, *_ in rows:
                    ids.append(stored.pop((provider, key), None))
        return ids

    # --- outbox ---------------------------------------------------------------

    async def outbox_add(
        self,
        target: str,
        text: str,
        *,
        kind: str = "text",
        fold_key: str | None = None,
        meta: str | None = None,
        created_at: float | None = None,
    ) -> int:
        when = time.time() if created_at is None else created_at
        async with self._transaction() as tx:
            cur = await tx.execute(
                "INSERT INTO outbox (target, text, kind, fold_key, meta, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (target, text, kind, fold_key, meta, when),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    async def outbox_pending(self, limit: int = 1000) -> list[OutboxRecord]:
        """Announcements not yet handed to IRC, oldest first."""
        rows = await self._fetchall(
            "SELECT id, target, text, kind, fold_key, meta, created_at"
            " FROM outbox ORDER BY id LIMIT ?",
            (limit,),
        )
        return [OutboxRecord(*row) for row in rows]

    async def outbox_remove(self, ids: Sequence[int]) -> None:
        """Forget announcements that reached IRC (or were folded into a summary)."""
        if not ids:
            return
        async with self._transaction() as tx:
            await tx.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    async def ping(self) -> None:
        """One trivial read through the store's connection: it answers."""
        await self._fetchall("SELECT 1")

    async def outbox_count(self) -> int:
        rows = await self._fetchall("SELECT COUNT(*) FROM outbox")
        return int(rows[0][0])

    # --- REST poller state ------------------------------------------------------

    async def rest_state_load(self, name: str) -> dict[str, Any] | None:
        """A poller's saved state (fingerprint, hash, etag, last_modified,
        failures, failing_since, updated_at), or None."""
        rows = await self._fetchall(
            "SELECT fingerprint, hash, etag, last_modified, failures, failing_since, updated_at"
            " FROM rest_poll_state WHERE name = ?",
            (name,),
        )
        if not rows:
            return None
        keys = (
            "fingerprint",
            "hash",
            "etag",
            "last_modified",
            "failures",
            "failing_since",
            "updated_at",
        )
        return dict(zip(keys, rows[0], strict=True))

    async def rest_state_save(
        self,
        name: str,
        *,
        fingerprint: str,
        hash: str | None,
        etag: str | None,
        last_modified: str | None,
        failures: int,
        failing_since: float | None,
    ) -> None:
        """Insert or replace a poller's state."""
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO rest_poll_state"
                " (name, fingerprint, hash, etag, last_modified, failures, failing_since,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint,"
                " hash = excluded.hash, etag = excluded.etag,"
                " last_modified = excluded.last_modified, failures = excluded.failures,"
                " failing_since = excluded.failing_since, updated_at = excluded.updated_at",
                (
                    name,
                    fingerprint,
                    hash,
                    etag,
                    last_modified,
                    failures,
                    failing_since,
                    time.time(),
                ),
            )

    # --- deploy jobs and leases ---------------------------------------------------

    _JOB_COLUMNS = (
        "id",
        "module",
        "module_version",
        "env",
        "mode",
        "params",
        "digest",
        "requester",
        "requester_account",
        "requester_nick",
        "channel",
        "status",
        "approvals",
        "reason",
        "created_at",
        "started_at",
        "finished_at",
        "exit_code",
        "summary",
        "tail",
    )
    _JOB_JSON = ("params", "approvals", "tail")

    async def job_insert(self, job: Mapping[str, Any]) -> None:
        """Record a new job (``params``/``approvals``/``tail`` as JSON-able values,
        already redacted by the caller)."""
        cols = [c for c in self._JOB_COLUMNS if c in job]
        values = [self._job_value(c, job[c]) for c in cols]
        marks = ", ".join("?" for _ in cols)
        async with self._transaction() as tx:
            await tx.execute(f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({marks})", values)  # noqa: S608 (column names are ours)

    async def job_update(self, job_id: str, **fields: Any) -> None:
        """Change some columns of a job."""
        unknown = set(fields) - set(self._JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job columns: {sorted(unknown)}")
        if not fields:
            return
        sets = ", ".join(f"{c} = ?" for c in fields)
        values = [self._job_value(c, v) for c, v in fields.items()]
        async with self._transaction() as tx:
            await tx.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*values, job_id])  # noqa: S608

    def _job_value(self, column: str, value: Any) -> Any:
        return json.dumps(value, sort_keys=True) if column in self._JOB_JSON else value

    def _job_row(self, row: Sequence[Any]) -> dict[str, Any]:
        out = dict(zip(self._JOB_COLUMNS, row, strict=True))
        for c in self._JOB_JSON:
            out[c] = json.loads(out[c]) if out[c] else ([] if c != "params" else {})
        return out

    async def job_get(self, job_id: str) -> dict[str, Any] | None:
        rows = await self._fetchall(
            f"SELECT {', '.join(self._JOB_COLUMNS)} FROM jobs WHERE id = ?",  # noqa: S608
            (job_id,),
        )
        return self._job_row(rows[0]) if rows else None

    async def jobs_list(
        self, *, limit: int = 50, statuses: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Jobs, newest first (optionally only those in ``statuses``)."""
        where, params = "", []
        if statuses:
            where = f" WHERE status IN ({', '.join('?' for _ in statuses)})"
            params = list(statuses)
        rows = await self._fetchall(
            f"SELECT {', '.join(self._JOB_COLUMNS)} FROM jobs{where}"  # noqa: S608
            " ORDER BY created_at DESC LIMIT ?",
            [*params, limit],
        )
        return [self._job_row(r) for r in rows]

    async def job_last_success(self, module: str, env: str) -> dict[str, Any] | None:
        """The newest succeeded deploy of ``module`` to ``env``."""
        rows = await self._fetchall(
            f"SELECT {', '.join(self._JOB_COLUMNS)} FROM jobs"  # noqa: S608
            " WHERE module = ? AND env = ? AND mode = 'deploy' AND status = 'succeeded'"
            " ORDER BY finished_at DESC LIMIT 1",
            (module, env),
        )
        return self._job_row(rows[0]) if rows else None

    async def lease_acquire(
        self, module: str, env: str, *, job_id: str, holder: str, ttl_s: float
    ) -> dict[str, Any] | None:
        """Take the (module, env) lease for ``job_id``.  Returns None when taken,
        else the current holder's row (job_id, holder, acquired_at, expires_at).
        An expired lease is taken over."""
        now = time.time()
        async with self._transaction() as tx:
            async with tx.execute(
                "SELECT job_id, holder, acquired_at, expires_at FROM deploy_leases"
                " WHERE module = ? AND env = ?",
                (module, env),
            ) as cur:
                row = await cur.fetchone()
            if row is not None and float(row[3]) > now and row[0] != job_id:
                return dict(
                    zip(("job_id", "holder", "acquired_at", "expires_at"), row, strict=True)
                )
            await tx.execute(
                "INSERT INTO deploy_leases (module, env, job_id, holder, acquired_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (module, env) DO UPDATE SET"
                " job_id = excluded.job_id, holder = excluded.holder,"
                " acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
                (module, env, job_id, holder, now, now + ttl_s),
            )
        return None

    async def lease_release(self, module: str, env: str, job_id: str) -> bool:
        """Give the lease back (only if ``job_id`` still holds it)."""
        async with self._transaction() as tx:
            cur = await tx.execute(
                "DELETE FROM deploy_leases WHERE module = ? AND env = ? AND job_id = ?",
                (module, env, job_id),
            )
            return (cur.rowcount or 0) > 0

    async def leases(self) -> list[dict[str, Any]]:
        rows = await self._fetchall(
            "SELECT module, env, job_id, holder, acquired_at, expires_at FROM deploy_leases"
            " ORDER BY module, env"
        )
        keys = ("module", "env", "job_id", "holder", "acquired_at", "expires_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # --- watched-folder file ledger ----------------------------------------------

    async def file_ledger_get(self, watch: str, content_hash: str) -> tuple[str, str] | None:
        """``(state, path)`` of a file known by its content hash, or None."""
        rows = await self._fetchall(
            "SELECT state, path FROM file_ledger WHERE watch = ? AND hash = ?",
            (watch, content_hash),
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    async def file_ledger_find(
        self, watch: str, *, dev: int, ino: int, size: int, mtime_ns: int
    ) -> tuple[str, str] | None:
        """``(hash, state)`` last recorded for a file with this identity, or None:
        the same file seen again, known without reading it."""
        rows = await self._fetchall(
            "SELECT hash, state FROM file_ledger WHERE watch = ? AND dev = ? AND ino = ?"
            " AND size = ? AND mtime_ns = ? ORDER BY updated_at DESC LIMIT 1",
            (watch, dev, ino, size, mtime_ns),
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    async def file_ledger_put(
        self,
        watch: str,
        content_hash: str,
        *,
        dev: int,
        ino: int,
        size: int,
        mtime_ns: int,
        path: str,
        state: str,
    ) -> None:
        """Insert or update a file's ledger row (identity, path and state)."""
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO file_ledger"
                " (watch, hash, dev, ino, size, mtime_ns, path, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (watch, hash) DO UPDATE SET dev = excluded.dev,"
                " ino = excluded.ino, size = excluded.size, mtime_ns = excluded.mtime_ns,"
                " path = excluded.path, state = excluded.state,"
                " updated_at = excluded.updated_at",
                (watch, content_hash, dev, ino, size, mtime_ns, path, state, time.time()),
            )

    async def file_ledger_counts(self, watch: str) -> dict[str, int]:
        """How many ledger rows a watched folder has in each state."""
        rows = await self._fetchall(
            "SELECT state, COUNT(*) FROM file_ledger WHERE watch = ? GROUP BY state", (watch,)
        )
        return {str(state): int(n) for state, n in rows}

    # --- tailed log offsets -----------------------------------------------------

    async def log_offset_load(self, name: str, path: str) -> dict[str, Any] | None:
        """A tailed file's committed offset and identity (dev, ino, fingerprint,
        offset, updated_at), or None."""
        rows = await self._fetchall(
            "SELECT dev, ino, fingerprint, offset, updated_at FROM log_offsets"
            " WHERE name = ? AND path = ?",
            (name, path),
        )
        if not rows:
            return None
        keys = ("dev", "ino", "fingerprint", "offset", "updated_at")
        return dict(zip(keys, rows[0], strict=True))

    async def log_offset_save(
        self,
        name: str,
        path: str,
        *,
        dev: int,
        ino: int,
        fingerprint: bytes,
        offset: int,
        lines_per_s: float | None = None,
    ) -> None:
        """Insert or replace a tailed file's committed offset (and its recent
        rate; ``updated_at`` says when both were measured)."""
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO log_offsets"
                " (name, path, dev, ino, fingerprint, offset, updated_at, lines_per_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name, path) DO UPDATE SET dev = excluded.dev,"
                " ino = excluded.ino, fingerprint = excluded.fingerprint,"
                " offset = excluded.offset, updated_at = excluded.updated_at,"
                " lines_per_s = excluded.lines_per_s",
                (name, path, dev, ino, fingerprint, offset, time.time(), lines_per_s),
            )

    async def log_offsets(self) -> list[dict[str, Any]]:
        """Every stored log offset (for ``files status``)."""
        rows = await self._fetchall(
            "SELECT name, path, offset, updated_at, lines_per_s FROM log_offsets"
            " ORDER BY name, path"
        )
        keys = ("name", "path", "offset", "updated_at", "lines_per_s")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # --- event log and replay requests --------------------------------------------

    _EVENT_COLUMNS = "id, time, type, key, origin, payload, outcome, replay_of, seq"

    async def event_log_append(self, records: Sequence[EventLogRecord]) -> int:
        """Group commit: insert ``records`` in one transaction; an id already in
        the log is skipped.  Returns how many rows were inserted."""
        if not records:
            return 0
        async with self._transaction() as tx:
            cur = await tx.executemany(
                "INSERT INTO event_log (id, time, type, key, origin, payload, outcome, replay_of)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                [
                    (r.id, r.time, r.type, r.key, r.origin, r.payload, r.outcome, r.replay_of)
                    for r in records
                ],
            )
            return max(cur.rowcount, 0)

    async def event_log_prune(self, older_than: float) -> int:
        """Forget events logged before ``older_than`` (epoch s), and finished
        replay requests made before it."""
        async with self._transaction() as tx:
            cur = await tx.execute("DELETE FROM event_log WHERE time < ?", (older_than,))
            await tx.execute(
                "DELETE FROM replay_requests WHERE requested_at < ? AND state <> 'pending'",
                (older_than,),
            )
            return cur.rowcount

    async def event_log_page(
        self,
        *,
        types: Sequence[str] = (),
        since: float | None = None,
        before_seq: int | None = None,
        limit: int = 500,
    ) -> list[EventLogRecord]:
        """Logged events, newest first: of ``types`` (all when empty), at or
        after ``since``, and below ``before_seq`` (to page on)."""
        where: list[str] = []
        params: list[Any] = []
        if types:
            where.append(f"type IN ({', '.join('?' for _ in types)})")
            params.extend(types)
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetchall(
            f"SELECT {self._EVENT_COLUMNS} FROM event_log{clause}"  # noqa: S608 (only "?" marks)
            " ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        )
        return [EventLogRecord(*r) for r in rows]

    async def event_log_get(self, ids: Sequence[str]) -> list[EventLogRecord]:
        """The logged events with these ids, in the order asked (unknown ids left out)."""
        found: dict[str, EventLogRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT {self._EVENT_COLUMNS} FROM event_log WHERE id IN ({marks})",  # noqa: S608
                chunk,
            )
            found.update((r[0], EventLogRecord(*r)) for r in rows)
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    async def event_log_count(self) -> int:
        rows = await self._fetchall("SELECT COUNT(*) FROM event_log")
        return int(rows[0][0])

    async def replay_enqueue(
        self, event_ids: Sequence[str], *, requested_at: float | None = None
    ) -> list[int]:
        """Ask the running bot to replay these events; the request ids, in order."""
        when = time.time() if requested_at is None else requested_at
        ids: list[int] = []
        async with self._transaction() as tx:
            for event_id in event_ids:
                cur = await tx.execute(
                    "INSERT INTO replay_requests (event_id, requested_at, state) VALUES (?, ?, ?)",
                    (event_id, when, "pending"),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
        return ids

    async def replay_pending(self, limit: int = 50) -> list[ReplayRequest]:
        """Requests nobody has taken yet, oldest first."""
        rows = await self._fetchall(
            "SELECT id, event_id, requested_at, state, result FROM replay_requests"
            " WHERE state = 'pending' ORDER BY id LIMIT ?",
            (limit,),
        )
        return [ReplayRequest(*r) for r in rows]

    async def replay_get(self, ids: Sequence[int]) -> list[ReplayRequest]:
        """These requests as they stand now, in id order."""
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = await self._fetchall(
            "SELECT id, event_id, requested_at, state, result FROM replay_requests"  # noqa: S608
            f" WHERE id IN ({marks}) ORDER BY id",
            list(ids),
        )
        return [ReplayRequest(*r) for r in rows]

    async def _replay_move(
        self, request_id: int, from_state: str, to_state: str, result: str | None
    ) -> bool:
        async with self._transaction() as tx:
            cur = await tx.execute(
                "UPDATE replay_requests SET state = ?, result = ? WHERE id = ? AND state = ?",
                (to_state, result, request_id, from_state),
            )
            return cur.rowcount == 1

    async def replay_claim(self, request_id: int) -> bool:
        """pending -> running; False when someone else took (or cancelled) it."""
        return await self._replay_move(request_id, "pending", "running", None)

    async def replay_finish(self, request_id: int, state: str, result: str) -> bool:
        """running -> ``state`` (done or failed) with a one-line ``result``."""
        return await self._replay_move(request_id, "running", state, result)

    async def replay_cancel(self, request_id: int, result: str) -> bool:
        """pending -> cancelled; False when the bot took it first."""
        return await self._replay_move(request_id, "pending", "cancelled", result)
