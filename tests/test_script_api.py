"""The script API (``masterchief.say``/``bind``/``unbind``) from a plain
handler's worker thread: handed to the bot's event loop, in order, and a
binding made there still belongs to the script that made it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import masterchief
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable, current_owner


@pytest.fixture
def restore() -> Iterator[None]:
    table = masterchief.table()
    yield
    masterchief.set_table(table)


async def test_say_and_bind_from_a_thread_run_on_the_loop(restore: None) -> None:
    loop_thread = threading.get_ident()
    said: list[tuple[str, str, bool]] = []
    table = BindingTable()
    masterchief.set_table(
        table, lambda t, x: said.append((t, x, threading.get_ident() == loop_thread))
    )

    def handler(ev: Event) -> None:
        return None

    def in_thread() -> bool:
        current_owner.set("script:worker")  # what the dispatcher sets around a handler
        for i in range(50):
            masterchief.say("#ops", f"line {i}")
        masterchief.bind("pub", "-|-", "!late", handler)
        return masterchief.unbind("pub", "-|-", "!nothing", handler)

    removed = await asyncio.to_thread(in_thread)
    await asyncio.sleep(0)  # the says were queued before bind's round trip returned
    assert removed is False
    assert said == [("#ops", f"line {i}", True) for i in range(50)]  # on the loop, in order
    (late,) = table.binds("pub")
    assert late.mask == "!late" and late.owner == "script:worker"


async def test_on_the_loop_say_runs_in_place(restore: None) -> None:
    said: list[str] = []
    masterchief.set_table(BindingTable(), lambda t, x: said.append(x))
    masterchief.say("#ops", "now")
    assert said == ["now"]  # no hop: before this returns


def test_say_without_a_bot_is_an_error(restore: None) -> None:
    masterchief.set_table(BindingTable())
    with pytest.raises(RuntimeError, match="needs a running bot"):
        masterchief.say("#ops", "x")
