"""IRCv3 capabilities, against the real InspIRCd with Atheme linked.

The bot asks for the caps it uses (account-tag, extended-join,
account-notify, message-tags, server-time, echo-message) where offered; here
we check it got them and that what they carry reaches Events: the server's
``time`` tag becomes ``Event.time``, and a services login after joining
(account-notify) fires ``account`` bindings and changes who the bot thinks
the nick is.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

from masterchief.bindings.event import Event
from tests.harness import TRUST_HOSTMASKS, client_mask, running_bot, wait_until

WANTED = (
    "account-tag",
    "extended-join",
    "account-notify",
    "message-tags",
    "server-time",
    "echo-message",
)


@pytest.fixture
async def bot(tmp_path: Path, ircd):  # type: ignore[no-untyped-def]
    async with running_bot(tmp_path, ircd.host, ircd.port, users=TRUST_HOSTMASKS) as app:
        yield app


async def test_bot_acks_each_wanted_cap_the_server_offers(bot, ircd) -> None:  # type: ignore[no-untyped-def]
    offered = await asyncio.to_thread(ircd.probe_caps)
    # The session server offers all of them; if it stopped, this test would
    # prove less, so say so rather than pass quietly.
    assert set(WANTED) <= offered, sorted(set(WANTED) - offered)
    acked = {cap for cap, value in bot.irc.client._capabilities.items() if value}
    assert set(WANTED) <= acked, sorted(set(WANTED) - acked)
    assert all(bot.irc.has_cap(cap) for cap in WANTED)
    assert bot.irc.accounts_available


async def test_server_time_tag_is_the_event_time(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    seen: list[Event] = []
    bot.table.bind("pubm", "-|-", "#ops what time*", seen.append)
    # The client asks for echo-message too, so it sees its own line with the
    # tag the server stamped on it.
    c = await irc_client(caps=["server-time", "echo-message"])
    await c.join("#ops")
    await c.say("#ops", "what time is it")
    echo = await c.wait_for(rf"^@\S+ :{c.nick}!\S+ PRIVMSG #ops :what time is it")
    stamp = echo.tags["time"]
    await wait_until(lambda: seen, 15)
    (ev,) = seen
    assert ev.tags.get("time") == stamp
    # The tag has milliseconds; a "now" taken by the bot would not be equal.
    assert ev.time == datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert ev.time.utcoffset() is not None and ev.time.utcoffset().total_seconds() == 0


async def test_account_notify_login_after_join(bot, irc_client, make_account) -> None:  # type: ignore[no-untyped-def]
    me = bot.irc.nickname
    acct = await make_account()
    accounts: list[Event] = []
    joins: list[Event] = []
    bot.table.bind("account", "-|-", "#ops *", accounts.append)
    bot.table.bind("join", "-|-", "#ops *", joins.append)
    boss_ident = "boss" + acct.name[-6:]
    await bot.users.add_user("boss", hostmasks=(client_mask(boss_ident),), flags="m")
    boss, c = await asyncio.gather(irc_client(username=boss_ident), irc_client())
    await boss.join("#ops")
    joined = await c.join("#ops")
    source = joined.prefix
    # joined without an account: extended-join said so
    await wait_until(lambda: any(e.nick == c.nick for e in joins), 15)
    assert [e.account for e in joins if e.nick == c.nick] == [None]
    await wait_until(lambda: bot.irc.lookup_nick(c.nick) is not None, 15)
    assert bot.irc.lookup_nick(c.nick)[0] is None

    # a services login now: only account-notify tells the bot
    await c.say("NickServ", f"IDENTIFY {acct.name} {acct.password}")
    await c.wait_for(r" 900 ")
    await wait_until(lambda: accounts, 15)
    (login,) = accounts
    assert (login.key, login.channel, login.account) == (
        f"#ops {source} {acct.name}",
        "#ops",
        acct.name,
    )
    await wait_until(lambda: bot.irc.lookup_nick(c.nick)[0] == acct.name, 15)
    # ... and !adduser now ties the record to the account, not a hostmask
    boss.drain()
    await boss.say("#ops", f"!adduser late {c.nick}")
    line = await boss.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :added ")
    assert line.text == f"added late identified by account {acct.name}"

    # logging out is announced the same way, with "*"
    await c.say("NickServ", "LOGOUT")
    await c.wait_for(r" 901 ")
    await wait_until(lambda: len(accounts) == 2, 15)
    logout = accounts[1]
    assert (logout.key, logout.account) == (f"#ops {source} *", None)
    await wait_until(lambda: bot.irc.lookup_nick(c.nick)[0] is None, 15)
