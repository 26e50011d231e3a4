"""The SQLite store backend (the default; see ``masterchief.store.api``)."""

from .schema import MIGRATIONS
from .store import SqliteStore, open_store

__all__ = ["MIGRATIONS", "SqliteStore", "open_store"]
