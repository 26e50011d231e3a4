"""The SQLite schema: ``MIGRATIONS``, applied in order by ``connection.py``.

How this works.  Step *n* (1-based) holds the statements that take the
database from version *n-1* to *n*; ``schema_version`` records how far a
database got.  Later issues append steps -- never change what a released
step does (the text may be tidied, as the rfc1459 fold and the
``users_version`` triggers were: they are built by the helpers below and
produce the same schema).
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "USERS_VERSION", "USERS_VERSION_BUMP"]


def _rfc1459(column: str) -> str:
    """``column`` folded under rfc1459 in SQL: lower() (ASCII only in SQLite,
    like ``irc_lower``) with []\\~ made {}|^."""
    return (
        f"replace(replace(replace(replace(lower({column}),"
        " '[', '{'), ']', '}'), '\\', '|'), '~', '^')"
    )


USERS_VERSION = "SELECT version FROM users_version WHERE id = 1"
"""The one query for the user tables' change counter (triggers keep it)."""
USERS_VERSION_BUMP = "UPDATE users_version SET version = version + 1 WHERE id = 1"


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
        "UPDATE users SET handle = handle || '_' || rowid WHERE rowid NOT IN"  # noqa: S608
        f" (SELECT MIN(rowid) FROM users GROUP BY {_rfc1459('handle')})",
        "UPDATE users SET account = NULL WHERE account IS NOT NULL AND rowid NOT IN"  # noqa: S608
        " (SELECT MIN(rowid) FROM users WHERE account IS NOT NULL"
        f" GROUP BY {_rfc1459('account')})",
        f"CREATE UNIQUE INDEX users_handle_rfc1459 ON users ({_rfc1459('handle')})",
        f"CREATE UNIQUE INDEX users_account_rfc1459 ON users ({_rfc1459('account')})",
        "CREATE TABLE users_version"
        " (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
        "INSERT INTO users_version (id, version) VALUES (1, 1)",
        *(
            f"CREATE TRIGGER {table}_{op.lower()}_bumps_version AFTER {op} ON {table}"
            f" BEGIN {USERS_VERSION_BUMP}; END"
            for table in ("users", "user_hostmasks", "user_chanflags")
            for op in ("INSERT", "UPDATE", "DELETE")
        ),
    )
)


MIGRATIONS.append(
    # The generic aggregates (issue 9): ``checkpoints`` (a named JSON value)
    # takes over REST poller state ("rest:NAME") and tailed-log offsets
    # ("log:NAME:PATH", the fingerprint as hex), and ``leases`` (a named lock)
    # takes over the deploy leases ("deploy:MODULE/ENV").  Existing rows move
    # across, so a database keeps its state over the upgrade.
    (
        """CREATE TABLE checkpoints (
            name TEXT NOT NULL PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "INSERT INTO checkpoints (name, value, updated_at) SELECT 'rest:' || name,"
        " json_object('fingerprint', fingerprint, 'hash', hash, 'etag', etag,"
        " 'last_modified', last_modified, 'failures', failures,"
        " 'failing_since', failing_since), updated_at FROM rest_poll_state",
        "INSERT INTO checkpoints (name, value, updated_at) SELECT 'log:' || name || ':' || path,"
        " json_object('name', name, 'path', path, 'dev', dev, 'ino', ino,"
        " 'fingerprint', lower(hex(fingerprint)), 'offset', offset,"
        " 'lines_per_s', lines_per_s), updated_at FROM log_offsets",
        "DROP TABLE rest_poll_state",
        "DROP TABLE log_offsets",
        """CREATE TABLE leases (
            name TEXT NOT NULL PRIMARY KEY,
            holder TEXT NOT NULL,
            info TEXT NOT NULL DEFAULT '',
            acquired_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        "INSERT INTO leases (name, holder, info, acquired_at, expires_at)"
        " SELECT 'deploy:' || module || '/' || env, job_id, holder, acquired_at, expires_at"
        " FROM deploy_leases",
        "DROP TABLE deploy_leases",
    )
)
