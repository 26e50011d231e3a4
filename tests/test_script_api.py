"""The script API (``masterchief.say``/``bind``/``unbind``/``announce``):
scoped to the bot that runs the script (two bots in one process never
interfere), and from a plain handler's worker thread handed to the bot's
event loop, in order, a binding made there still belonging to its script."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from pathlib import Path
from typing import Any

import pytest

import masterchief
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable, current_owner
from masterchief.bindings.scriptapi import ScriptApi, using
from tests.harness import running_bot


async def test_say_and_bind_from_a_thread_run_on_the_loop() -> None:
    loop_thread = threading.get_ident()
    said: list[tuple[str, str, bool]] = []
    table = BindingTable()
    api = ScriptApi(
        table,
        lambda t, x: said.append((t, x, threading.get_ident() == loop_thread)),
        loop=asyncio.get_running_loop(),
    )

    def handler(ev: Event) -> None:
        return None

    def in_thread() -> bool:
        current_owner.set("script:worker")  # what the dispatcher sets around a handler
        for i in range(50):
            masterchief.say("#ops", f"line {i}")
        masterchief.bind("pub", "-|-", "!late", handler)
        return masterchief.unbind("pub", "-|-", "!nothing", handler)

    with using(api):
        removed = await asyncio.to_thread(in_thread)  # to_thread copies the context
    await asyncio.sleep(0)  # the says were queued before bind's round trip returned
    assert removed is False
    assert said == [("#ops", f"line {i}", True) for i in range(50)]  # on the loop, in order
    (late,) = table.binds("pub")
    assert late.mask == "!late" and late.owner == "script:worker"


async def test_on_the_loop_say_runs_in_place() -> None:
    said: list[str] = []
    with using(ScriptApi(BindingTable(), lambda t, x: said.append(x))):
        masterchief.say("#ops", "now")
    assert said == ["now"]  # no hop: before this returns


async def test_announce_reaches_the_bots_outbox_from_the_loop_and_from_a_thread() -> None:
    stored: list[tuple[str, str]] = []

    async def announce(target: str, text: str) -> None:
        stored.append((target, text))

    api = ScriptApi(BindingTable(), announce=announce, loop=asyncio.get_running_loop())
    with using(api):
        await masterchief.announce("#ops", "from the loop")
        await asyncio.to_thread(masterchief.announce, "#ops", "from a thread")
    assert stored == [("#ops", "from the loop"), ("#ops", "from a thread")]


def test_the_api_without_a_bot_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="needs a running bot"):
        masterchief.say("#ops", "x")
    with pytest.raises(RuntimeError, match="needs a running bot"):
        masterchief.bind("pub", "-|-", "!x", print)
    with using(ScriptApi(BindingTable())), pytest.raises(RuntimeError, match="needs a running bot"):
        masterchief.say("#ops", "x")  # a table but no IRC: nothing to say through


def test_a_plain_thread_does_not_inherit_the_bot_but_a_copied_context_does() -> None:
    table = BindingTable()
    errors: list[BaseException] = []

    def plain() -> None:
        try:
            masterchief.bind("pub", "-|-", "!t", print)
        except RuntimeError as exc:
            errors.append(exc)

    with using(ScriptApi(table)):
        t = threading.Thread(target=plain)
        t.start()
        t.join()
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(plain,))
        t.start()
        t.join()
    assert len(errors) == 1 and "needs a running bot" in str(errors[0])
    assert [b.mask for b in table.binds("pub")] == ["!t"]


async def test_two_bots_in_one_process_keep_their_own_bindings(
    tmp_path: Path, ircd: Any, irc_client: Any
) -> None:
    """Each bot loads its own script; a command answers only from the bot
    whose script bound it, and neither table holds the other's binding."""
    dirs = {}
    for name in ("alpha", "beta"):
        d = tmp_path / name
        (d / "scripts").mkdir(parents=True)
        (d / "scripts" / "who.py").write_text(
            "from masterchief import bind, say\n"
            f"@bind('pub', '-|-', '!{name}')\n"
            "def who(ev):\n"
            f"    say(ev.channel, 'I am {name}')\n"
        )
        dirs[name] = d
    async with (
        running_bot(dirs["alpha"], ircd.host, ircd.port) as a,
        running_bot(dirs["beta"], ircd.host, ircd.port) as b,
    ):
        assert [x.mask for x in a.table.binds("pub") if x.owner.startswith("script:")] == ["!alpha"]
        assert [x.mask for x in b.table.binds("pub") if x.owner.startswith("script:")] == ["!beta"]
        c = await irc_client()
        await c.join("#ops")
        an, bn = a.irc.nickname, b.irc.nickname  # type: ignore[union-attr]
        await c.say("#ops", "!beta")
        await c.wait_for(rf"^:{bn}!\S+ PRIVMSG #ops :I am beta$", 15)
        await c.say("#ops", "!alpha")
        await c.wait_for(rf"^:{an}!\S+ PRIVMSG #ops :I am alpha$", 15)
        await c.expect_none(rf"^:({an}|{bn})!\S+ PRIVMSG #ops :I am (alpha|beta)$", within=0.5)
