"""The SQLite store: opening, migrations, user rows."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from masterchief.store.sqlite.store import MIGRATIONS, ConflictError, Store, StoreError, UserRecord


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "var" / "mc.db")
    try:
        yield s
    finally:
        await s.close()


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows}


def version(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version").fetchall()]


async def test_open_creates_folder_wal_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "mc.db"
    async with await Store.open(path) as s:
        assert s.schema_version == len(MIGRATIONS)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {"schema_version", "users", "user_hostmasks", "user_chanflags"} <= tables(path)
    assert version(path) == [len(MIGRATIONS)]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_open_twice_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    async with await Store.open(path) as s:
        await s.insert_user(UserRecord(handle="alice", flags="n"))
    for _ in range(2):
        async with await Store.open(path) as s:
            assert s.schema_version == len(MIGRATIONS)
            assert [u.handle for u in await s.load_users()] == ["alice"]
    assert version(path) == [len(MIGRATIONS)]


async def test_later_steps_are_applied_on_open(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    async with await Store.open(path):
        pass
    more = [*MIGRATIONS, ("CREATE TABLE later (id INTEGER PRIMARY KEY, note TEXT)",)]
    async with await Store.open(path, migrations=more) as s:
        assert s.schema_version == len(more)
    assert "later" in tables(path)
    # an older MasterChief refuses a newer database instead of corrupting it
    with pytest.raises(StoreError, match="newer than this MasterChief"):
        await Store.open(path)


async def test_failed_step_rolls_back_whole_step(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    bad = [
        *MIGRATIONS,
        ("CREATE TABLE half (x TEXT)", "THIS IS NOT SQL"),
    ]
    with pytest.raises(StoreError, match=r"mc\.db"):
        await Store.open(path, migrations=bad)
    assert "half" not in tables(path)
    assert version(path) == [len(MIGRATIONS)]


async def test_two_openers_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "mc.db"
    a, b = await asyncio.gather(Store.open(path), Store.open(path))
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
        await Store.open(path)


# --- users --------------------------------------------------------------------------------


async def test_user_round_trip(store: Store) -> None:
    rec = UserRecord(
        handle="Alice",
        account="alice",
        flags="mo",
        info="on call",
        password_hash="scrypt$1$2$3$x$y",
        hostmasks=("alice!*@*.example", "*!a@b"),
        chanflags={"#ops": "o", "#dev": "v"},
    )
    saved = await store.insert_user(rec)
    assert saved.created_at  # filled in
    [loaded] = await store.load_users()
    assert loaded.handle == "Alice"
    assert loaded.account == "alice"
    assert loaded.flags == "mo"
    assert loaded.info == "on call"
    assert loaded.password_hash == "scrypt$1$2$3$x$y"
    assert sorted(loaded.hostmasks) == sorted(rec.hostmasks)
    assert dict(loaded.chanflags) == {"#ops": "o", "#dev": "v"}
    assert loaded.created_at == saved.created_at


async def test_save_replaces_children(store: Store) -> None:
    await store.insert_user(UserRecord(handle="bob", hostmasks=("a!b@c",), chanflags={"#a": "o"}))
    await store.save_user(
        UserRecord(handle="bob", flags="v", hostmasks=("x!y@z",), chanflags={"#b": "v"})
    )
    [bob] = await store.load_users()
    assert (bob.flags, bob.hostmasks, dict(bob.chanflags)) == ("v", ("x!y@z",), {"#b": "v"})
    with pytest.raises(StoreError, match="not in the store"):
        await store.save_user(UserRecord(handle="ghost"))


async def test_delete_cascades(store: Store, tmp_path: Path) -> None:
    await store.insert_user(UserRecord(handle="bob", hostmasks=("a!b@c",), chanflags={"#a": "o"}))
    assert await store.delete_user("bob") is True
    assert await store.delete_user("bob") is False
    assert await store.load_users() == []
    with closing(sqlite3.connect(tmp_path / "var" / "mc.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM user_hostmasks").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM user_chanflags").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (UserRecord(handle="alice"), UserRecord(handle="ALICE")),
        (UserRecord(handle="a", account="Acct"), UserRecord(handle="b", account="acct")),
        # rfc1459 folding: {}|~ are the upper case of []\\^
        (UserRecord(handle="erin[1]"), UserRecord(handle="ERIN{1}")),
        (UserRecord(handle="a\\b"), UserRecord(handle="A|B")),
        (UserRecord(handle="a", account="erin[1]"), UserRecord(handle="b", account="ERIN{1}")),
        (UserRecord(handle="a", account="x~y"), UserRecord(handle="b", account="X^Y")),
    ],
)
async def test_uniqueness_is_case_insensitive(
    store: Store, first: UserRecord, second: UserRecord
) -> None:
    await store.insert_user(first)
    with pytest.raises(ConflictError):
        await store.insert_user(second)
    # the failed transaction left nothing behind
    assert [u.handle for u in await store.load_users()] == [first.handle]


async def test_values_are_parameters_not_sql(store: Store) -> None:
    nasty = "x'); DROP TABLE users; --"
    await store.insert_user(UserRecord(handle=nasty, info=nasty, hostmasks=(nasty,)))
    [u] = await store.load_users()
    assert (u.handle, u.info, u.hostmasks) == (nasty, nasty, (nasty,))


async def test_concurrent_writes_do_not_interleave(store: Store) -> None:
    await asyncio.gather(
        *(
            store.insert_user(UserRecord(handle=f"u{i}", hostmasks=(f"u{i}!*@*",)))
            for i in range(20)
        )
    )
    users = await store.load_users()
    assert len(users) == 20
    assert all(u.hostmasks == (f"{u.handle}!*@*",) for u in users)


async def test_ping_answers_while_open_and_fails_once_closed(tmp_path: Path) -> None:
    # /healthz's store probe: one trivial read, never a scan of a table that
    # is largest exactly when the bot is in trouble (the outbox).
    s = await Store.open(tmp_path / "ping.db")
    assert await s.ping() is None
    await s.close()
    with pytest.raises(Exception):  # noqa: B017 - any failure is "down" to the probe
        await s.ping()
