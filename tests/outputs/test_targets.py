"""Targets (``transport:name``), and the outbox delivering them through transports."""

from __future__ import annotations

from typing import Any

import pytest

from masterchief.outputs.targets import Target, Transports
from tests.harness import wait_until
from tests.outputs.test_outbox import T0, Rig, texts


@pytest.mark.parametrize(
    ("text", "transport", "name"),
    [
        ("irc:#ops", "irc", "#ops"),
        ("irc:alice", "irc", "alice"),
        ("#ops", "irc", "#ops"),  # the configuration's channels, rows from before targets
        ("alice", "irc", "alice"),
        ("test:s1", "test", "s1"),
        ("web-console:7:a", "web-console", "7:a"),  # only the first colon splits
        ("#chan:x", "irc", "#chan:x"),  # not a transport name before the colon
    ],
)
def test_parse_and_format(text: str, transport: str, name: str) -> None:
    target = Target.parse(text)
    assert (target.transport, target.name) == (transport, name)
    assert str(target) == f"{transport}:{name}"
    assert Target.parse(str(target)) == target


@pytest.mark.parametrize(
    "text", ["", "irc:", ":x", "#a b", "#x\r\n", "test:a\x00", "#" + "x" * 300, "irc::x"]
)
def test_invalid_targets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="target"):
        Target.parse(text)


def test_a_transport_name_is_checked() -> None:
    with pytest.raises(ValueError, match="transport"):
        Target("IRC", "#ops")


class Console:
    """A Transport of lines kept in memory, like a console session's."""

    name = "test"

    def __init__(self) -> None:
        self.connected = True
        self.lines: list[tuple[str, str]] = []

    def deliver(self, name: str, text: str) -> int:
        self.lines.append((name, text))
        return 1


async def test_other_transports_get_their_targets_irc_keeps_its_own(store: Any) -> None:
    console = Console()
    rig = Rig(store, transports=Transports([console]))
    await rig.outbox.announce("irc:#ops", "to irc")
    await rig.outbox.announce(Target("test", "s1"), "one")
    await rig.outbox.announce("test:s1", "two")
    await rig.outbox.announce("test:s2", "three")
    assert texts(await rig.deliver_all()) == ["to irc"]
    assert console.lines == [("s1", "one"), ("s1", "two"), ("s2", "three")]
    assert await store.outbox_count() == 0  # delivered: confirmed and deleted


async def test_a_transport_not_connected_keeps_its_rows(store: Any) -> None:
    console = Console()
    console.connected = False
    rig = Rig(store, transports=Transports([console]))
    await rig.outbox.announce("test:s1", "later")
    await rig.outbox.step()
    assert console.lines == [] and rig.outbox.depth() == 1
    console.connected = True
    await rig.outbox.step()
    await rig.outbox.step()
    assert console.lines == [("s1", "later")]
    await wait_until(lambda: rig.outbox.depth() == 0, 5)
    assert await store.outbox_count() == 0


async def test_an_unknown_transport_is_refused(store: Any) -> None:
    rig = Rig(store)
    with pytest.raises(ValueError, match="no transport 'test'"):
        await rig.outbox.announce("test:s1", "hi")
    assert await store.outbox_count() == 0


async def test_rows_from_before_targets_are_irc_targets(store: Any) -> None:
    await store.outbox_add("#ops", "old row", created_at=T0)  # as written before targets
    rig = Rig(store)
    await rig.outbox.announce("irc:#ops", "new row")  # the same target: one queue, in order
    assert texts(await rig.deliver_all()) == ["old row", "new row"]


def test_transports_deliver_by_the_targets_transport() -> None:
    console = Console()
    transports = Transports([console])
    assert transports.deliver(Target("test", "s1"), "hi") == 1
    assert transports.deliver(Target.irc("#ops"), "nobody") == 0  # no IRC transport here
    assert console.lines == [("s1", "hi")]
    assert "test" in transports and "irc" not in transports


async def test_rows_for_a_transport_gone_since_are_dropped_and_logged(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # written while a console transport was there; this run has none
    await store.outbox_add("test:s1", "nobody to tell", created_at=T0)
    rig = Rig(store)
    await rig.outbox.announce("#ops", "still here")
    with caplog.at_level("ERROR", "masterchief.outbox"):
        assert texts(await rig.deliver_all()) == ["still here"]
    assert "dropped an announcement for test:s1" in caplog.text
    assert await store.outbox_count() == 0  # not retried forever
