"""The SQLite user rules beyond the contract: the ``users_version`` triggers
count writers that bypass our code, and the migration that brought the
rfc1459 rules separates rows that already collided (issue 8, items 8 and 10).
The rules themselves are in ``tests/store/test_contract_users.py``."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from masterchief.store.api import ConflictError, UserRecord
from masterchief.store.sqlite import MIGRATIONS, open_store

# The migration that brought both rules (found by content: later steps may follow it).
STEP = next(i for i, step in enumerate(MIGRATIONS) if any("users_version" in s for s in step))


async def test_a_writer_that_bypasses_the_store_bumps_the_version(tmp_path: Path) -> None:
    async with await open_store(tmp_path / "mc.db") as store:
        before = await store.users_version()
        # another process, even one that bypasses this code (triggers do the counting)
        for sql in (
            "INSERT INTO users (handle, created_at) VALUES ('raw', 'now')",
            "INSERT INTO user_hostmasks (handle, mask) VALUES ('raw', 'r!r@r')",
            "UPDATE user_hostmasks SET mask = 'x!x@x'",
            "INSERT INTO user_chanflags (handle, channel, flags) VALUES ('raw', '#a', 'o')",
            "UPDATE user_chanflags SET flags = 'v'",
            "DELETE FROM user_chanflags",
            "DELETE FROM user_hostmasks",
            "UPDATE users SET flags = 'n'",
        ):
            with closing(sqlite3.connect(tmp_path / "mc.db")) as conn, conn:
                conn.execute(sql)
            now = await store.users_version()
            assert now > before, sql
            before = now
        version, [raw] = await store.load_users_versioned()
        assert (version, raw.handle, raw.flags) == (before, "raw", "n")


async def test_the_tidied_schema_text_is_the_released_one(tmp_path: Path) -> None:
    # The rfc1459 fold and the triggers are generated now; the schema they
    # make must stay what databases in the field already have.
    async with await open_store(tmp_path / "mc.db"):
        pass
    with closing(sqlite3.connect(tmp_path / "mc.db")) as conn:
        sql = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))
    assert sql["users_handle_rfc1459"] == (
        "CREATE UNIQUE INDEX users_handle_rfc1459 ON users"
        " (replace(replace(replace(replace(lower(handle),"
        " '[', '{'), ']', '}'), '\\', '|'), '~', '^'))"
    )
    triggers = sorted(n for n in sql if n.endswith("_bumps_version"))
    assert len(triggers) == 9
    assert sql["user_chanflags_delete_bumps_version"] == (
        "CREATE TRIGGER user_chanflags_delete_bumps_version AFTER DELETE ON user_chanflags"
        " BEGIN UPDATE users_version SET version = version + 1 WHERE id = 1; END"
    )


async def test_the_migration_separates_rows_that_already_collide(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = await open_store(path, migrations=MIGRATIONS[:STEP])
    await old.insert_user(UserRecord(handle="erin[1]", account="acct[1]", hostmasks=("e!e@h",)))
    await old.insert_user(UserRecord(handle="ERIN{1}", account="ACCT{1}", flags="n"))
    await old.close()
    async with await open_store(path) as store:
        users = {u.handle: u for u in await store.load_users()}
        # the first stays as it was; the later one is renamed and loses the
        # account it shared (fails closed: no longer found by that account)
        assert users["erin[1]"].account == "acct[1]"
        assert users["erin[1]"].hostmasks == ("e!e@h",)
        [renamed] = [u for h, u in users.items() if h != "erin[1]"]
        assert renamed.handle.startswith("ERIN{1}_")
        assert (renamed.account, renamed.flags) == (None, "n")
        with pytest.raises(ConflictError):
            await store.insert_user(UserRecord(handle="Erin[1]"))
