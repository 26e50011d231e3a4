"""The user table: the matching policy, mutators, passwords, persistence."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from masterchief.errors import UserError
from masterchief.identity.users import (
    User,
    UserTable,
    check_channel,
    normalize_hostmask,
    verify_password,
)
from masterchief.store.sqlite import SqliteStore, open_store
from tests.harness import wait_until


@pytest.fixture
async def table(store: SqliteStore) -> UserTable:
    return await UserTable.load(store)


@pytest.fixture
async def people(table: UserTable) -> UserTable:
    """alice: account + hostmask; bob: hostmask only; [dan]: rfc1459 nick."""
    await table.add_user("alice", hostmasks=["alice!*@*"], account="AliceAcct", flags="o")
    await table.add_user("bob", hostmasks=["bob!*@bob.example.org"])
    await table.add_user("dan", hostmasks=["[dan]!*@*"])
    await table.add_user("ops", hostmasks=["*!*@*.ops.example"])
    await table.add_user("opslead", hostmasks=["lead!~lead@gw.ops.example"])
    return table


# --- the matching policy -----------------------------------------------------------------

MATCH_CASES = [
    # (nick, uhost, account, accounts_available, casemapping, expected handle)
    # accounts available: an account record is found by its account only
    ("alice", "a@h", "AliceAcct", True, "rfc1459", "alice"),
    ("whoever", "x@y", "aliceacct", True, "rfc1459", "alice"),  # account case-insensitive
    ("alice", "a@h", "mallory", True, "rfc1459", None),  # spoofed nick, wrong account
    ("alice", "a@h", None, True, "rfc1459", None),  # spoofed nick, not logged in
    ("alice", "a@h", "*", True, "rfc1459", None),  # account-tag "*": logged out
    ("alice", "a@h", "0", True, "rfc1459", None),  # WHOX "0": logged out
    # ...records without an account still match by hostmask
    ("bob", "b@bob.example.org", None, True, "rfc1459", "bob"),
    ("bob", "b@bob.example.org", "someacct", True, "rfc1459", "bob"),
    ("bob", "b@evil.example.org", None, True, "rfc1459", None),
    # no accounts on this network: hostmasks for everyone, the account is ignored
    ("alice", "a@h", None, False, "rfc1459", "alice"),
    ("mallory", "m@h", "AliceAcct", False, "rfc1459", None),
    ("BOB", "b@BOB.EXAMPLE.ORG", None, False, "rfc1459", "bob"),
    # CASEMAPPING: rfc1459 folds [ ] \ ~ to { } | ^; ascii does not
    ("[dan]", "d@h", None, False, "rfc1459", "dan"),
    ("{DAN}", "d@h", None, False, "rfc1459", "dan"),
    ("{dan}", "d@h", None, False, "strict-rfc1459", "dan"),
    ("{dan}", "d@h", None, False, "ascii", None),
    ("[DAN]", "d@h", None, False, "ascii", "dan"),
    # the most specific mask wins
    ("lead", "~lead@gw.ops.example", None, False, "rfc1459", "opslead"),
    ("lead", "other@gw.ops.example", None, False, "rfc1459", "ops"),
    # incomplete origins match nothing by hostmask
    ("bob", None, None, False, "rfc1459", None),
    (None, "b@bob.example.org", None, False, "rfc1459", None),
    (None, None, "AliceAcct", True, "rfc1459", "alice"),
    ("nobody", "n@nowhere", None, False, "rfc1459", None),
]


@pytest.mark.parametrize(
    ("nick", "uhost", "account", "available", "casemapping", "expected"), MATCH_CASES
)
async def test_match_policy(
    people: UserTable,
    nick: str | None,
    uhost: str | None,
    account: str | None,
    available: bool,
    casemapping: str,
    expected: str | None,
) -> None:
    found = people.match(
        nick, uhost, account, accounts_available=available, casemapping=casemapping
    )
    assert (found.handle if found else None) == expected


async def test_mask_wildcards_and_escapes(table: UserTable) -> None:
    await table.add_user("back", hostmasks=[r"b\\sl!*@*"])  # literal backslash in the nick
    await table.add_user("q", hostmasks=["q?!*@host"])
    hit = table.match(r"b\sl", "u@h", None, accounts_available=False)
    assert hit is not None and hit.handle == "back"
    # rfc1459: \ and | are the same character
    hit = table.match("b|SL", "u@h", None, accounts_available=False)
    assert hit is not None and hit.handle == "back"
    assert table.match("bxsl", "u@h", None, accounts_available=False) is None
    # only * and ? are hostmask wildcards (Eggdrop wild_match): ~ and % are literal
    await table.add_user("pct", hostmasks=["p!~id@10.0.%"])
    hit = table.match("p", "~id@10.0.%", None, accounts_available=False)
    assert hit is not None and hit.handle == "pct"
    assert table.match("p", "~id@10.0.5", None, accounts_available=False) is None
    assert table.match("p", " id@10.0.%", None, accounts_available=False) is None
    hit = table.match("q1", "u@host", None, accounts_available=False)
    assert hit is not None and hit.handle == "q"
    assert table.match("q12", "u@host", None, accounts_available=False) is None


# --- handles, hostmasks, accounts ---------------------------------------------------------


@pytest.mark.parametrize("handle", ["a", "Alice_1", "[x]", "a-b", "x{y}|z^`", "\\o^", "a" * 32])
async def test_valid_handles(table: UserTable, handle: str) -> None:
    user = await table.add_user(handle)
    assert table.get(handle) == user
    assert table.get(handle.upper()) == user


@pytest.mark.parametrize("handle", ["", "a" * 33, "has space", "dot.ted", "é", "a!b", "a@b"])
async def test_invalid_handles(table: UserTable, handle: str) -> None:
    with pytest.raises(UserError, match="invalid handle"):
        await table.add_user(handle)
    assert len(table) == 0


async def test_handles_unique_case_insensitively(table: UserTable) -> None:
    await table.add_user("Alice")
    with pytest.raises(UserError, match="already exists"):
        await table.add_user("aLiCe")


async def test_accounts_unique(table: UserTable) -> None:
    await table.add_user("a", account="Shared")
    with pytest.raises(UserError, match="already belongs to a"):
        await table.add_user("b", account="shared")
    await table.add_user("b")
    with pytest.raises(UserError, match="already belongs to a"):
        await table.set_account("b", "SHARED")
    for bad in ("*", "0", "two words", ""):
        with pytest.raises(UserError, match="invalid account"):
            await table.set_account("b", bad)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("alice!ident@host.example", "alice!ident@host.example"),
        ("alice", "alice!*@*"),
        ("*@host.example", "*!*@host.example"),
        ("host.example", "*!*@host.example"),
        ("2001:db8::1", "*!*@2001:db8::1"),
        ("nick!user", "nick!user@*"),
        ("  *!*@x  ", "*!*@x"),
    ],
)
def test_normalize_hostmask(given: str, stored: str) -> None:
    assert normalize_hostmask(given) == stored


@pytest.mark.parametrize("mask", ["", "a b!c@d", "!u@h", "n!@h", "n!u@", "x" * 300])
def test_invalid_hostmasks(mask: str) -> None:
    with pytest.raises(UserError, match="invalid hostmask"):
        normalize_hostmask(mask)


# Colours, CTCP quoting, zero-width and bidi marks: Unicode Cc and Cf.
HOSTILE = ["\x02evil\u202e!*@*", "a\u200b!*@*", "*!*@h\x01ACTION\x01", "n!u\x0304@h"]


@pytest.mark.parametrize("mask", HOSTILE)
async def test_hostmasks_with_control_characters_are_refused(table: UserTable, mask: str) -> None:
    with pytest.raises(UserError) as err:
        normalize_hostmask(mask)
    assert str(err.value) == f"invalid hostmask {mask!r}: control or invisible characters"
    with pytest.raises(UserError, match="control or invisible"):
        await table.add_user("eve", hostmasks=[mask])
    assert table.get("eve") is None


async def test_hostmask_add_remove(table: UserTable) -> None:
    await table.add_user("bob", hostmasks=["bob!*@*", "bob"])  # duplicates collapse
    assert table.get("bob") == User(
        handle="bob", hostmasks=("bob!*@*",), created_at=table.all()[0].created_at
    )
    user = await table.add_hostmask("BOB", "*!~bob@home.example")
    assert user.hostmasks == ("*!~bob@home.example", "bob!*@*")  # kept sorted
    with pytest.raises(UserError, match="already has"):
        await table.add_hostmask("bob", "*!~bob@home.example")
    assert table.match("x", "~bob@home.example", None, accounts_available=False) == user
    user = await table.remove_hostmask("bob", "bob")  # normalized like on add
    assert user.hostmasks == ("*!~bob@home.example",)
    with pytest.raises(UserError, match="has no hostmask"):
        await table.remove_hostmask("bob", "nope!*@*")
    with pytest.raises(UserError, match="no such user"):
        await table.add_hostmask("ghost", "g!*@*")


# --- flags --------------------------------------------------------------------------------


async def test_chattr_global(table: UserTable) -> None:
    await table.add_user("bob", flags="+ov")
    user = await table.chattr("bob", "+m-v")
    assert user.flags == "mo"
    assert table.get("bob") == user
    with pytest.raises(UserError, match="invalid flag"):
        await table.chattr("bob", "+1")
    with pytest.raises(UserError, match="no such user"):
        await table.chattr("ghost", "+o")


async def test_chattr_channel(table: UserTable) -> None:
    await table.add_user("bob", flags="p")
    user = await table.chattr("bob", "+o", channel="#Ops")
    assert user.flags == "p"  # global flags untouched
    assert dict(user.chanflags) == {"#ops": "o"}
    assert user.chan_flags("#OPS") == "o"
    assert user.chan_flags("#dev") == ""
    user = await table.chattr("bob", "+v", channel="#ops")
    assert user.chan_flags("#ops") == "ov"
    user = await table.chattr("bob", "-ov", channel="#ops")
    assert dict(user.chanflags) == {}  # an empty entry is dropped
    with pytest.raises(UserError, match="invalid channel"):
        await table.chattr("bob", "+o", channel="ops")


@pytest.mark.parametrize(
    "channel", ["#ops\u200b", "#a\x02\x01ACTION\x01", "#\u202espo", "#ops\ufeff", "#a\x7f"]
)
async def test_chattr_refuses_channels_with_control_characters(
    table: UserTable, channel: str
) -> None:
    """``#ops`` plus a zero-width space would be a second, lookalike entry."""
    await table.add_user("bob")
    message = f"invalid channel name {channel!r}: control or invisible characters"
    with pytest.raises(UserError) as err:
        await table.chattr("bob", "+o", channel=channel)
    assert str(err.value) == message
    assert dict(table.all()[0].chanflags) == {}
    assert check_channel("#ops") == "#ops"


CASEMAPPING_CHANNEL_CASES = [
    # (stored channel, queried channel, casemapping, expected flags)
    ("#a[b]", "#A[B]", "rfc1459", "o"),
    ("#a[b]", "#a{b}", "rfc1459", "o"),
    ("#a[b]", "#a{b}", "strict-rfc1459", "o"),
    ("#a[b]", "#a{b}", "ascii", ""),  # different channels under ascii
    ("#a~b", "#a^b", "rfc1459", "o"),
    ("#a~b", "#a^b", "strict-rfc1459", ""),
]


@pytest.mark.parametrize(("stored", "query", "casemapping", "expected"), CASEMAPPING_CHANNEL_CASES)
async def test_chan_flags_casemapping(
    table: UserTable, stored: str, query: str, casemapping: str, expected: str
) -> None:
    await table.add_user("bob")
    user = await table.chattr("bob", "+o", channel=stored)
    assert user.chan_flags(query, casemapping) == expected


async def test_chattr_removal_reaches_casemapping_twin(table: UserTable) -> None:
    await table.add_user("bob")
    await table.chattr("bob", "+o", channel="#a[b]")
    # Same channel under rfc1459: the -o must not miss the [b] spelling.
    user = await table.chattr("bob", "-o+v", channel="#A{B}")
    assert user.chan_flags("#a[b]", "rfc1459") == "v"
    assert user.chan_flags("#a{b}", "rfc1459") == "v"
    assert dict(user.chanflags) == {"#a{b}": "v"}
    # under ascii they are two channels and stay apart
    user = await table.chattr("bob", "+o", channel="#a[b]", casemapping="ascii")
    assert dict(user.chanflags) == {"#a{b}": "v", "#a[b]": "o"}


def test_user_normalizes_chanflags() -> None:
    user = User(handle="x", chanflags={"#OPS": "o"})
    assert dict(user.chanflags) == {"#ops": "o"}
    with pytest.raises(TypeError):
        user.chanflags["#ops"] = "n"  # type: ignore[index]


# --- passwords ----------------------------------------------------------------------------


async def test_set_password(table: UserTable) -> None:
    user = await table.add_user("bob", password="s3cret-pass")
    assert verify_password(user, "s3cret-pass")
    assert "s3cret" not in repr(user)
    user = await table.set_password("bob", "n3w-pass-word")
    assert verify_password(user, "n3w-pass-word")
    assert not verify_password(user, "s3cret-pass")
    user = await table.set_password("bob", None)
    assert user.password_hash is None
    with pytest.raises(UserError, match="password has 6"):
        await table.set_password("bob", "short")


# --- persistence and the index swap -------------------------------------------------------


async def test_changes_are_written_through(store: SqliteStore, table: UserTable) -> None:
    await table.add_user("alice", hostmasks=["alice!*@*"], account="aa", flags="n", info="hi")
    await table.chattr("alice", "+o", channel="#ops")
    await table.add_user("bob")
    await table.set_password("bob", "bob-password")
    await table.remove_user("bob")
    fresh = await UserTable.load(store)
    assert fresh.all() == table.all()
    [alice] = fresh.all()
    assert (alice.handle, alice.account, alice.flags, alice.info) == ("alice", "aa", "n", "hi")
    assert alice.chan_flags("#OPS") == "o"


async def test_reload_sees_other_writers(
    tmp_path: Path, store: SqliteStore, table: UserTable
) -> None:
    other_store = await open_store(tmp_path / "mc.db")
    try:
        other = await UserTable.load(other_store)
        await other.add_user("carol", flags="m")
    finally:
        await other_store.close()
    assert table.get("carol") is None
    await table.reload()
    user = table.get("carol")
    assert user is not None and user.flags == "m"
    # the store refuses a duplicate this table did not know about yet
    stale = UserTable(store)
    with pytest.raises(UserError, match="already in the store"):
        await stale.add_user("CAROL")


async def test_snapshots_are_immutable(table: UserTable) -> None:
    before = await table.add_user("bob", flags="v")
    snapshot = table.all()
    await table.chattr("bob", "+o")
    assert before.flags == "v"  # the old record is unchanged...
    assert snapshot == (before,)  # ...and so is the old listing
    after = table.get("bob")
    assert after is not None and after.flags == "ov"


async def test_remove_user(table: UserTable) -> None:
    await table.add_user("bob", hostmasks=["bob!*@*"])
    await table.remove_user("BOB")
    assert table.get("bob") is None
    assert table.match("bob", "b@h", None, accounts_available=False) is None
    with pytest.raises(UserError, match="no such user"):
        await table.remove_user("bob")


# --- effective flags by how someone matched (issue 8, item 2) ------------------------------


@pytest.fixture
async def carol(table: UserTable) -> UserTable:
    """carol: a strong and a weak mask and +m; erin: an account with rfc1459 characters."""
    await table.add_user("carol", hostmasks=["*!carol@*", "*!carol@home.example"], flags="m")
    await table.chattr("carol", "+o", channel="#ops")
    await table.add_user("erin", account="erin[1]", flags="m")
    await table.chattr("erin", "+o", channel="#ops")
    return table


IDENTIFY_CASES = [
    # (nick, uhost, account, accounts available, hostmask_flags) -> via, restricted?, flags
    # no accounts on the network: a strong mask carries the flags, a weak one never
    ("c", "carol@home.example", None, False, False, "hostmask", False, "m"),
    ("c", "carol@evil.example", None, False, False, "hostmask", True, "v"),
    # accounts on the network: a hostmask match is restricted unless configured...
    ("c", "carol@home.example", None, True, False, "hostmask", True, "v"),
    ("c", "carol@home.example", None, True, True, "hostmask", False, "m"),
    # ...and a weak mask stays restricted even then
    ("c", "carol@evil.example", None, True, True, "hostmask", True, "v"),
    # an account match is trusted
    ("e", "e@h", "erin[1]", True, False, "account", False, "m"),
]


@pytest.mark.parametrize(
    ("nick", "uhost", "account", "available", "hostmask_flags", "via", "restricted", "flags"),
    IDENTIFY_CASES,
)
async def test_identify_effective_flags(
    carol: UserTable,
    nick: str,
    uhost: str,
    account: str | None,
    available: bool,
    hostmask_flags: bool,
    via: str,
    restricted: bool,
    flags: str,
) -> None:
    who = carol.identify(
        nick, uhost, account, accounts_available=available, hostmask_flags=hostmask_flags
    )
    assert who is not None and who.via == via
    assert (who.restricted is not None) == restricted
    assert who.global_flags() == flags
    assert who.channel_flags("#OPS") == ("v" if restricted else "o")
    assert (who.approval_refusal() is not None) == restricted
    assert who.user.flags == "m"  # the record itself is untouched


async def test_a_strong_mask_wins_over_a_more_specific_weak_one(table: UserTable) -> None:
    await table.add_user(
        "u", hostmasks=["verylongnick!verylongident@*", "*!*@h.example"], flags="o"
    )
    who = table.identify("verylongnick", "verylongident@h.example", None, accounts_available=False)
    assert who is not None and who.mask == "*!*@h.example" and who.restricted is None


async def test_restriction_reasons_name_the_mask(carol: UserTable) -> None:
    weak = carol.identify("c", "carol@x.example", None, accounts_available=False)
    assert weak is not None and weak.restricted == (
        "by the weak hostmask *!carol@*, whose nick and ident anyone can choose"
    )
    acct_net = carol.identify("c", "carol@home.example", None, accounts_available=True)
    assert acct_net is not None and acct_net.restricted == (
        "by hostmask *!carol@home.example on a network with services accounts"
    )
    assert acct_net.approval_refusal() == (
        "you matched carol by hostmask *!carol@home.example on a network with services "
        "accounts: that cannot approve deploys"
    )


# --- CASEMAPPING for accounts and handles (issue 8, item 8) -------------------------------

ACCOUNT_CASES = [
    ("ERIN{1}", "rfc1459", True),
    ("Erin{1}", "strict-rfc1459", True),
    ("erin[1]", "ascii", True),
    ("ERIN[1]", "ascii", True),
    ("ERIN{1}", "ascii", False),  # ascii: { is not the lower case of [
    ("erin{1}", "rfc1459", True),
    ("erin{2}", "rfc1459", False),
]


@pytest.mark.parametrize(("account", "casemapping", "found"), ACCOUNT_CASES)
async def test_accounts_compare_under_the_casemapping(
    carol: UserTable, account: str, casemapping: str, found: bool
) -> None:
    who = carol.identify(None, None, account, accounts_available=True, casemapping=casemapping)
    assert (who.handle if who else None) == ("erin" if found else None)


async def test_tilde_and_caret_are_one_under_rfc1459_only(table: UserTable) -> None:
    await table.add_user("t", account="a~b")
    hit = table.identify(None, None, "A^B", accounts_available=True, casemapping="rfc1459")
    assert hit is not None and hit.handle == "t"
    miss = table.identify(None, None, "A^B", accounts_available=True, casemapping="strict-rfc1459")
    assert miss is None


@pytest.mark.parametrize(("first", "second"), [("erin[1]", "ERIN{1}"), ("x\\y", "X|Y")])
async def test_handles_equal_under_rfc1459_cannot_coexist(
    table: UserTable, first: str, second: str
) -> None:
    await table.add_user(first)
    with pytest.raises(UserError) as err:
        await table.add_user(second)
    assert str(err.value).startswith(f"handle {second!r} already exists as {first!r}")
    assert table.get(second) is not None and table.get(second).handle == first  # type: ignore[union-attr]
    # and the store refuses it too, for a table that did not know
    with pytest.raises(UserError, match="already in the store"):
        await UserTable(table._store).add_user(second)


async def test_accounts_equal_under_rfc1459_cannot_coexist(table: UserTable) -> None:
    await table.add_user("erin", account="erin[1]")
    with pytest.raises(UserError, match=r"already belongs to erin as 'erin\[1\]'"):
        await table.add_user("other", account="ERIN{1}")
    await table.add_user("other")
    with pytest.raises(UserError, match="already belongs to erin"):
        await table.set_account("other", "Erin{1}")


# --- seeing other writers (issue 8, item 10) ----------------------------------------------


async def test_refresh_reloads_only_on_a_change(tmp_path: Path, table: UserTable) -> None:
    assert await table.refresh() is False
    async with await open_store(tmp_path / "mc.db") as other_store:
        other = await UserTable.load(other_store)
        await other.add_user("newbie", account="newbie", flags="o")
    assert table.get("newbie") is None
    assert await table.refresh() is True
    user = table.get("newbie")
    assert user is not None and user.flags == "o"
    assert await table.refresh() is False


async def test_watch_sees_changes_and_reload_requests(tmp_path: Path, table: UserTable) -> None:
    async with await open_store(tmp_path / "mc.db") as other_store:
        other = await UserTable.load(other_store)
        task = asyncio.create_task(table.watch(0.05))
        try:
            await other.add_user("late", flags="v")
            await wait_until(lambda: table.get("late") is not None, 15)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # A change the counter does not show (say a backup restored over the
        # file, counter and all): polling cannot see it, a reload request does.
        version = await other_store.users_version()
        await other.add_user("hidden")
        with closing(sqlite3.connect(tmp_path / "mc.db")) as conn, conn:
            conn.execute("UPDATE users_version SET version = ?", (version,))
        assert await table.refresh() is False
        assert table.get("hidden") is None
        task = asyncio.create_task(table.watch(0.05))
        try:
            table.request_reload()
            await wait_until(lambda: table.get("hidden") is not None, 15)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_watch_survives_store_errors(
    tmp_path: Path, table: UserTable, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "mc.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("ALTER TABLE users_version RENAME TO users_version_away")
    task = asyncio.create_task(table.watch(0.02))
    try:
        await wait_until(lambda: "cannot re-read users" in caplog.text, 15)
        assert not task.done()
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("ALTER TABLE users_version_away RENAME TO users_version")
            conn.execute("INSERT INTO users (handle, created_at) VALUES ('back', 'now')")
        await wait_until(lambda: table.get("back") is not None, 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
