"""The SQLite backend beyond the contract: the file, WAL, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest

from masterchief.store.api import StoreError, UserRecord
from masterchief.store.sqlite import MIGRATIONS, open_store


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows}


def version(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version").fetchall()]


async def test_open_creates_folder_wal_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "mc.db"
    async with await open_store(path) as s:
        assert s.schema_version == len(MIGRATIONS)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {"schema_version", "users", "user_hostmasks", "user_chanflags"} <= tables(path)
    assert {"checkpoints", "leases"} <= tables(path)
    assert not {"rest_poll_state", "log_offsets", "deploy_leases"} & tables(path)
    assert version(path) == [len(MIGRATIONS)]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_open_twice_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    async with await open_store(path) as s:
        await s.insert_user(UserRecord(handle="alice", flags="n"))
    for _ in range(2):
        async with await open_store(path) as s:
            assert s.schema_version == len(MIGRATIONS)
            assert [u.handle for u in await s.load_users()] == ["alice"]
    assert version(path) == [len(MIGRATIONS)]


async def test_later_steps_are_applied_on_open(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    async with await open_store(path):
        pass
    more = [*MIGRATIONS, ("CREATE TABLE later (id INTEGER PRIMARY KEY, note TEXT)",)]
    async with await open_store(path, migrations=more) as s:
        assert s.schema_version == len(more)
    assert "later" in tables(path)
    # an older MasterChief refuses a newer database instead of corrupting it
    with pytest.raises(StoreError, match="newer than this MasterChief"):
        await open_store(path)


async def test_failed_step_rolls_back_whole_step(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    bad = [
        *MIGRATIONS,
        ("CREATE TABLE half (x TEXT)", "THIS IS NOT SQL"),
    ]
    with pytest.raises(StoreError, match=r"mc\.db"):
        await open_store(path, migrations=bad)
    assert "half" not in tables(path)
    assert version(path) == [len(MIGRATIONS)]


async def test_two_openers_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    a, b = await asyncio.gather(open_store(path), open_store(path))
    try:
        assert a.schema_version == b.schema_version == len(MIGRATIONS)
    finally:
        await a.close()
        await b.close()
    assert version(path) == [len(MIGRATIONS)]


async def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        await open_store(path)


async def test_delete_cascades_in_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    async with await open_store(path) as store:
        await store.insert_user(
            UserRecord(handle="bob", hostmasks=("a!b@c",), chanflags={"#a": "o"})
        )
        assert await store.delete_user("bob") is True
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM user_hostmasks").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM user_chanflags").fetchone()[0] == 0
