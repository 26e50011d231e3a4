"""deploy.telling: packing (table) and the Teller's order: lines per target as
told, callbacks after the lines told before them, nothing stranded."""

from __future__ import annotations

import asyncio

import pytest

from masterchief.deploy.telling import Teller, _packed, pack
from masterchief.outputs.targets import Target
from tests.harness import wait_until

OPS, ALICE = Target.irc("#ops"), Target.irc("alice")

P, N = True, False  # packable (a job update) or not (a plan line)

PACK_CASES: list[tuple[list[tuple[str, bool]], list[str]]] = [
    ([("a", P), ("b", P), ("c", P)], ["a", "b", "c"]),  # three: as they are
    ([("a", P), ("b", P), ("c", P), ("d", P)], ["4 job updates: a | b | c | d"]),
    # plan lines are never packed and keep their place between the updates
    (
        [("a", P), ("b", P), ("p1", N), ("p2", N), ("c", P), ("d", P)],
        ["2 job updates: a | b", "p1", "p2", "2 job updates: c | d"],
    ),
    ([("a", P), ("p1", N), ("b", P), ("c", P), ("d", P)], ["a", "p1", "3 job updates: b | c | d"]),
    ([("p1", N), ("p2", N), ("p3", N), ("p4", N), ("p5", N)], ["p1", "p2", "p3", "p4", "p5"]),
]


@pytest.mark.parametrize(("entries", "sent"), PACK_CASES)
def test_packed(entries: list[tuple[str, bool]], sent: list[str]) -> None:
    assert _packed(entries) == sent


def test_pack_never_cuts_an_update() -> None:
    texts = ["x" * 200, "y" * 200, "z" * 500]
    lines = pack(texts, "3 job updates: ", limit=360)
    assert lines == ["3 job updates: " + "x" * 200, "y" * 200, "z" * 500]


async def test_teller_keeps_order_runs_callbacks_after_and_strands_nothing() -> None:
    gate = asyncio.Event()
    sent: list[tuple[Target, str]] = []

    sent_to: list[Target] = []  # what the flush has begun to announce

    async def announce(target: Target, text: str) -> None:
        sent_to.append(target)
        await gate.wait()
        sent.append((target, text))

    teller = Teller(announce, gather_s=0.01)
    order: list[str] = []
    teller.tell(OPS, "started")
    teller.after(lambda: order.append(f"event after {len(sent)} lines"))
    await wait_until(lambda: bool(sent_to) and not teller._gathered, 15)  # announcing, blocked
    teller.tell(OPS, "result")  # told mid-flush
    teller.tell(ALICE, "plan", packable=False)
    gate.set()
    flush = teller._task
    assert flush is not None
    await asyncio.wait_for(asyncio.shield(flush), 15)
    assert sent == [(OPS, "started"), (OPS, "result"), (ALICE, "plan")]
    assert order == ["event after 1 lines"]
    assert teller._task is flush and flush.done()  # one flush took the lines told mid-way
