"""The SQLite backend: every aggregate over one connection.

How this works.  Each aggregate lives in its own module as a subclass of
``SqliteConnection`` (the connection, migrations and transactions); this
class only joins them, and ``open_store`` is how the rest of the program
gets one.  All SQL is parameterised (``?``) and kept to what SQLite and
PostgreSQL both accept where that costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .checkpoints import SqliteCheckpoints, SqliteFileLedger
from .eventlog import SqliteEventLog, SqliteReplays
from .intake import SqliteIntake, SqliteOutbox
from .jobs import SqliteJobs, SqliteLeases
from .schema import MIGRATIONS
from .users import SqliteUsers

__all__ = ["SqliteStore", "open_store"]


class SqliteStore(
    SqliteUsers,
    SqliteIntake,
    SqliteOutbox,
    SqliteJobs,
    SqliteLeases,
    SqliteCheckpoints,
    SqliteFileLedger,
    SqliteEventLog,
    SqliteReplays,
):
    """An open SQLite store (implements ``masterchief.store.api.Store``)."""


async def open_store(
    path: Path | str, *, migrations: Sequence[Sequence[str]] = MIGRATIONS
) -> SqliteStore:
    """Open (creating if needed) the SQLite store at ``path`` and migrate it."""
    return await SqliteStore.open(path, migrations=migrations)
