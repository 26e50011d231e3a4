"""Every IRC bind type fires with the right Event fields, against a real InspIRCd."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

from masterchief.bindings.event import Event
from tests.harness import running_bot, wait_until


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)

    def of(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]

    async def wait(self, type_: str, n: int = 1, timeout: float = 10) -> list[Event]:
        await wait_until(lambda: len(self.of(type_)) >= n, timeout)
        return self.of(type_)


@pytest.fixture
async def bot(tmp_path: Path, ircd):  # type: ignore[no-untyped-def]
    async with running_bot(tmp_path, ircd.host, ircd.port) as app:
        yield app


async def test_channel_and_private_text(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    for t, m in [("pub", "!deploy"), ("pubm", "#ops *deploy*"), ("msg", "status"), ("msgm", "*")]:
        bot.table.bind(t, "-|-", m, rec)
    bot.table.bind("notc", "-|-", "*maintenance*", rec)
    c = await irc_client()
    await c.join("#ops")
    await c.say("#ops", "!deploy api prod")
    (pubm,) = await rec.wait("pubm")
    (pub,) = await rec.wait("pub")
    assert (pubm.key, pubm.text, pubm.channel) == (
        "#ops !deploy api prod",
        "!deploy api prod",
        "#ops",
    )
    assert (pub.key, pub.text, pub.args, pub.channel) == (
        "!deploy",
        "api prod",
        ["api", "prod"],
        "#ops",
    )
    assert pub.nick == c.nick and pub.uhost is not None and pub.uhost.endswith("@127.0.0.1")
    assert pub.handle is None and isinstance(pub.time, datetime)
    assert "msgid" in pub.tags  # IRCv3 message-tags reach the Event
    await c.say(bot.irc.nickname, "status of api")
    (msgm,) = await rec.wait("msgm")
    (msg,) = await rec.wait("msg")
    assert (msgm.key, msgm.text, msgm.channel) == ("status of api", "status of api", None)
    assert (msg.key, msg.text) == ("status", "of api")
    await c.notice("#ops", "maintenance at 10:00")
    (notc,) = await rec.wait("notc")
    assert (notc.text, notc.channel, notc.nick) == ("maintenance at 10:00", "#ops", c.nick)


async def test_membership_and_channel_changes(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    for t in ("join", "part", "sign", "nick", "kick", "mode", "topc"):
        bot.table.bind(t, "-|-", "#ops *", rec)
    op = await irc_client()
    await op.join("#ops")
    other = await irc_client()
    await other.join("#ops")
    joins = await rec.wait("join", 2)
    assert {e.nick for e in joins} >= {op.nick, other.nick}
    j = next(e for e in joins if e.nick == other.nick)
    assert j.key == f"#ops {other.nick}!{j.uhost}" and j.channel == "#ops"

    old = other.nick
    await other.send_raw(f"NICK {old}x")
    (nick,) = await rec.wait("nick")
    assert (nick.nick, nick.text, nick.key) == (old, old + "x", f"#ops {old}x")
    await wait_until(lambda: other.nick == old + "x")

    await other.part("#ops", "lunch")
    (part,) = await rec.wait("part")
    assert (part.nick, part.text, part.channel) == (other.nick, "lunch", "#ops")

    await other.join("#ops")
    await other.quit("gone home")
    (sign,) = await rec.wait("sign")
    assert sign.nick == other.nick and sign.text.endswith("gone home")

    # the bot joined #ops first, so it holds +o there: op the client through it
    bot.irc.output.raw(f"MODE #ops +o {op.nick}")
    (mode,) = await rec.wait("mode")
    assert (mode.key, mode.text, mode.nick) == ("#ops +o", op.nick, bot.irc.nickname)
    await op.send_raw("TOPIC #ops :deploy freeze until Monday")
    (topc,) = await rec.wait("topc")
    assert (topc.text, topc.key, topc.nick) == (
        "deploy freeze until Monday",
        "#ops deploy freeze until Monday",
        op.nick,
    )

    victim = await irc_client()
    await victim.join("#ops")
    await op.send_raw(f"KICK #ops {victim.nick} :be nice")
    (kick,) = await rec.wait("kick")
    assert kick.key == f"#ops {victim.nick} be nice"
    assert kick.payload == {"target": victim.nick, "reason": "be nice"} and kick.nick == op.nick


async def test_ctcp_ctcr_raw(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    bot.table.bind("ctcp", "-|-", "FINGER", rec)
    bot.table.bind("ctcr", "-|-", "VERSION", rec)
    bot.table.bind("raw", "-|-", "PRIVMSG", rec)
    c = await irc_client()
    me = bot.irc.nickname
    await c.say(me, "\x01FINGER please\x01")
    (ctcp,) = await rec.wait("ctcp")
    assert (ctcp.key, ctcp.text, ctcp.nick) == ("FINGER", "please", c.nick)
    raw = await rec.wait("raw")
    assert raw[0].key == "PRIVMSG" and raw[0].text == f"{me} \x01FINGER please\x01"
    # built-in CTCP VERSION answers by NOTICE
    await c.say(me, "\x01VERSION\x01")
    await c.wait_for(rf"^:{me}!\S+ NOTICE {c.nick} :\x01VERSION MasterChief")
    # a CTCP reply from the client is a ctcr event
    await c.notice(me, "\x01VERSION testclient 1.0\x01")
    (ctcr,) = await rec.wait("ctcr")
    assert (ctcr.key, ctcr.text) == ("VERSION", "testclient 1.0")


async def test_time_cron_evnt_event(bot) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    bot.table.bind("time", "-|-", "* * * * *", rec)
    bot.table.bind("cron", "-|-", "* * * * *", rec)
    bot.table.bind("evnt", "-|-", "rehash", rec)
    bot.table.bind("event", "-|-", "re*", rec)
    # drive the clock directly: two minutes pass while the loop was "busy"
    clock = bot.sources.find("clock", "minutes")
    now = datetime(2026, 11, 27, 10, 0, tzinfo=clock.tz)
    clock._now = lambda tz: now
    clock.last = datetime(2026, 11, 27, 9, 57, tzinfo=clock.tz)
    assert clock.tick(bot.dispatcher) == 3
    times = await rec.wait("time", 3)
    crons = await rec.wait("cron", 3)
    assert [e.key for e in times] == ["58 09 27 11 2026", "59 09 27 11 2026", "00 10 27 11 2026"]
    assert [e.payload.minute for e in crons] == [58, 59, 0]
    assert clock.tick(bot.dispatcher) == 0  # the same minute never fires twice
    bot.rehash()
    (evnt,) = await rec.wait("evnt")
    (event,) = await rec.wait("event")
    assert evnt.key == "rehash" and event.key == "rehash"
