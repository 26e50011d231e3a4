"""One resolver per origin kind: IRC users, console sessions, linked bots, sources."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from masterchief.bindings.event import ConsoleSession, Event, IrcUser, LinkedBot, SourceOrigin
from masterchief.identity.resolve import LINKED_BOT, Resolver
from masterchief.identity.users import UserTable
from masterchief.store.api import UserStore


@dataclass
class Net:
    accounts_available: bool = True
    casemapping: str = "rfc1459"


@pytest.fixture
async def users(store: UserStore) -> UserTable:
    table = await UserTable.load(store)
    await table.add_user("alice", hostmasks=["*!alice@a.example"], account="AliceAcct", flags="n")
    await table.add_user("bob", hostmasks=["*!bob@b.example"], flags="o")
    await table.add_user("hub", flags="b")
    await table.add_user("carol", flags="m")  # no +b: not a bot record
    await table.chattr("bob", "m", channel="#ops")
    return table


def handle_and_flags(resolver: Resolver, ev: Event) -> tuple[str, str, str, bool] | None:
    who = resolver(ev)
    if who is None:
        return None
    return who.handle, who.global_flags(), who.channel_flags("#OPS"), who.restricted is None


def irc(**fields: str) -> Event:
    return Event(type="pub", key="!x", channel="#ops", source="irc", **fields)  # type: ignore[arg-type]


def console(handle: str) -> Event:
    return Event(type="msg", key="x", peer=ConsoleSession("partyline", "3", handle))


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        # IRC: the user table's rules (an account record by its account only)
        (irc(nick="x", uhost="u@h", account="aliceacct"), ("alice", "n", "", True)),
        (irc(nick="alice", uhost="alice@a.example"), None),
        (
            irc(nick="bob", uhost="bob@b.example"),
            ("bob", "v", "v", False),
        ),  # hostmask on an account network
        # a console session: the handle it logged in as, with every flag
        (console("alice"), ("alice", "n", "", True)),
        (console("BOB"), ("bob", "o", "m", True)),
        (console("nobody"), None),  # removed since the login
        # a linked bot: a +b record only, and no privileges
        (Event(type="bot", key="x", peer=LinkedBot("hub", "zed")), ("hub", "", "", False)),
        (Event(type="bot", key="x", peer=LinkedBot("carol")), None),
        # a source: nobody
        (Event(type="webhook", key="github/push", source="webhook"), None),
    ],
)
async def test_each_origin_kind(
    users: UserTable, ev: Event, expected: tuple[str, str, str, bool] | None
) -> None:
    assert handle_and_flags(Resolver(users, Net()), ev) == expected


async def test_a_linked_bot_cannot_approve(users: UserTable) -> None:
    who = Resolver(users, Net())(Event(type="bot", key="x", peer=LinkedBot("hub")))
    assert who is not None and who.restricted == LINKED_BOT
    assert who.approval_refusal() is not None


async def test_hostmask_flags_are_read_at_each_call(users: UserTable) -> None:
    trust = False
    resolver = Resolver(users, Net(), hostmask_flags=lambda: trust)
    ev = irc(nick="bob", uhost="bob@b.example")
    assert handle_and_flags(resolver, ev) == ("bob", "v", "v", False)
    trust = True  # users.hostmask_flags_on_account_networks, changed by a rehash
    assert handle_and_flags(resolver, ev) == ("bob", "o", "m", True)


async def test_the_partyline_and_irc_find_the_same_record(users: UserTable) -> None:
    """One user, two transports: the same record and the same flags."""
    resolver = Resolver(users, Net())
    on_irc = resolver(irc(nick="Al", uhost="x@y", account="AliceAcct"))
    on_partyline = resolver(console("alice"))
    assert on_irc is not None and on_partyline is not None
    assert on_irc.user is on_partyline.user
    assert on_irc.global_flags() == on_partyline.global_flags() == "n"


@pytest.mark.parametrize(
    "origin",
    [
        IrcUser("x", "u@h", "AliceAcct"),
        ConsoleSession("web", "s1", "alice"),
    ],
)
async def test_an_origin_on_its_own(users: UserTable, origin: IrcUser | ConsoleSession) -> None:
    who = Resolver(users, Net()).origin(origin)
    assert who is not None and who.handle == "alice"
    assert Resolver(users, Net()).origin(SourceOrigin("clock")) is None


async def test_offline_no_accounts(users: UserTable) -> None:
    # no IRC connection: hostmasks for everyone (as the user table does)
    who = Resolver(users)(irc(nick="alice", uhost="alice@a.example"))
    assert who is not None and who.handle == "alice"
