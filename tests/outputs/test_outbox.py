"""The durable outbox (masterchief/outputs/outbox.py) with a real SqliteStore in a temporary
folder, a real OutputQueue and fake clocks; plus the OutputQueue's delivery
callbacks it relies on.

The feeder is driven by hand: ``await outbox.step()`` hands over what the pacer
has room for, ``pop_all`` plays the sending task (advancing the pacer's fake
clock exactly as ``run()`` would sleep) and the server's echo-message, and the
next ``step()`` deletes what was confirmed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from masterchief.bindings.event import Event
from masterchief.irc.pacer import ALERT_SHARE, OutputQueue, split_message
from masterchief.irc.storm import parse_summary
from masterchief.outputs.outbox import (
    Outbox,
    delayed_prefix,
    expired_line,
    human_age,
)
from masterchief.store.api import OutboxRecord
from masterchief.store.sqlite import SqliteStore
from tests.harness import wait_until


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


T0 = 1_800_000_000.0  # wall clock at the start of each test


class Rig:
    """An Outbox over a real SqliteStore and an OutputQueue, both on fake clocks."""

    def __init__(
        self,
        store: SqliteStore,
        *,
        burst: int = 7,
        rate: float = 1.0,
        connected: asyncio.Event | None = None,
        **kw: Any,
    ) -> None:
        self.store = store
        self.mono = FakeClock(100.0)
        self.wall = FakeClock(T0)
        self.output = OutputQueue(burst=burst, rate=rate, clock=self.mono)
        self.output.set_self("mc", "bot", "example.org")
        self.outbox = Outbox(
            store, self.output, connected=connected, clock=self.wall, monotonic=self.mono, **kw
        )

    def pop_all(self, limit: int | None = None, *, echo: bool = True) -> list[str]:
        """Send what the queue holds (at most *limit* lines), as run() would pace
        it; with *echo* the server echoes each line back."""
        out: list[str] = []
        while limit is None or len(out) < limit:
            delay = self.output.next_delay()
            if delay is None:
                break
            self.mono.advance(delay)
            line = self.output.pop()
            assert line is not None
            out.append(line)
            if echo:
                _, target, text = line.split(" ", 2)
                self.outbox.echo(target, text.removeprefix(":"))
        return out

    async def deliver_all(self) -> list[str]:
        """step() and send until nothing is left anywhere."""
        out: list[str] = []
        while True:
            await self.outbox.step()
            lines = self.pop_all()
            if not lines:
                await self.outbox.step()  # delete what the last lines carried
                return out
            out.extend(lines)


def texts(lines: list[str], target: str = "#ops") -> list[str]:
    prefix = f"PRIVMSG {target} :"
    return [ln.removeprefix(prefix) for ln in lines if ln.startswith(prefix)]


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m"), (3 * 60 + 40, "3m"), (3599, "59m"), (3600, "1h"),
     (2 * 3600 + 59 * 60, "2h"), (86400 * 3 + 5, "3d"), (-4, "0s")],
)  # fmt: skip
def test_human_age(seconds: float, text: str) -> None:
    assert human_age(seconds) == text


def test_delayed_prefix() -> None:
    assert delayed_prefix(59, 60) == ""
    assert delayed_prefix(61, 60) == "[delayed 1m] "
    assert delayed_prefix(0.5, 0) == "[delayed 0s] "


def rec(
    i: int, created: float, kind: str = "text", meta: dict[str, Any] | None = None
) -> OutboxRecord:
    return OutboxRecord(i, "#ops", f"t{i}", kind, None, json.dumps(meta) if meta else None, created)


def test_expired_line_says_what_and_how_old() -> None:
    records = [
        *(rec(i, 1000.0 + i, meta={"source": "github"}) for i in range(30)),
        *(rec(100 + i, 2000.0, kind="alert", meta={"alertname": "X"}) for i in range(12)),
        rec(200, 3000.0, kind="jenkins"),
        rec(201, 3000.0, meta={"source": "not json-safe \n name"}),
        OutboxRecord(202, "#ops", "x", "text", None, "{broken", 3000.0),
    ]
    assert expired_line(records, now=1000.0 + 2 * 3600 + 30) == (
        "[delayed] 45 older announcements expired while I was away: "
        "30 github, 12 alerts, 1 jenkins, 1 notjson-safename, 1 other (oldest 2h ago)"
    )
    assert expired_line([rec(1, 0.0)], now=90.0) == (
        "[delayed] 1 older announcement expired while I was away: 1 other (oldest 1m ago)"
    )


# --------------------------------------------------------------------------- durability and order


async def test_announce_is_in_the_store_when_it_returns(store: SqliteStore) -> None:
    rig = Rig(store)
    await rig.outbox.announce("#ops", "deploy done", kind="github", meta={"source": "github"})
    [row] = await store.outbox_pending()
    # stored as the Target's text: a bare channel is an IRC target
    assert (row.target, row.text, row.kind) == ("irc:#ops", "deploy done", "github")
    assert row.created_at == T0
    assert json.loads(row.meta or "") == {"source": "github"}


async def test_rows_are_deleted_only_once_the_server_echoed_them(store: SqliteStore) -> None:
    rig = Rig(store)
    for i in range(3):
        await rig.outbox.announce("#ops", f"news {i}")
    await rig.outbox.step()
    assert sum(rig.output.depths().values()) == 3
    assert await store.outbox_count() == 3  # queued is not sent
    assert texts(rig.pop_all(limit=1)) == ["news 0"]
    await rig.outbox.step()
    assert [r.text for r in await store.outbox_pending()] == ["news 1", "news 2"]
    assert texts(rig.pop_all(echo=False)) == ["news 1", "news 2"]
    await rig.outbox.step()
    assert await store.outbox_count() == 2  # written, not yet echoed
    assert rig.outbox.echo("#OPS", "news 2")  # in order: confirms "news 1" too
    await rig.outbox.step()
    assert await store.outbox_count() == 0
    assert rig.outbox.stats()["deleted"] == 3
    assert not rig.outbox.echo("#ops", "news 2")  # someone else's, or a repeat


async def test_the_echo_binding_takes_only_our_own_lines(store: SqliteStore) -> None:
    rig = Rig(store)
    await rig.outbox.announce("#ops", "hello there")
    await rig.outbox.step()
    rig.pop_all(echo=False)
    nick: list[str | None] = [None]
    handler = rig.outbox.echo_handler(lambda: nick[0])
    echo = Event(type="raw", key="PRIVMSG", nick="MC", text="#ops hello there")
    handler(echo)  # not registered yet: we do not know who we are
    handler(Event(type="raw", key="PRIVMSG", nick="alice", text="#ops hello there"))
    nick[0] = "mc"
    handler(Event(type="raw", key="PRIVMSG", nick="alice", text="#ops hello there"))
    assert rig.outbox.stats()["echoed"] == 0
    handler(echo)  # our nick, whatever its case
    assert rig.outbox.stats()["echoed"] == 1


async def test_without_echo_a_line_is_confirmed_by_time(store: SqliteStore) -> None:
    rig = Rig(store, confirm_after_s=30)
    await rig.outbox.announce("#ops", "no echo here")
    await rig.outbox.step()
    rig.pop_all(echo=False)
    assert await rig.outbox.step() == 30.0  # the deadline
    rig.mono.advance(29.9)
    await rig.outbox.step()
    assert await store.outbox_count() == 1
    rig.mono.advance(0.1)
    assert await rig.outbox.step() is None
    assert await store.outbox_count() == 0


async def test_when_the_connection_ends_unconfirmed_lines_go_out_again_in_order(
    store: SqliteStore,
) -> None:
    connected = asyncio.Event()
    connected.set()
    rig = Rig(store, connected=connected, burst=3, rate=1.0, delayed_after_s=60)
    for i in range(6):
        await rig.outbox.announce("#ops", f"news {i}")
    await rig.outbox.step()
    assert texts(rig.pop_all(limit=1)) == ["news 0"]  # echoed
    assert texts(rig.pop_all(limit=2, echo=False)) == ["news 1", "news 2"]  # the server held them
    rig.output.privmsg("#ops", "a reply")  # not ours: stays queued
    # the connection drops: output.run() ends and calls its stop hooks
    connected.clear()
    rig.output._stop_hooks[0]()
    assert rig.output.depths()["alert"] == 0  # our "news 3" withdrawn
    assert rig.output.depths()["server"] == 1  # the reply kept
    assert rig.outbox.stats()["requeued"] == 3
    rig.wall.advance(120)
    connected.set()
    sent = texts(await rig.deliver_all())
    # announcements in their own (alert) lane, in order; the reply in its own
    assert [t for t in sent if t != "a reply"] == [
        "[delayed 2m] news 1",
        "[delayed 2m] news 2",
        "[delayed 2m] news 3",
        "[delayed 2m] news 4",
        "[delayed 2m] news 5",
    ]
    assert sent.count("a reply") == 1
    assert await store.outbox_count() == 0


async def test_a_crash_between_queueing_and_sending_loses_nothing(store: SqliteStore) -> None:
    first = Rig(store)
    for i in range(5):
        await first.outbox.announce("#ops", f"news {i}")
    await first.outbox.step()
    first.pop_all(limit=2)  # two went out; the process dies before deleting them
    # "restart": a new output queue and outbox over the same store
    second = Rig(store)
    assert await second.outbox.load() == 5
    got = texts(await second.deliver_all())
    assert got == [f"news {i}" for i in range(5)]  # at-least-once: the two again
    assert await store.outbox_count() == 0


async def test_a_restart_after_deletion_does_not_repeat(store: SqliteStore) -> None:
    first = Rig(store)
    for i in range(4):
        await first.outbox.announce("#ops", f"news {i}")
    await first.outbox.step()
    first.pop_all(limit=3)
    await first.outbox.step()  # deletes the three sent
    second = Rig(store)
    assert texts(await second.deliver_all()) == ["news 3"]


async def test_announcements_made_before_load_are_not_doubled(store: SqliteStore) -> None:
    rig = Rig(store)
    await rig.outbox.announce("#ops", "early")  # before the feeder loaded the table
    await rig.outbox.step()  # loads
    await rig.outbox.announce("#ops", "later")
    assert texts(await rig.deliver_all()) == ["early", "later"]


async def test_a_delivery_announced_again_is_kept_once(store: SqliteStore) -> None:
    rig = Rig(store)
    await rig.outbox.announce("#ops", "push 1", meta={"source": "github", "delivery": 7})
    await rig.outbox.announce("#ops", "push 1", meta={"source": "github", "delivery": 7})
    await rig.outbox.announce("#dev", "push 1", meta={"source": "github", "delivery": 7})
    await rig.outbox.announce("#ops", "push 2", meta={"source": "github", "delivery": 7})
    await rig.outbox.announce("#ops", "push 1", meta={"source": "github", "delivery": 8})
    await rig.outbox.announce("#ops", "no delivery")
    await rig.outbox.announce("#ops", "no delivery")
    assert await store.outbox_count() == 6
    assert rig.outbox.stats()["repeats"] == 1
    # after a restart the waiting rows still count
    second = Rig(store)
    await second.outbox.announce("#ops", "push 2", meta={"source": "github", "delivery": 7})
    assert await store.outbox_count() == 6
    assert texts(await second.deliver_all()) == [
        "push 1", "push 2", "push 1", "no delivery", "no delivery"
    ]  # fmt: skip
    # once delivered and forgotten, the same delivery is news again
    await second.outbox.announce("#ops", "push 2", meta={"source": "github", "delivery": 7})
    assert await store.outbox_count() == 1


async def test_order_per_target_with_targets_taking_turns(store: SqliteStore) -> None:
    rig = Rig(store, burst=100, rate=100.0)
    for i in range(4):
        await rig.outbox.announce("#a", f"a{i}")
    for i in range(2):
        await rig.outbox.announce("#b", f"b{i}")
    lines = await rig.deliver_all()
    assert [ln.split(" :", 1)[1] for ln in lines] == ["a0", "b0", "a1", "b1", "a2", "a3"]


async def test_only_what_the_pacer_sends_within_a_second_is_handed_over(store: SqliteStore) -> None:
    rig = Rig(store, burst=7, rate=1.0)
    for i in range(20):
        await rig.outbox.announce("#ops", f"news {i}")
    await rig.outbox.step()
    assert rig.output.depths()["alert"] == 8  # 7 tokens now + 1 due within a second
    assert rig.outbox.stats()["pending"] == 12
    # a command reply waits behind at most the alert lane's fair share of those
    rig.output.privmsg("#ops", "pong")
    lines = texts(rig.pop_all())
    assert lines[ALERT_SHARE] == "pong"


async def test_nothing_is_handed_over_while_disconnected(store: SqliteStore) -> None:
    connected = asyncio.Event()
    rig = Rig(store, connected=connected)
    await rig.outbox.announce("#ops", "while away")
    assert await rig.outbox.step() is None
    assert rig.output.depths()["server"] == 0
    connected.set()
    assert texts(await rig.deliver_all()) == ["while away"]


async def test_invalid_announcements_are_refused(store: SqliteStore) -> None:
    rig = Rig(store)
    for target in ("", "#a b", ":x", "#x\r\n", "#" + "x" * 300):
        with pytest.raises(ValueError, match="target"):
            await rig.outbox.announce(target, "hi")
    with pytest.raises(ValueError, match="empty"):
        await rig.outbox.announce("#ops", "\r\n\0")
    assert await store.outbox_count() == 0


# --------------------------------------------------------------------------- delayed and expired


async def test_old_announcements_are_marked_delayed(store: SqliteStore) -> None:
    rig = Rig(store, delayed_after_s=60)
    await rig.outbox.announce("#ops", "old one")
    rig.wall.advance(200)
    await rig.outbox.announce("#ops", "fresh one")
    assert texts(await rig.deliver_all()) == ["[delayed 3m] old one", "fresh one"]
    assert rig.outbox.stats()["delayed"] == 1


async def test_expired_announcements_are_summarised_not_replayed(store: SqliteStore) -> None:
    rig = Rig(store, expire_after_s=1800, delayed_after_s=60)
    for i in range(3):
        await rig.outbox.announce("#ops", f"push {i}", meta={"source": "github"})
    await rig.outbox.announce(
        "#ops", "HighCPU on web-1", kind="alert", meta={"alertname": "HighCPU"}
    )
    await rig.outbox.announce("#dev", "build 7 ok", kind="jenkins")
    rig.wall.advance(2 * 3600)
    await rig.outbox.announce("#ops", "recent news")
    rig.wall.advance(90)
    lines = await rig.deliver_all()
    assert texts(lines) == [
        "[delayed] 4 older announcements expired while I was away: 3 github, 1 alerts (oldest 2h ago)",
        "[delayed 1m] recent news",
    ]
    assert texts(lines, "#dev") == [
        "[delayed] 1 older announcement expired while I was away: 1 jenkins (oldest 2h ago)"
    ]
    assert await store.outbox_count() == 0
    assert rig.outbox.stats()["expired"] == 5


# --------------------------------------------------------------------------- storms


def alert_meta(name: str, instance: str, status: str = "firing") -> dict[str, Any]:
    return {"alertname": name, "status": status, "severity": "critical", "instances": [instance],
            "fingerprints": [f"{name}/{instance}"], "summary": "too hot"}  # fmt: skip


async def announce_alert(outbox: Outbox, name: str, instance: str, status: str = "firing") -> None:
    await outbox.announce("#alerts", f"[{status.upper()}] {name} on {instance}: too hot", kind="alert",
                          fold_key=name, meta=alert_meta(name, instance, status))  # fmt: skip


async def test_a_backlog_over_the_limit_is_folded(store: SqliteStore) -> None:
    rig = Rig(store, burst=7, rate=1.0, max_backlog_s=10)
    for i in range(1, 21):
        await announce_alert(rig.outbox, "HighCPU", f"web-{i}")
    for i in (1, 3, *range(5, 20)):
        await announce_alert(rig.outbox, "DiskFull", f"db-{i}")
    lines = texts(await rig.deliver_all(), "#alerts")
    assert lines == [
        "37 alerts firing: HighCPU \u00d720 (web-1..web-20), DiskFull \u00d717 (db-1, db-3, db-5..db-19)"
    ]
    assert await store.outbox_count() == 0
    assert rig.outbox.stats()["folded"] == 37


async def test_a_backlog_under_the_limit_is_sent_as_is(store: SqliteStore) -> None:
    rig = Rig(store, burst=7, rate=1.0, max_backlog_s=10)
    for i in range(1, 11):  # 10 lines: 3 s at the pacer's rate
        await announce_alert(rig.outbox, "HighCPU", f"web-{i}")
    lines = texts(await rig.deliver_all(), "#alerts")
    assert lines == [f"[FIRING] HighCPU on web-{i}: too hot" for i in range(1, 11)]


async def test_the_newest_state_wins_and_fired_and_resolved_collapse(store: SqliteStore) -> None:
    rig = Rig(store, burst=1, rate=1.0, max_backlog_s=5)
    for i in range(1, 9):
        await announce_alert(rig.outbox, "HighCPU", f"web-{i}")
    for i in range(1, 4):
        await announce_alert(rig.outbox, "HighCPU", f"web-{i}", "resolved")
    await announce_alert(rig.outbox, "DiskFull", "db-1", "resolved")  # fired before the window
    lines = texts(await rig.deliver_all(), "#alerts")
    assert lines == [
        "5 alerts firing: HighCPU \u00d75 (web-4..web-8)",
        "3 alerts fired and resolved: HighCPU \u00d73 (web-1..web-3)",
        "1 alert resolved: DiskFull \u00d71 (db-1)",
    ]


async def test_plain_announcements_keep_their_place_in_a_storm(store: SqliteStore) -> None:
    rig = Rig(store, burst=1, rate=1.0, max_backlog_s=5)
    await rig.outbox.announce("#alerts", "maintenance starts")
    for i in range(1, 11):
        await announce_alert(rig.outbox, "HighCPU", f"web-{i}")
    await rig.outbox.announce("#alerts", "maintenance ends")
    lines = texts(await rig.deliver_all(), "#alerts")
    assert lines == [
        "maintenance starts",
        "10 alerts firing: HighCPU \u00d710 (web-1..web-10)",
        "maintenance ends",
    ]


async def test_alerts_that_arrive_during_a_storm_are_folded_as_they_queue(
    store: SqliteStore,
) -> None:
    rig = Rig(store, burst=7, rate=1.0, max_backlog_s=10)
    sent: list[str] = []
    instance = 0
    for _ in range(30):  # 100 alerts a second for 30 s of the pacer's time
        for _ in range(100):
            instance += 1
            await announce_alert(rig.outbox, "HighCPU", f"web-{instance}")
        await rig.outbox.step()
        line = rig.pop_all(limit=1) if rig.output.next_delay() == 0 else []
        sent.extend(line)
        rig.mono.advance(1.0)
    sent.extend(await rig.deliver_all())
    lines = texts(sent, "#alerts")
    assert len(lines) < 40  # 3000 alerts in well under a line each
    named: set[str] = set()
    for text in lines:
        parsed = parse_summary(text)
        if parsed is None:
            named.add(text.split(" on ")[1].split(":")[0])
        else:
            for g in parsed.groups:
                assert g.more == 0
                named.update(g.names)
    assert named == {f"web-{i}" for i in range(1, 3001)}
    assert await store.outbox_count() == 0


async def test_a_summary_fits_the_line_with_its_delayed_marker(store: SqliteStore) -> None:
    rig = Rig(store, burst=1, rate=1.0, max_backlog_s=2, delayed_after_s=60)
    for i in range(200):
        await announce_alert(rig.outbox, "HighCPU", f"host-{i * 7}.eu-west-1.compute.internal")
    rig.wall.advance(600)
    lines = await rig.deliver_all()
    assert 0 < len(lines) <= 10
    prefix = len(b":mc!bot@example.org ")
    for line in lines:
        assert len(line.encode()) + prefix + 2 <= 512
        text = texts([line], "#alerts")[0]
        assert text.startswith("[delayed 10m] 200 alerts firing")
        assert parse_summary(text) is not None


# --------------------------------------------------------------------------- the feeder task


async def test_run_delivers_through_the_output_task_and_empties_the_store(
    store: SqliteStore,
) -> None:
    connected = asyncio.Event()
    output = OutputQueue(burst=50, rate=1000.0)
    outbox = Outbox(store, output, connected=connected)
    wire: list[str] = []

    async def send(line: str) -> None:
        wire.append(line)
        _, target, text = line.split(" ", 2)
        # the server's echo-message, here even before on_sent (as when a write waits to drain)
        outbox.echo(target, text.removeprefix(":"))

    async with asyncio.TaskGroup() as tg:
        feeder = tg.create_task(outbox.run())
        sender = tg.create_task(output.run(send))
        for i in range(30):
            await outbox.announce("#ops", f"news {i}")
        assert wire == []  # not connected yet
        connected.set()
        await wait_until(lambda: len(wire) == 30, 15)
        await wait_until(lambda: outbox.stats()["deleted"] == 30, 15)
        assert await store.outbox_count() == 0
        feeder.cancel()
        sender.cancel()
    assert texts(wire) == [f"news {i}" for i in range(30)]


# --------------------------------------------------------------------------- OutputQueue extensions


def test_on_sent_fires_after_the_last_line_of_a_message() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=10, rate=1.0, clock=clock)
    calls: list[str] = []
    q.privmsg("#ops", ["one", "two", "three"], on_sent=lambda line: calls.append("a " + line))
    q.privmsg("#ops", "four", on_sent=lambda line: calls.append("b " + line))
    q.pop()
    q.pop()
    assert calls == []
    q.pop()
    assert calls == ["a PRIVMSG #ops :three"]
    q.pop()
    assert calls == ["a PRIVMSG #ops :three", "b PRIVMSG #ops :four"]


async def test_on_sent_waits_for_a_successful_send() -> None:
    q = OutputQueue(burst=10, rate=1000.0)
    calls: list[int] = []
    stops: list[int] = []
    q.add_stop_hook(lambda: stops.append(1))
    q.privmsg("#ops", "hello", on_sent=lambda line: calls.append(1))

    async def broken(line: str) -> None:
        raise ConnectionError("gone")

    await q.run(broken)  # returns after putting the line back
    assert calls == [] and stops == [1]
    got: list[str] = []

    async def ok(line: str) -> None:
        got.append(line)

    task = asyncio.create_task(q.run(ok))
    await wait_until(lambda: calls == [1], 15)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert got == ["PRIVMSG #ops :hello"]
    assert stops == [1, 1]


def test_withdraw_takes_back_only_the_owners_lines() -> None:
    q = OutputQueue(burst=10, rate=1.0, clock=FakeClock())
    me, other = object(), object()
    calls: list[str] = []
    q.privmsg("#ops", ["a", "b"], owner=me, on_sent=calls.append)
    q.privmsg("#ops", "c", owner=other)
    q.privmsg("#ops", "d")
    q.notice("#ops", "e", owner=me, priority="help")
    assert q.withdraw(me) == 3
    assert q.withdraw(None) == 0
    assert [q.pop(), q.pop(), q.pop()] == ["PRIVMSG #ops :c", "PRIVMSG #ops :d", None]
    assert calls == []


def test_a_failing_callback_does_not_stop_the_queue(caplog: pytest.LogCaptureFixture) -> None:
    q = OutputQueue(burst=10, rate=1.0, clock=FakeClock())

    def boom(line: str) -> None:
        raise RuntimeError("bug")

    q.privmsg("#ops", "a", on_sent=boom)
    q.privmsg("#ops", "b")
    assert q.pop() == "PRIVMSG #ops :a"
    assert q.pop() == "PRIVMSG #ops :b"
    assert "on_sent callback" in caplog.text


def test_drain_time_and_text_budget() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=7, rate=2.0, clock=clock)
    assert q.drain_time() == 0.0
    assert q.drain_time(7) == 0.0
    assert q.drain_time(9) == 1.0  # two lines beyond the burst at 2/s
    for i in range(10):
        q.privmsg("#ops", f"line {i}")
    assert q.drain_time() == 1.5
    q.set_self("mc", "bot", "example.org")
    budget = q.text_budget("#ops")
    assert split_message(len("mc!bot@example.org"), "PRIVMSG", "#ops", "x" * budget) == [
        "x" * budget
    ]
    assert len(split_message(len("mc!bot@example.org"), "PRIVMSG", "#ops", "x" * (budget + 1))) == 2
    assert (q.rate, q.burst) == (2.0, 7)
