"""Built-in commands and the example scripts, over a real InspIRCd."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.harness import running_bot, wait_until
from tests.servers import unique_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def bot(tmp_path: Path, ircd):  # type: ignore[no-untyped-def]
    async with running_bot(tmp_path, ircd.host, ircd.port) as app:
        yield app


async def master(app, irc_client):  # type: ignore[no-untyped-def]
    ident = unique_name("m")[:10]
    await app.users.add_user(ident, hostmasks=(f"*!{ident}@*",), flags="m")
    c = await irc_client(username=ident)
    await c.join("#ops")
    return c


async def ask(client, me: str, target: str, text: str, answer: str = "", *, timeout: float = 10):  # type: ignore[no-untyped-def]
    client.drain()
    await client.say(target, text)
    where = target if target.startswith("#") else client.nick
    return await client.wait_for(
        rf"^:{me}!\S+ (PRIVMSG|NOTICE) ({where}|{client.nick}) :{answer}", timeout
    )


async def test_help_lists_only_what_the_asker_may_use(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    me = bot.irc.nickname
    anon = await irc_client()
    await anon.join("#ops")
    line = await ask(anon, me, "#ops", "!help", "commands you may use: ")
    names = line.text.split(": ", 1)[1].split()
    assert "!help" in names and "!whoami" in names and "!status" in names
    assert "!rehash" not in names and "!binds" not in names and "!chattr" not in names
    boss = await master(bot, irc_client)
    line = await ask(boss, me, "#ops", "!help", "commands you may use: ")
    assert {"!rehash", "!binds", "!adduser", "!chattr"} <= set(line.text.split(": ", 1)[1].split())
    line = await ask(boss, me, "#ops", "!help chattr", "!chattr ")
    assert "flags m|m" in line.text


async def test_binds_status_and_refusal(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    me = bot.irc.nickname
    anon = await irc_client()
    await anon.join("#ops")
    line = await ask(anon, me, "#ops", "!binds", f"{anon.nick}: you need")
    assert line.text.endswith("for !binds (no user record matches you)")
    boss = await master(bot, irc_client)
    line = await ask(boss, me, "#ops", "!binds pub", r"\d+ bindings of type pub")
    rows = await boss.collect(rf"^:{me}!\S+ NOTICE {boss.nick} :pub ", within=1.0)
    assert any("!binds" in r.text and r.text.split()[3] == "1" for r in rows)  # its own hit
    line = await ask(anon, me, "#ops", "!status", "up ")
    assert "connected to" in line.text and "queues: dispatch" in line.text
    assert "output mode 0 server" in line.text and "binds " in line.text


async def test_adduser_and_chattr_grant_access(bot, irc_client, make_account) -> None:  # type: ignore[no-untyped-def]
    me = bot.irc.nickname
    acct = await make_account()
    boss = await master(bot, irc_client)
    newbie = await irc_client(acct.name + "_n", sasl=(acct.name, acct.password))
    await newbie.join("#ops")
    bot.table.bind("pub", "o|o", "!restart", lambda ev: ev.reply(f"{ev.nick}: restarting"))
    await ask(newbie, me, "#ops", "!restart", f"{newbie.nick}: you need")
    await wait_until(lambda: bot.irc.lookup_nick(newbie.nick) is not None)
    line = await ask(boss, me, "#ops", f"!adduser newbie {newbie.nick}", "added ")
    assert line.text == f"added newbie identified by account {acct.name}"
    line = await ask(boss, me, "#ops", "!chattr newbie +o #ops", "newbie on #ops")
    assert line.text == "newbie on #ops: +o"
    await ask(newbie, me, "#ops", "!restart", f"{newbie.nick}: restarting")
    line = await ask(newbie, me, "#ops", "!whoami", f"{newbie.nick}: you are newbie")
    assert line.text.endswith("on #ops +o")
    line = await ask(boss, me, "#ops", "!chattr nosuch +o", "")
    assert "nosuch" in line.text


async def test_rehash_good_and_broken_scripts_and_hot_reload(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    me = bot.irc.nickname
    scripts = bot.scripts.dirs[0]
    (scripts / "hello.py").write_text(
        'from masterchief import bind\nbind("pub", "-|-", "!hello", lambda ev: ev.reply("hello v1"))\n'
    )
    boss = await master(bot, irc_client)
    line = await ask(boss, me, "#ops", "!rehash", "rehash: ")
    assert line.text.startswith("rehash: 1 scripts loaded, 0 failed")
    await ask(boss, me, "#ops", "!hello", "hello v1")
    (scripts / "broken.py").write_text("from masterchief import bind\n\ndef oops(:\n    pass\n")
    line = await ask(boss, me, "#ops", "!rehash", "rehash: ")
    assert line.text.startswith("rehash: 1 scripts loaded, 1 failed")
    err = await boss.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :rehash: broken.py: ")
    assert "SyntaxError at line 3 (ref " in err.text
    assert "previous version stays bound" in err.text
    # a file change alone reloads the script (no !rehash)
    path = scripts / "hello.py"
    path.write_text(
        'from masterchief import bind\nbind("pub", "-|-", "!hello", lambda ev: ev.reply("hello v2"))\n'
    )
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    await wait_until(
        lambda: (
            any(b.mask == "!hello" and b.owner == "script:hello" for b in bot.table.binds("pub"))
            and bot.scripts._mtimes.get(path) == path.stat().st_mtime
        ),
        5,
    )
    await ask(boss, me, "#ops", "!hello", "hello v2")
    # a broken edit of a loaded script keeps the old version answering
    path.write_text("this is not python\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000))
    await wait_until(lambda: bot.scripts._mtimes.get(path) == path.stat().st_mtime, 15)
    await ask(boss, me, "#ops", "!hello", "hello v2")


async def test_example_scripts(tmp_path: Path, ircd, irc_client) -> None:  # type: ignore[no-untyped-def]
    scripts = tmp_path / "scripts"
    shutil.copytree(ROOT / "scripts", scripts)
    async with running_bot(tmp_path, ircd.host, ircd.port) as app:
        me = app.irc.nickname
        a, b = await asyncio.gather(irc_client(), irc_client())
        await a.join("#ops")
        await b.join("#ops")
        await b.part("#ops", "coffee")
        line = await ask(a, me, "#ops", f"!seen {b.nick}", f"{b.nick} was last seen")
        assert "leaving #ops (coffee)" in line.text
        line = await ask(
            a, me, "#ops", "we have a SEV1 on the api", f"{a.nick}: SEV1 noted in #ops"
        )
        await ask(a, me, me, "who is oncall today?", "the on-call rota lives in #oncall")
        app.irc.output.raw(f"MODE #ops +o {a.nick}")
        await a.wait_for(rf"MODE #ops \+o :?{a.nick}")
        await a.send_raw("TOPIC #ops :all green")
        await a.wait_for("TOPIC #ops")
        line = await ask(
            a, me, "#ops", "!lasttopic", f"{a.nick} set the topic of #ops to: all green"
        )
        await a.say(me, "\x01FINGER\x01")
        await a.wait_for(rf"^:{me}!\S+ PRIVMSG {a.nick} :MasterChief: no fingers")
        # !version asks b by CTCP; b's reply (a ctcr event) is reported in the channel
        await b.join("#ops")
        a.drain()
        await a.say("#ops", f"!version {b.nick}")
        await b.wait_for(rf"^:{me}!\S+ PRIVMSG {b.nick} :\x01VERSION\x01")
        await b.notice(me, "\x01VERSION TestClient 9\x01")
        await a.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :{b.nick} runs TestClient 9")
