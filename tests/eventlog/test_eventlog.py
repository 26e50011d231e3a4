"""The event log at work: group commit, overflow, retention, the dispatcher's recorder hook,
replays through the running bot (what is logged: test_policy.py; the CLI side: test_query.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.config.schema import EventsConfig
from masterchief.config.secrets import Redactor
from masterchief.errors import UserError
from masterchief.eventlog.policy import to_record
from masterchief.eventlog.query import (
    format_record,
    list_events,
    request_replays,
)
from masterchief.eventlog.writer import EventLog
from masterchief.sources.replay import ReplayWorker
from masterchief.store.api import EventLogRecord, StoreError
from masterchief.store.sqlite import SqliteStore
from tests.eventlog.test_policy import ev
from tests.harness import Who, wait_until

# --- the log: group commit, overflow, retention --------------------------------------


def events_config(**kw: Any) -> EventsConfig:
    return EventsConfig(**kw)


async def test_group_commit_of_many_events(store: SqliteStore) -> None:
    calls: list[int] = []
    append = store.event_log_append

    async def counting(records: Any) -> int:
        calls.append(len(records))
        return await append(records)

    store.event_log_append = counting  # type: ignore[method-assign]
    log_ = EventLog(store, events_config(), redactor=Redactor(), batch_rows=500)
    for i in range(1200):
        log_.record(ev("webhook", f"github/push{i}"), "fired")
    assert log_.buffered == 1200
    assert await log_.flush() == 1200
    assert calls == [500, 500, 200]  # one transaction per 500 rows
    assert await store.event_log_count() == 1200
    assert log_.buffered == 0
    assert log_.stats.written == 1200


async def test_run_flushes_in_the_background(store: SqliteStore) -> None:
    log_ = EventLog(store, events_config(), redactor=Redactor(), flush_interval_s=0.02)
    task = asyncio.create_task(log_.run())
    try:
        for i in range(30):
            log_.record(ev("rest", f"poll{i}"), "fired")
        await wait_until(lambda: log_.stats.written == 30, 15)
        assert await store.event_log_count() == 30
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_buffer_overflow_is_counted_and_reported(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    log_ = EventLog(store, events_config(), redactor=Redactor(), max_buffer=10)
    for i in range(15):
        log_.record(ev("webhook", f"a/{i}"), "fired")
    assert log_.buffered == 10
    assert log_.stats.dropped == 5
    assert log_.counters()["dropped"] == 5
    with caplog.at_level(logging.WARNING, logger="masterchief.eventlog"):
        assert await log_.flush() == 10
    assert "5 events not logged" in caplog.text
    rows = await list_events(store, limit=100)
    assert sorted(r.key for r in rows) == sorted(f"a/{i}" for i in range(10))


async def test_write_failure_keeps_rows_for_the_next_flush(store: SqliteStore) -> None:
    log_ = EventLog(store, events_config(), redactor=Redactor())
    append = store.event_log_append
    failures = [StoreError("disk I/O error")]

    async def flaky(records: Any) -> int:
        if failures:
            raise failures.pop()
        return await append(records)

    store.event_log_append = flaky  # type: ignore[method-assign]
    log_.record(ev("webhook", "a/b"), "fired")
    assert await log_.flush() == 0
    assert log_.buffered == 1
    assert log_.stats.write_errors == 1
    assert await log_.flush() == 1
    assert await store.event_log_count() == 1


async def test_disabled_log_records_nothing(store: SqliteStore) -> None:
    log_ = EventLog(store, events_config(enabled=False), redactor=Redactor())
    log_.record(ev("webhook", "a/b"), "fired")
    assert log_.buffered == 0


async def test_not_worth_logging_is_not_buffered(store: SqliteStore) -> None:
    log_ = EventLog(store, events_config(), redactor=Redactor())
    log_.record(ev("join", "#ops a!b@c"), "fired")
    log_.record(ev("pubm", "#ops hello"), "no-binding")
    assert log_.buffered == 0


async def test_retention_prunes_old_rows_at_start(store: SqliteStore) -> None:
    now = time.time()
    old = EventLogRecord("old1", now - 31 * 86400, "webhook", "a/b", "{}", "{}", "fired")
    young = EventLogRecord("young1", now - 29 * 86400, "webhook", "a/b", "{}", "{}", "fired")
    await store.event_log_append([old, young])
    await store.replay_enqueue(["old1"], requested_at=now - 40 * 86400)
    log_ = EventLog(store, events_config(retention_days=30), redactor=Redactor())
    task = asyncio.create_task(log_.run())
    try:
        await wait_until(lambda: log_.stats.pruned == 1, 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r.id for r in await list_events(store)] == ["young1"]
    # a pending request is kept (the CLI may still be waiting for it)
    assert len(await store.replay_pending()) == 1


async def test_retention_uses_the_configured_days(store: SqliteStore) -> None:
    now = 1_800_000_000.0
    recs = [
        EventLogRecord(f"e{d}", now - d * 86400 - 1, "rest", "p", "{}", "{}", "fired")
        for d in (1, 2, 3)
    ]
    await store.event_log_append(recs)
    log_ = EventLog(store, events_config(retention_days=2), redactor=Redactor(), clock=lambda: now)
    assert await log_.prune() == 2
    assert [r.id for r in await list_events(store)] == ["e1"]


# --- the dispatcher's recorder hook ---------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def reply(self, event: Event, text: str) -> None:
        self.lines.append(text)


def chanmsg(text: str, sink: Sink, nick: str = "bob") -> tuple[Event, Event]:
    word, _, rest = text.partition(" ")
    common: dict[str, Any] = dict(nick=nick, uhost=f"{nick}@h", channel="#ops", sink=sink)
    return (
        Event(type="pubm", key=f"#ops {text}", text=text, **common),
        Event(type="pub", key=word, text=rest, **common),
    )


@pytest.fixture
async def wired(store: SqliteStore) -> AsyncIterator[tuple[BindingTable, Dispatcher, EventLog]]:
    table = BindingTable()
    users = {"bob": Who("bob", "", {"#ops": "o"}), "eve": Who("eve", "v")}
    d = Dispatcher(table, resolver=lambda e: users.get(e.nick or ""), handler_timeout_s=0.5)
    log_ = EventLog(store, events_config(), redactor=Redactor())
    d.recorder = log_.record
    task = asyncio.create_task(d.run())
    yield table, d, log_
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_dispatcher_logs_fired_and_refused_commands_not_chat(
    store: SqliteStore, wired: tuple[BindingTable, Dispatcher, EventLog]
) -> None:
    table, d, log_ = wired
    sink = Sink()
    table.bind("pub", "-|-", "!ping", lambda e: e.reply("pong"))
    table.bind("pub", "o|o", "!deploy", lambda e: e.reply("deploying"))

    async def boom(e: Event) -> None:
        raise RuntimeError("handler bug")

    table.bind("pub", "-|-", "!boom", boom)
    ping = chanmsg("!ping now", sink, "eve")
    refused = chanmsg("!deploy web", sink, "eve")
    failed = chanmsg("!boom", sink, "eve")
    chat = chanmsg("hello there", sink, "eve")
    for chain in (ping, refused, failed, chat):
        d.submit(*chain)
    await d.drain()
    assert "pong" in sink.lines  # (the def handler answers from its thread: not first)
    await log_.flush()
    rows = {r.id: r for r in await list_events(store, limit=100)}
    assert set(rows) == {ping[1].id, refused[1].id, failed[1].id}
    assert rows[ping[1].id].outcome == "fired"
    assert rows[refused[1].id].outcome == "refused"
    assert rows[failed[1].id].outcome == "failed"
    assert json.loads(rows[ping[1].id].origin)["handle"] == "eve"
    assert json.loads(rows[ping[1].id].payload)["text"] == "now"


async def test_dispatcher_reports_every_event_of_a_chain(
    store: SqliteStore, wired: tuple[BindingTable, Dispatcher, EventLog]
) -> None:
    table, d, _ = wired
    seen: list[tuple[str, str]] = []
    d.recorder = lambda e, outcome: seen.append((e.type, outcome))
    table.bind("pubm", "-|-", "#ops *stop*", lambda e: True)  # true: skip the pub stage
    table.bind("pub", "-|-", "!stop", lambda e: None)
    sink = Sink()
    d.submit(*chanmsg("!stop here", sink))
    d.submit(*chanmsg("just chat", sink))
    d.submit(Event(type="webhook", key="nobody/listens"))
    await d.drain()
    # a chain is recorded when it finishes: the plain handlers' one (in the
    # handler lane) after the others, which had nothing to run
    assert seen == [
        ("pubm", "no-binding"),
        ("pub", "no-binding"),
        ("webhook", "no-binding"),
        ("pubm", "fired"),
        ("pub", "skipped"),
    ]


async def test_a_failing_recorder_does_not_stop_dispatch(
    wired: tuple[BindingTable, Dispatcher, EventLog],
) -> None:
    table, d, _ = wired
    got: list[str] = []

    def bad(_e: Event, _o: str) -> None:
        raise RuntimeError("recorder bug")

    d.recorder = bad
    table.bind("webhook", "-|-", "a/*", lambda e: got.append(e.key))
    d.submit(Event(type="webhook", key="a/1"))
    d.submit(Event(type="webhook", key="a/2"))
    await d.drain()
    assert got == ["a/1", "a/2"]


# --- replay -----------------------------------------------------------------------


REPLY_SINK = Sink()


@pytest.fixture
async def bot(
    store: SqliteStore, wired: tuple[BindingTable, Dispatcher, EventLog]
) -> AsyncIterator[tuple[BindingTable, Dispatcher, EventLog, ReplayWorker]]:
    table, d, log_ = wired
    worker = ReplayWorker(
        store,
        outcome=log_.replay_outcome,
        sink=REPLY_SINK,
        poll_s=0.02,
        wait_s=max(60.0, 4 * d.handler_timeout_s),
    )
    task = asyncio.create_task(worker.run(d, asyncio.Event()))
    yield table, d, log_, worker
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def request_state(store: SqliteStore, request_id: int) -> tuple[str, str | None]:
    (req,) = await store.replay_get([request_id])
    return req.state, req.result


async def test_replay_worker_redispatches_marked_and_logs_it(
    store: SqliteStore, bot: tuple[BindingTable, Dispatcher, EventLog, ReplayWorker]
) -> None:
    table, d, log_, _ = bot
    got: list[Event] = []

    async def on_push(e: Event) -> None:
        got.append(e)

    table.bind("webhook", "-|-", "github/push", on_push)
    original = Event(type="webhook", key="github/push", source="github", payload={"ref": "main"})
    d.submit(original)
    await d.drain()
    await log_.flush()
    (req_id,) = await store.replay_enqueue([original.id])
    await wait_until(lambda: len(got) == 2, 15)
    replayed = got[1]
    assert replayed.replay_of == original.id
    assert replayed.id != original.id
    assert replayed.payload == {"ref": "main"}
    assert replayed.source == "github"
    state: tuple[str, str | None] = ("", None)
    async with asyncio.timeout(5):
        while state[0] != "done":
            state = await request_state(store, req_id)
            await asyncio.sleep(0.01)
    assert state[1] == f"replayed as {replayed.id}: fired"
    await log_.flush()
    (row,) = await store.event_log_get([replayed.id])
    assert row.replay_of == original.id
    assert row.outcome == "fired"
    assert f"replay-of={original.id}" in format_record(row)


async def test_replayed_command_is_checked_against_current_flags(
    store: SqliteStore, bot: tuple[BindingTable, Dispatcher, EventLog, ReplayWorker]
) -> None:
    table, d, log_, _ = bot
    ran: list[Event] = []

    def deploy(e: Event) -> None:
        ran.append(e)
        e.reply(f"deploying {e.text}" + (" (replay)" if e.replay_of else ""))

    table.bind("pub", "o|o", "!deploy", deploy)
    sink = Sink()
    chain = chanmsg("!deploy web", sink, "bob")  # bob is +o on #ops
    d.submit(*chain)
    await d.drain()
    await log_.flush()
    await store.replay_enqueue([chain[1].id])
    await wait_until(lambda: len(ran) == 2, 15)
    assert ran[1].handle == "bob"
    assert ran[1].text == "web"
    assert ran[1].replay_of == chain[1].id
    assert sink.lines == ["deploying web"]
    assert REPLY_SINK.lines[-1] == "deploying web (replay)"  # the bot's sink: to #ops


async def test_replay_of_an_unknown_or_truncated_event_fails(
    store: SqliteStore, bot: tuple[BindingTable, Dispatcher, EventLog, ReplayWorker]
) -> None:
    big = to_record(
        Event(type="webhook", key="a/b", payload="x" * 5000),
        "fired",
        redactor=Redactor(),
        max_payload_bytes=1024,
    )
    await store.event_log_append([big])
    unknown, cut = await store.replay_enqueue(["nope", big.id])
    for rid, words in ((unknown, "not in the event log"), (cut, "truncated")):
        state: tuple[str, str | None] = ("", None)
        async with asyncio.timeout(5):
            while state[0] not in ("done", "failed"):
                state = await request_state(store, rid)
                await asyncio.sleep(0.01)
        assert state[0] == "failed"
        assert words in (state[1] or "")


async def test_request_replays_waits_for_the_bot(
    store: SqliteStore, bot: tuple[BindingTable, Dispatcher, EventLog, ReplayWorker]
) -> None:
    table, d, log_, _ = bot
    table.bind("rest", "-|-", "*", lambda e: None)
    e = Event(type="rest", key="rest/status", source="rest")
    d.submit(e)
    await d.drain()
    await log_.flush()
    (req,) = await request_replays(store, [e.id], timeout=5, poll_s=0.01)
    assert req.state == "done"
    assert (req.result or "").endswith(": fired")


async def test_request_replays_without_a_bot_cancels(store: SqliteStore) -> None:
    rec = to_record(Event(type="webhook", key="a/b"), "fired", redactor=Redactor())
    await store.event_log_append([rec])
    (req,) = await request_replays(store, [rec.id], timeout=0.05, poll_s=0.01)
    assert req.state == "cancelled"
    assert "no running bot" in (req.result or "")
    assert await store.replay_pending() == []  # a bot started later will not fire it
    assert await store.replay_claim(req.id) is False


async def test_request_replays_of_unknown_ids_queues_nothing(store: SqliteStore) -> None:
    with pytest.raises(UserError, match="not in the event log: nope"):
        await request_replays(store, ["nope"], timeout=1)
    assert await store.replay_pending() == []
