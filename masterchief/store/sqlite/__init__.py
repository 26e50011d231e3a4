"""The SQLite store (aiosqlite), the default backend."""
