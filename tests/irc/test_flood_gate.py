"""The command flood check is the dispatcher's gate: one match, one resolve.

The IRC client no longer matches and resolves each command a second time
to count it: the dispatcher asks its ``gate`` once per chain whose last
matched stage is a command, with the sender's record it resolved anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from masterchief.bindings.access import Principal
from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.irc.flood import FloodPolicy
from masterchief.irc.pacer import OutputQueue
from masterchief.irc.supervisor import IrcBot, IrcSettings
from tests.harness import Who


def line(text: str, nick: str = "bob", **extra: Any) -> tuple[Event, Event]:
    word, _, rest = text.partition(" ")
    common: dict[str, Any] = {"nick": nick, "uhost": f"{nick}@h", "channel": "#ops"}
    common.update({"source": "irc", **extra})
    return (
        Event(type="pubm", key=f"#ops {text}", text=text, **common),
        Event(type="pub", key=word, text=rest, **common),
    )


@pytest.fixture
async def rig() -> AsyncIterator[tuple[BindingTable, Dispatcher, IrcBot, list[str], OutputQueue]]:
    table = BindingTable()
    resolved: list[str] = []
    users = {"boss": Who("boss", "m"), "friend": Who("friend", "f"), "bob": Who("bob", "o")}

    def resolve(ev: Event) -> Principal | None:
        resolved.append(ev.type)
        return users.get(ev.nick or "")

    d = Dispatcher(table, resolver=resolve, handler_timeout_s=1.0)
    out = OutputQueue()
    bot = IrcBot(IrcSettings(flood=FloodPolicy(commands=2, per_s=60, ignore_s=60)), d, out)
    task = asyncio.create_task(d.run())
    yield table, d, bot, resolved, out
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_command_is_resolved_once_and_counted_by_the_gate(rig) -> None:  # type: ignore[no-untyped-def]
    table, d, bot, resolved, out = rig
    ran: list[str] = []
    table.bind("pub", "-|-", "!x", lambda ev: ran.append(ev.text))
    for i in range(4):
        d.submit(*line(f"!x {i}"))
    await d.drain()
    # two commands run, the third tips bob over (told once), the fourth is dropped
    assert ran == ["0", "1"]
    assert resolved == ["pubm"] * 4  # one resolve per chain, none by the IRC side
    assert bot.stats["flood_dropped"] == 2 and bot.stats["flood_warned"] == 1
    assert out.depths()["server"] == 1  # the one "you are being ignored" notice


async def test_chat_is_not_a_command_and_is_never_counted(rig) -> None:  # type: ignore[no-untyped-def]
    table, d, bot, _, _ = rig
    seen: list[str] = []
    table.bind("pubm", "-|-", "*", lambda ev: seen.append(ev.text))
    for i in range(5):
        d.submit(*line(f"hello {i}"))
    await d.drain()
    assert len(seen) == 5 and bot.stats["flood_dropped"] == 0


@pytest.mark.parametrize(
    ("nick", "extra", "runs"),
    [
        ("boss", {}, 4),  # global +m is exempt
        ("friend", {}, 4),  # +f too
        ("bob", {}, 2),  # +o is not
        ("bob", {"source": "console"}, 4),  # only IRC lines are limited here
        ("bob", {"replay_of": "abc"}, 4),  # a replay is not the user typing
    ],
)
async def test_who_the_limit_applies_to(rig, nick: str, extra: dict[str, Any], runs: int) -> None:  # type: ignore[no-untyped-def]
    table, d, _, _, _ = rig
    ran: list[str] = []
    table.bind("pub", "-|-", "!x", lambda ev: ran.append(ev.text))
    for i in range(4):
        d.submit(*line(f"!x {i}", nick=nick, **extra))
    await d.drain()
    assert len(ran) == runs


async def test_the_command_that_tips_a_user_over_starts_the_ignore(rig) -> None:  # type: ignore[no-untyped-def]
    table, d, bot, _, _ = rig
    table.bind("pub", "-|-", "!x", lambda ev: None)
    key = bot._flood_key(line("!x")[1])
    for i in range(2):
        d.submit(*line(f"!x {i}"))
    await d.drain()
    assert not bot.flood.ignored(key, time.monotonic())
    d.submit(*line("!x 2"))
    await d.drain()
    assert bot.flood.ignored(key, time.monotonic())  # what bob says next never becomes an Event
