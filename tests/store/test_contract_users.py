"""Contract: ``UserStore`` and ``HealthStore`` (every backend)."""

from __future__ import annotations

import asyncio

import pytest

from masterchief.store.api import ConflictError, Store, StoreError, UserRecord
from tests.store.conftest import Opener


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


async def test_insert_keeps_a_given_created_at(store: Store) -> None:
    saved = await store.insert_user(
        UserRecord(handle="bob", created_at="2020-01-01T00:00:00+00:00")
    )
    assert saved.created_at == "2020-01-01T00:00:00+00:00"
    assert (await store.load_users())[0].created_at == saved.created_at


async def test_users_are_ordered_by_handle_ignoring_case(store: Store) -> None:
    for handle in ("carol", "Bob", "alice", "Dave"):
        await store.insert_user(UserRecord(handle=handle))
    assert [u.handle for u in await store.load_users()] == ["alice", "Bob", "carol", "Dave"]


async def test_save_replaces_children(store: Store) -> None:
    await store.insert_user(UserRecord(handle="bob", hostmasks=("a!b@c",), chanflags={"#a": "o"}))
    await store.save_user(
        UserRecord(handle="bob", flags="v", hostmasks=("x!y@z",), chanflags={"#b": "v"})
    )
    [bob] = await store.load_users()
    assert (bob.flags, bob.hostmasks, dict(bob.chanflags)) == ("v", ("x!y@z",), {"#b": "v"})
    with pytest.raises(StoreError, match="not in the store"):
        await store.save_user(UserRecord(handle="ghost"))


async def test_save_may_not_take_anothers_account(store: Store) -> None:
    await store.insert_user(UserRecord(handle="a", account="acct"))
    await store.insert_user(UserRecord(handle="b", hostmasks=("b!b@b",)))
    with pytest.raises(ConflictError):
        await store.save_user(UserRecord(handle="b", account="ACCT"))
    b = {u.handle: u for u in await store.load_users()}["b"]
    assert (b.account, b.hostmasks) == (None, ("b!b@b",))  # nothing half-written


async def test_delete_takes_the_children_along(store: Store) -> None:
    await store.insert_user(UserRecord(handle="bob", hostmasks=("a!b@c",), chanflags={"#a": "o"}))
    assert await store.delete_user("bob") is True
    assert await store.delete_user("bob") is False
    assert await store.load_users() == []
    # a new user of that name starts bare
    await store.insert_user(UserRecord(handle="bob"))
    [bob] = await store.load_users()
    assert (bob.hostmasks, dict(bob.chanflags)) == ((), {})


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


async def test_names_that_differ_stay_apart(store: Store) -> None:
    await store.insert_user(UserRecord(handle="erin1", account="erin[1]"))
    await store.insert_user(UserRecord(handle="erin2", account="erin[2]"))
    await store.insert_user(UserRecord(handle="erin3"))  # accounts may be absent on many
    await store.insert_user(UserRecord(handle="erin4"))
    assert len(await store.load_users()) == 4


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


async def test_every_user_write_bumps_the_version(store: Store, other: Store) -> None:
    seen = [await store.users_version()]

    async def bumped() -> None:
        now = await store.users_version()
        assert now != seen[-1]
        assert await other.users_version() == now  # every connection sees the same number
        seen.append(now)

    await store.insert_user(UserRecord(handle="bob", hostmasks=("a!b@c",)))
    await bumped()
    await store.save_user(UserRecord(handle="bob", flags="o", chanflags={"#ops": "o"}))
    await bumped()
    await store.delete_user("bob")
    await bumped()
    # another writer's change counts the same
    await other.insert_user(UserRecord(handle="carol"))
    await bumped()
    version, [carol] = await store.load_users_versioned()
    assert (version, carol.handle) == (seen[-1], "carol")
    # writes to other aggregates do not count
    await store.outbox_add("#ops", "hello")
    await store.checkpoint_put("rest:x", {"n": 1})
    assert await store.users_version() == seen[-1]


async def test_a_failed_write_does_not_bump_the_version(store: Store) -> None:
    await store.insert_user(UserRecord(handle="alice"))
    before = await store.users_version()
    with pytest.raises(ConflictError):
        await store.insert_user(UserRecord(handle="ALICE"))
    assert await store.users_version() == before


async def test_ping_answers_while_open_and_fails_once_closed(backend: Opener) -> None:
    # /healthz's store probe: one trivial read, never a scan of a table that
    # is largest exactly when the bot is in trouble (the outbox).
    s = await backend()
    await s.ping()  # answers (or raises)
    await s.close()
    with pytest.raises(Exception):  # noqa: B017 - any failure is "down" to the probe
        await s.ping()
