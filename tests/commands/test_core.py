"""Built-in commands and the example scripts, over a real InspIRCd."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from masterchief.commands.core import chattr_refusal
from tests.harness import TRUST_HOSTMASKS, client_mask, running_bot, wait_until
from tests.servers import unique_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def bot(tmp_path: Path, ircd):  # type: ignore[no-untyped-def]
    async with running_bot(tmp_path, ircd.host, ircd.port, users=TRUST_HOSTMASKS) as app:
        yield app


async def master(app, irc_client):  # type: ignore[no-untyped-def]
    ident = unique_name("m")[:10]
    await app.users.add_user(ident, hostmasks=(client_mask(ident),), flags="m")
    c = await irc_client(username=ident)
    await c.join("#ops")
    return c


async def member(app, irc_client, flags: str = "", **chan_flags: str):  # type: ignore[no-untyped-def]
    """A hostmask user on #ops: (handle, client).  ``ops="m"`` gives +m on #ops."""
    ident = unique_name("u")[:10]
    await app.users.add_user(ident, hostmasks=(client_mask(ident),), flags=flags)
    for chan, cflags in chan_flags.items():
        await app.users.chattr(ident, "+" + cflags, channel="#" + chan)
    c = await irc_client(username=ident)
    await c.join("#ops")
    return ident, c


async def refused(client, me: str, text: str, answer: str) -> None:  # type: ignore[no-untyped-def]
    """``text`` said in #ops is refused: the bot's first reply is ``answer``,
    by PRIVMSG to the asker only.  Not drained first, so a second line left
    over from the previous command would be taken here and fail."""
    await client.say("#ops", text)
    line = await client.wait_for(rf"^:{me}!\S+ (PRIVMSG|NOTICE) (#ops|{client.nick}) :")
    assert (line.command, line.target, line.text) == ("PRIVMSG", client.nick, answer), text


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
    line = await ask(boss, me, "#ops", "!help rehash", "!rehash ")
    assert line.text.endswith("(flags m)")  # global +m: +m on a channel is not enough


async def test_binds_status_and_refusal(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    me = bot.irc.nickname
    anon = await irc_client()
    await anon.join("#ops")
    line = await ask(anon, me, "#ops", "!binds", f"{anon.nick}: you need")
    assert line.text.endswith("for !binds (no user record matches you)")
    boss = await master(bot, irc_client)
    line = await ask(boss, me, "#ops", "!binds pub", r"\d+ bindings of type pub")
    # the header and 4 rows a page: row i of the listing is line i + 1
    page = ([b.mask for b in bot.table.binds("pub")].index("!binds") + 1) // 4 + 1
    row = await ask(boss, me, "#ops", f"!binds pub {page}", "pub +m +!binds ")
    assert row.text.split()[3] == "2"  # its own hits
    line = await ask(anon, me, "#ops", "!status", "up ")
    assert "connected to" in line.text and "queues: dispatch" in line.text
    assert "output mode 0 alert 0 server 0 help 0" in line.text and "binds " in line.text


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


# Eggdrop's chattr rules (module docstring of masterchief.commands.core), as a table:
# asker global, asker on #ops, target global, target on #ops, global changes,
# #ops changes -> the start of the refusal, or None (allowed).
CHATTR_RULES = [
    # global flags: global +m, and n/m/t only from a global owner
    ("", "m", "", "", "o", "", "you need global +m to change global flags"),
    ("", "n", "", "", "o", "", "you need global +m to change global flags"),
    ("m", "", "", "", "o", "", None),
    ("m", "", "", "", "dk", "", None),
    ("m", "", "", "", "n", "", "only a global owner (+n) may give or take global +n"),
    ("m", "", "", "", "mo", "", "only a global owner (+n) may give or take global +m"),
    ("m", "", "", "", "t", "", "only a global owner (+n) may give or take global +t"),
    ("n", "", "", "", "nmt", "", None),
    # channel flags: +m there (or global +m); +n there from a global owner,
    # +m there from a global owner or an owner of that channel
    ("", "", "", "", "", "o", "you need global +m or +m on #ops to change flags on #ops"),
    ("o", "o", "", "", "", "o", "you need global +m or +m on #ops to change flags on #ops"),
    ("", "m", "", "", "", "ov", None),
    ("", "m", "", "", "", "n", "only a global owner (+n) may give or take +n on #ops"),
    ("", "m", "", "", "", "m", "only a global owner or an owner of #ops may give"),
    ("", "n", "", "", "", "m", None),
    ("", "n", "", "", "", "n", "only a global owner (+n) may give or take +n on #ops"),
    ("m", "", "", "", "", "o", None),
    ("m", "", "", "", "", "m", "only a global owner or an owner of #ops may give"),
    ("n", "", "", "", "", "nm", None),
    # both at once: each side checked
    ("", "m", "", "", "o", "o", "you need global +m to change global flags"),
    ("m", "", "", "", "o", "m", "only a global owner or an owner of #ops may give"),
    # owners' flags are a global owner's to change
    ("m", "", "n", "", "k", "", "only a global owner (+n) may change the flags of bob, who has +n"),
    ("", "m", "", "n", "", "k", "only a global owner (+n) may change the flags of bob, who has +n"),
    ("", "m", "n", "", "", "d", "only a global owner (+n) may change the flags of bob, who has +n"),
    ("", "n", "", "n", "", "o", "only a global owner (+n) may change the flags of bob, who has +n"),
    ("n", "", "n", "n", "k", "k", None),
    # nobody changes +b with chattr
    ("n", "", "", "", "b", "", "+b marks bot records"),
    ("n", "", "", "", "", "b", "+b marks bot records"),
]


@pytest.mark.parametrize(
    ("asker_g", "asker_c", "target_g", "target_c", "glob", "chan", "refusal"), CHATTR_RULES
)
def test_chattr_rules(
    asker_g: str,
    asker_c: str,
    target_g: str,
    target_c: str,
    glob: str,
    chan: str,
    refusal: str | None,
) -> None:
    got = chattr_refusal(
        asker_global=asker_g,
        asker_chan=asker_c,
        target="bob",
        target_global=target_g,
        target_chan=target_c,
        global_changes=frozenset(glob),
        chan_changes=frozenset(chan),
        channel="#ops" if chan else None,
    )
    if refusal is None:
        assert got is None
    else:
        assert got is not None and got.startswith(refusal), got


async def test_channel_master_cannot_escalate(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    """+m on #ops is not global +m: the issue's `!chattr chanm +n` and friends."""
    me = bot.irc.nickname
    users = bot.users
    await users.add_user("victim", hostmasks=("*!victim@nowhere.test",))
    chanm, cm = await member(bot, irc_client, ops="m")
    cm.drain()
    need_global = "you need global +m to change global flags (on a channel: FLAGS #channel)"
    await refused(cm, me, f"!chattr {chanm} +n", need_global)  # the reported exploit
    await refused(cm, me, "!chattr victim +o", need_global)
    await refused(cm, me, "!chattr victim +o|+o", need_global)  # both sides: nothing changes
    await refused(
        cm, me, "!chattr victim +o #dev", "you need global +m or +m on #dev to change flags on #dev"
    )
    await refused(
        cm, me, "!chattr victim +n #ops", "only a global owner (+n) may give or take +n on #ops"
    )
    await refused(
        cm,
        me,
        f"!chattr {chanm} +m #dev",
        "you need global +m or +m on #dev to change flags on #dev",
    )
    await refused(
        cm,
        me,
        "!chattr victim +m #ops",
        "only a global owner or an owner of #ops may give or take +m there",
    )
    # nothing changed
    mine, theirs = users.get(chanm), users.get("victim")
    assert mine is not None and (mine.flags, dict(mine.chanflags)) == ("", {"#ops": "m"})
    assert theirs is not None and (theirs.flags, dict(theirs.chanflags)) == ("", {})
    # what a master of #ops may do: ops on #ops, named or where typed (|flags)
    line = await ask(cm, me, "#ops", "!chattr victim +o #OPS", "victim on ")
    assert line.text == "victim on #OPS: +o"
    line = await ask(cm, me, "#ops", "!chattr victim |+v", "victim on ")
    assert line.text == "victim on #ops: +ov"
    # reloading, listing binds and adding users need global +m
    for cmd in ("!rehash", "!binds", "!adduser x y"):
        line = await ask(cm, me, "#ops", cmd, f"{cm.nick}: you need")
        assert line.text == f"{cm.nick}: you need global +m for {cmd.split()[0]}"
    line = await ask(cm, me, "#ops", "!help", "commands you may use: ")
    names = set(line.text.split(": ", 1)[1].split())
    assert "!chattr" in names and not names & {"!rehash", "!binds", "!adduser"}


async def test_global_master_and_owner_chattr(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    me = bot.irc.nickname
    users = bot.users
    await users.add_user("victim", hostmasks=("*!victim@nowhere.test",))
    (gm_handle, gm), (owner_handle, owner) = await asyncio.gather(
        member(bot, irc_client, flags="m"), member(bot, irc_client, flags="n")
    )
    line = await ask(gm, me, "#ops", "!chattr victim +o", "victim: ")
    assert line.text == "victim: global +o"
    gm.drain()
    await refused(
        gm, me, "!chattr victim +n", "only a global owner (+n) may give or take global +n"
    )
    await refused(
        gm, me, "!chattr victim +m", "only a global owner (+n) may give or take global +m"
    )
    protected = f"only a global owner (+n) may change the flags of {owner_handle}, who has +n"
    await refused(gm, me, f"!chattr {owner_handle} -n", protected)
    await refused(gm, me, f"!chattr {owner_handle} +k #ops", protected)
    theirs, boss = users.get("victim"), users.get(owner_handle)
    assert theirs is not None and theirs.flags == "o"
    assert boss is not None and (boss.flags, dict(boss.chanflags)) == ("n", {})
    # a global master may give ops on any channel, and both sides at once
    line = await ask(gm, me, "#ops", "!chattr victim -o|+o", "victim: ")
    assert line.text == "victim: global +-, on #ops: +o"
    # the owner may give +n (and +m on a channel)
    line = await ask(owner, me, "#ops", "!chattr victim +n", "victim: ")
    assert line.text == "victim: global +n"
    line = await ask(owner, me, "#ops", "!chattr victim +m #dev", "victim on ")
    assert line.text == "victim on #dev: +m (note: I am not on #dev)"  # applied anyway
    del gm_handle


async def test_hostile_arguments_are_refused_or_quoted(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    """Colours, CTCP quoting and invisible marks never come back raw, and a
    lookalike channel (``#ops`` plus a zero-width space) is not stored."""
    me = bot.irc.nickname
    await bot.users.add_user("victim", hostmasks=("*!victim@nowhere.test",))
    boss = await master(bot, irc_client)
    for chan in ("#ops\u200b", "#a\x02\x01ACTION\x01"):
        line = await ask(boss, me, "#ops", f"!chattr victim +o {chan}", "invalid channel")
        assert line.text == f"invalid channel name {chan!r}: control or invisible characters"
    # a channel master is refused the same way, before a refusal could echo it
    _, cm = await member(bot, irc_client, ops="m")
    line = await ask(cm, me, "#ops", "!chattr victim +o #x\x01VERSION\x01", "invalid channel")
    assert (
        line.text == "invalid channel name '#x\\x01VERSION\\x01': control or invisible characters"
    )
    victim = bot.users.get("victim")
    assert victim is not None and dict(victim.chanflags) == {}
    # a channel the bot is not on: applied, with a note; #ops in any case: no note
    line = await ask(boss, me, "#ops", "!chattr victim +o #elsewhere", "victim on ")
    assert line.text == "victim on #elsewhere: +o (note: I am not on #elsewhere)"
    line = await ask(boss, me, "#ops", "!chattr victim +v #OPS", "victim on ")
    assert line.text == "victim on #OPS: +v"
    victim = bot.users.get("victim")
    assert victim is not None and dict(victim.chanflags) == {"#elsewhere": "o", "#ops": "v"}
    # typed text is echoed quoted and cut short
    evil = "\x02\x0304evil\u202e\x01X\x01"
    line = await ask(boss, me, "#ops", f"!adduser okh {evil}", "I don't see ")
    assert line.text == f"I don't see {evil!r} on any of my channels"
    line = await ask(boss, me, "#ops", "!adduser okh " + "N" * 300, "I don't see ")
    assert line.text == f"I don't see {'N' * 40!r} on any of my channels"
    line = await ask(boss, me, "#ops", "!binds \x01VERSION\x01", "no bind type ")
    assert (line.command, line.target) == ("PRIVMSG", boss.nick)
    assert line.text.startswith("no bind type '\\x01VERSION\\x01'; types: pub, msg, ")
    assert bot.users.get("okh") is None


async def test_adduser_by_hostmask_without_account(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    """A nick with no services account is added by ``*!user@host``, and is then
    recognised by that mask."""
    me = bot.irc.nickname
    boss = await master(bot, irc_client)
    guest = await irc_client(username=unique_name("g")[:10])
    joined = await guest.join("#ops")
    _, _, userhost = (joined.prefix or "").partition("!")
    assert "@" in userhost
    await wait_until(lambda: bot.irc.lookup_nick(guest.nick) is not None)
    assert bot.irc.accounts_available  # the account path exists; this nick has none
    line = await ask(boss, me, "#ops", f"!adduser guest {guest.nick}", "added ")
    assert line.text == f"added guest with hostmask *!{userhost}"
    rec = bot.users.get("guest")
    assert rec is not None and rec.account is None and rec.hostmasks == (f"*!{userhost}",)
    line = await ask(guest, me, "#ops", "!whoami", f"{guest.nick}: ")
    assert line.text.startswith(f"{guest.nick}: you are guest (account none)")


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


# --------------------------------------------------------------------------- item 14


async def test_listings_go_by_privmsg_a_page_at_a_time(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    # Issue 8, item 14: !help and !binds answered by NOTICE (the status window
    # in common clients) and !binds dripped 40 lines.  Now PRIVMSG to the
    # asker, and at most 5 lines per request with a page line.
    me = bot.irc.nickname
    for i in range(12):
        bot.table.bind("pub", "-|-", f"!extra{i:02d}", lambda ev: None, owner="test")
    boss = await master(bot, irc_client)
    private = rf"^:{me}!\S+ (PRIVMSG|NOTICE) {boss.nick} :"
    boss.drain()
    await boss.say("#ops", "!binds pub")
    await boss.say("#ops", "!binds pub 2")
    lines = await boss.wait_for_many(private, 10)
    # replies leave in order: had page 1 more than 5 lines, line 6 would be its
    assert {ln.command for ln in lines} == {"PRIVMSG"}
    n = len(bot.table.binds("pub"))
    pages = -(-(n + 1) // 4)  # the header and n rows, 4 a page
    assert lines[0].text == f"{n} bindings of type pub:"
    assert lines[4].text == f"page 1/{pages}, !binds pub 2 for more"
    assert lines[9].text == f"page 2/{pages}, !binds pub 3 for more"
    rows = [ln.text.split()[2] for ln in (*lines[1:4], *lines[5:9])]
    assert rows == [b.mask for b in bot.table.binds("pub")][:7]
    await boss.expect_none(private, within=0.5)
    # every page, in private without the prefix, shows every binding once
    seen: list[str] = []
    for page in range(1, pages + 1):
        boss.drain()
        await boss.say(me, f"binds pub {page}")
        got = await boss.wait_for_many(private, min(5, n + 1 - (page - 1) * 4 + 1), 10)
        assert len(got) <= 5
        seen += [ln.text.split()[2] for ln in got if not ln.text.startswith(("page ", f"{n} "))]
        if page < pages:
            assert got[-1].text == f"page {page}/{pages}, binds pub {page + 1} for more"
        else:
            assert got[-1].text == f"page {pages}/{pages}"
    assert seen == [b.mask for b in bot.table.binds("pub")]
    line = await ask(boss, me, "#ops", f"!binds pub {pages + 1}", "there are ")
    assert line.text == f"there are {pages} pages (!binds pub {pages} is the last)"
    # !help: privately, by PRIVMSG
    anon = await irc_client()
    await anon.join("#ops")
    line = await ask(anon, me, "#ops", "!help", "commands you may use: ")
    assert (line.command, line.target) == ("PRIVMSG", anon.nick)
    line = await ask(anon, me, "#ops", "!help 2", "there is only one page")
    assert line.text == "there is only one page (!help)"


async def test_private_replies_notice_is_kept_for_who_wants_it(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, irc_client
) -> None:
    async with running_bot(
        tmp_path, ircd.host, ircd.port, bot={"private_replies": "notice"}
    ) as app:
        me = app.irc.nickname  # type: ignore[union-attr]
        anon = await irc_client()
        await anon.join("#ops")
        line = await ask(anon, me, "#ops", "!help", "commands you may use: ")
        assert (line.command, line.target) == ("NOTICE", anon.nick)
        line = await ask(anon, me, me, "help", "commands you may use: ")
        assert (line.command, line.target) == ("NOTICE", anon.nick)
