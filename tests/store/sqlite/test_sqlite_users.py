"""The store's user rules: names unique under rfc1459 folding (the conflicts
themselves are in test_store.py's uniqueness table), and the ``users_version``
counter every writer bumps (issue 8, items 8 and 10)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from masterchief.store.sqlite.store import MIGRATIONS, ConflictError, Store, UserRecord

# The migration that brought both rules (found by content: later steps may follow it).
STEP = next(i for i, step in enumerate(MIGRATIONS) if any("users_version" in s for s in step))


async def test_names_that_differ_stay_apart(store: Store) -> None:
    await store.insert_user(UserRecord(handle="erin1", account="erin[1]"))
    await store.insert_user(UserRecord(handle="erin2", account="erin[2]"))
    await store.insert_user(UserRecord(handle="erin3"))  # accounts may be absent on many
    await store.insert_user(UserRecord(handle="erin4"))
    assert len(await store.load_users()) == 4


async def test_every_user_write_bumps_the_version(store: Store, tmp_path: Path) -> None:
    seen = [await store.users_version()]

    async def bumped() -> None:
        now = await store.users_version()
        assert now != seen[-1]
        seen.append(now)

    await store.insert_user(UserRecord(handle="bob", hostmasks=("a!b@c",)))
    await bumped()
    await store.save_user(UserRecord(handle="bob", flags="o", chanflags={"#ops": "o"}))
    await bumped()
    await store.delete_user("bob")
    await bumped()
    # another process, even one that bypasses this code (triggers do the counting)
    with closing(sqlite3.connect(tmp_path / "mc.db")) as conn, conn:
        conn.execute("INSERT INTO users (handle, created_at) VALUES ('raw', 'now')")
    await bumped()
    version, [raw] = await store.load_users_versioned()
    assert (version, raw.handle) == (seen[-1], "raw")
    # writes to other tables do not count
    await store.outbox_add("#ops", "hello")
    assert await store.users_version() == seen[-1]


async def test_the_migration_separates_rows_that_already_collide(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = await Store.open(path, migrations=MIGRATIONS[:STEP])
    await old.insert_user(UserRecord(handle="erin[1]", account="acct[1]", hostmasks=("e!e@h",)))
    await old.insert_user(UserRecord(handle="ERIN{1}", account="ACCT{1}", flags="n"))
    await old.close()
    async with await Store.open(path) as store:
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
