"""Who may do what, decided for real: accounts from Atheme via SASL, hostmasks,
global and per-channel flags, and a spoofed nick that must be refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from masterchief.bindings.event import Event
from tests.harness import running_bot


@pytest.fixture
async def accounts(make_account):  # type: ignore[no-untyped-def]
    alice, bob, carol, mallory = await asyncio.gather(*(make_account() for _ in range(4)))
    return {"alice": alice, "bob": bob, "carol": carol, "mallory": mallory}


async def test_flag_matrix(tmp_path: Path, ircd, irc_client, accounts) -> None:  # type: ignore[no-untyped-def]
    a = accounts
    async with running_bot(
        tmp_path, ircd.host, ircd.port, irc={"channels": ["#ops", "#dev"]}
    ) as app:
        assert app.irc.accounts_available
        u = app.users
        await u.add_user("alice", account=a["alice"].name)
        await u.chattr("alice", "+o", channel="#ops")
        await u.add_user("bob", account=a["bob"].name)
        await u.chattr("bob", "+o", channel="#dev")
        await u.add_user("carol", account=a["carol"].name, flags="m")
        await u.add_user("dave", hostmasks=("*!davehost@*",), flags="o")  # no account
        await u.add_user("kim", hostmasks=("*!kimhost@*",), flags="d")  # +d: refused even -|-

        def deploy(ev: Event) -> None:
            ev.reply(f"{ev.nick}: deploying for {ev.handle}")

        app.table.bind("pub", "o|o", "!deploy", deploy)
        app.table.bind("pub", "-|-", "!hi", lambda ev: ev.reply(f"{ev.nick}: hi {ev.handle}"))
        me = app.irc.nickname

        def login(name: str) -> tuple[str, str]:
            return (a[name].name, a[name].password)

        alice, bob, carol, dave, mallory, kim = await asyncio.gather(
            irc_client(a["alice"].name + "_", sasl=login("alice")),
            irc_client(a["bob"].name + "_", sasl=login("bob")),
            irc_client(a["carol"].name + "_", sasl=login("carol")),
            irc_client(username="davehost"),
            irc_client(a["mallory"].name + "_", sasl=login("mallory")),
            irc_client(username="kimhost"),
        )
        for c in (alice, bob, carol, dave, mallory, kim):
            await c.join("#ops")
            await c.join("#dev")

        async def expect(client, chan: str, cmd: str, answer: str) -> None:  # type: ignore[no-untyped-def]
            client.drain()  # replies meant for others that this client also saw
            await client.say(chan, cmd)
            line = await client.wait_for(rf"^:{me}!\S+ PRIVMSG {chan} :{client.nick}: ")
            assert line.text == f"{client.nick}: {answer}", (client.nick, chan, cmd)

        need_ops = "you need global +o or +o on {} for !deploy"
        await expect(alice, "#ops", "!deploy api", "deploying for alice")
        await expect(alice, "#dev", "!deploy api", need_ops.format("#dev"))
        await expect(bob, "#dev", "!deploy api", "deploying for bob")
        await expect(bob, "#ops", "!deploy api", need_ops.format("#ops"))
        await expect(carol, "#dev", "!deploy api", "deploying for carol")  # +m implies +o
        # a hostmask record on a network with accounts: found, but without +o
        weak = "by the weak hostmask *!davehost@*, whose nick and ident anyone can choose"
        await expect(
            dave, "#ops", "!deploy api", need_ops.format("#ops") + f" (you matched {weak})"
        )
        # ...and it does not name the record to scripts: anyone can match *!davehost@*
        await expect(dave, "#ops", "!hi", "hi None")
        await expect(
            mallory,
            "#ops",
            "!deploy api",
            need_ops.format("#ops") + " (no user record matches you)",
        )
        await expect(kim, "#ops", "!hi", "you may not use !hi")
        await expect(mallory, "#ops", "!hi", "hi None")

        # Spoofing: alice leaves; mallory (logged in as herself) takes alice's nick,
        # then drops her account entirely. Neither passes as alice.
        old_nick = alice.nick
        await alice.quit()
        await mallory.send_raw(f"NICK {old_nick}")
        await mallory.wait_for(rf"^:{mallory.nick}!\S+ NICK :?{old_nick}$")
        await expect(
            mallory,
            "#ops",
            "!deploy api",
            need_ops.format("#ops") + " (no user record matches you)",
        )
        await mallory.send_raw("PRIVMSG NickServ :LOGOUT")
        await mallory.wait_for(r" 901 ")
        await expect(
            mallory,
            "#ops",
            "!deploy api",
            need_ops.format("#ops") + " (no user record matches you)",
        )
        assert app.dispatcher.stats.refused >= 5


async def test_whoami_and_identification_in_private(
    tmp_path: Path, ircd, irc_client, make_account
) -> None:  # type: ignore[no-untyped-def]
    acct = await make_account()
    async with running_bot(tmp_path, ircd.host, ircd.port) as app:
        await app.users.add_user("ops1", account=acct.name, flags="o")
        me = app.irc.nickname
        c = await irc_client(acct.name + "_x", sasl=(acct.name, acct.password))
        await c.say(me, "whoami")
        line = await c.wait_for(rf"^:{me}!\S+ PRIVMSG {c.nick} :")
        assert line.text == f"{c.nick}: you are ops1 (account {acct.name}), global flags +o"


async def test_whoami_without_flags_prints_no_plus_minus(
    tmp_path: Path, ircd, irc_client, make_account
) -> None:  # type: ignore[no-untyped-def]
    plain, chanop = await asyncio.gather(make_account(), make_account())
    async with running_bot(tmp_path, ircd.host, ircd.port) as app:
        await app.users.add_user("plain", account=plain.name)
        await app.users.add_user("chanop", account=chanop.name)
        await app.users.chattr("chanop", "+o", channel="#ops")
        me = app.irc.nickname
        a, b = await asyncio.gather(
            irc_client(plain.name + "_", sasl=(plain.name, plain.password)),
            irc_client(chanop.name + "_", sasl=(chanop.name, chanop.password)),
        )
        await asyncio.gather(a.join("#ops"), b.join("#ops"))

        async def whoami(c, where: str) -> str:  # type: ignore[no-untyped-def]
            c.drain()
            await c.say(where, "!whoami" if where.startswith("#") else "whoami")
            line = await c.wait_for(rf"^:{me}!\S+ PRIVMSG (#ops|{c.nick}) :{c.nick}: ")
            assert "+-" not in line.text
            return str(line.text)

        head = f"{a.nick}: you are plain (account {plain.name})"
        assert await whoami(a, "#ops") == f"{head}, no global flags, no flags on #ops"
        assert await whoami(a, me) == f"{head}, no global flags"
        head = f"{b.nick}: you are chanop (account {chanop.name})"
        assert await whoami(b, "#ops") == f"{head}, no global flags, on #ops +o"
