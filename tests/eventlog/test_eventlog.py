"""The event log: what is logged, how it is stored, group commit, retention, replay."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.config.schema import EventsConfig
from masterchief.config.secrets import Redactor, Secret
from masterchief.errors import UserError
from masterchief.eventlog.policy import ReplayError, rebuild, to_record, worth_logging
from masterchief.eventlog.query import (
    explain,
    format_record,
    list_events,
    parse_since,
    request_replays,
)
from masterchief.eventlog.writer import EventLog
from masterchief.sources.replay import ReplayWorker
from masterchief.store.api import EventLogRecord, StoreError
from masterchief.store.sqlite import SqliteStore
from tests.harness import Who, wait_until


def ev(type_: str, key: str, **kw: Any) -> Event:
    return Event(type=type_, key=key, **kw)


# --- what is worth logging -----------------------------------------------------------

CASES = [
    # (type, key, outcome, replay_of, logged)
    ("pub", "!deploy", "fired", None, True),
    ("pub", "!deploy", "refused", None, True),
    ("pub", "!deploy", "failed", None, True),
    ("pub", "!nothing", "no-binding", None, False),
    ("pub", "!deploy", "skipped", None, False),
    ("msg", "status", "fired", None, True),
    ("dcc", "who", "fired", None, True),
    ("pubm", "#ops hello there", "no-binding", None, False),
    ("pubm", "#ops deploy now", "fired", None, True),
    ("msgm", "hello", "fired", None, True),
    ("notc", "hi", "no-binding", None, False),
    ("webhook", "github/push", "fired", None, True),
    ("webhook", "github/push", "no-binding", None, True),
    ("rest", "status", "fired", None, True),
    ("file", "/data/x.json", "fired", None, True),
    ("log", "/var/log/app.log ERROR", "fired", None, True),
    ("stream", "kafka:deploys", "no-binding", None, True),
    ("db", "orders", "fired", None, True),
    ("metric", "prometheus:cpu>80", "fired", None, True),
    ("event", "deploy.finished", "no-binding", None, True),
    ("event", "deploy.started", "fired", None, True),
    ("event", "deploy.progress", "fired", None, False),
    ("event", "rehash", "no-binding", None, True),
    ("event", "irc.connected", "fired", None, False),
    ("evnt", "rehash", "fired", None, False),
    ("raw", "PRIVMSG", "fired", None, False),
    ("join", "#ops bob!b@h", "fired", None, False),
    ("part", "#ops bob!b@h", "fired", None, False),
    ("sign", "#ops bob!b@h", "fired", None, False),
    ("nick", "#ops bob", "fired", None, False),
    ("mode", "#ops +o bob", "fired", None, False),
    ("ctcp", "VERSION", "fired", None, False),
    ("time", "00 12 27 11 2026", "fired", None, False),
    ("cron", "00 12 27 11 2026", "fired", None, False),
    ("join", "#ops bob!b@h", "refused", None, True),  # refusals always
    ("pubm", "#ops hello", "refused", None, True),
    ("pubm", "#ops hello", "no-binding", "abc123", True),  # replays always
]


@pytest.mark.parametrize(("type_", "key", "outcome", "replay_of", "logged"), CASES)
def test_worth_logging(
    type_: str, key: str, outcome: str, replay_of: str | None, logged: bool
) -> None:
    assert worth_logging(ev(type_, key, replay_of=replay_of), outcome) is logged


# --- serialisation -----------------------------------------------------------------


def test_record_fields_origin_and_payload() -> None:
    when = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    e = ev(
        "pub",
        "!deploy",
        nick="bob",
        uhost="b@h",
        account="bobacct",
        handle="bob",
        channel="#ops",
        text="web prod",
        tags={"msgid": "x1"},
        time=when,
        source="irc",
    )
    rec = to_record(e, "fired", redactor=Redactor())
    assert (rec.id, rec.type, rec.key, rec.outcome, rec.replay_of) == (
        e.id,
        "pub",
        "!deploy",
        "fired",
        None,
    )
    assert rec.time == when.timestamp()
    assert json.loads(rec.origin) == {
        "nick": "bob",
        "uhost": "b@h",
        "account": "bobacct",
        "handle": "bob",
        "channel": "#ops",
        "source": "irc",
    }
    assert json.loads(rec.payload) == {"payload": None, "text": "web prod", "tags": {"msgid": "x1"}}


def test_registered_secret_and_secret_objects_are_stars() -> None:
    red = Redactor()
    red.register("hunter2-token")
    red.register('we"ird\\pass')  # looks different inside JSON text
    payload = {
        "token": "hunter2-token",
        "nested": ["x", {"auth": "Bearer hunter2-token"}],
        "obj": Secret("not-registered-but-a-Secret"),
        "odd": 'we"ird\\pass',
    }
    rec = to_record(ev("webhook", "github/push", payload=payload), "fired", redactor=red)
    assert "hunter2" not in rec.payload
    assert "not-registered" not in rec.payload
    assert "ird" not in rec.payload
    stored = json.loads(rec.payload)["payload"]
    assert stored == {
        "token": "***",
        "nested": ["x", {"auth": "Bearer ***"}],
        "obj": "***",
        "odd": "***",
    }


def test_secret_in_key_and_origin_is_redacted() -> None:
    red = Redactor()
    red.register("s3cr3t-value")
    e = ev("file", "/in/s3cr3t-value.json", nick="s3cr3t-value", source="files")
    rec = to_record(e, "fired", redactor=red)
    assert "s3cr3t" not in rec.key + rec.origin
    assert rec.key == "/in/***.json"


def test_iterators_are_described_not_consumed() -> None:
    rows = iter([["a", "b"], ["c", "d"]])
    gen_ran: list[int] = []

    def gen() -> Iterator[int]:
        gen_ran.append(1)
        yield 1

    payload = {
        "content": rows,
        "gen": gen(),
        "when": datetime(2026, 1, 2, tzinfo=UTC),
        "path": Path("/x"),
        "raw": b"\x00\x01",
        "tags": {"b", "a"},
    }
    rec = to_record(ev("file", "/x", payload=payload), "fired", redactor=Redactor())
    stored = json.loads(rec.payload)["payload"]
    assert stored["content"] == "<list_iterator: not recorded>"
    assert stored["gen"] == "<generator: not recorded>"
    assert stored["when"] == "2026-01-02T00:00:00+00:00"
    assert stored["path"] == "/x"
    assert stored["raw"] == "<2 bytes>"
    assert sorted(stored["tags"]) == ["a", "b"]
    assert next(rows) == ["a", "b"]  # the handler still gets every row
    assert gen_ran == []


def test_unserialisable_payload_becomes_a_description() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    rec = to_record(ev("webhook", "x/y", payload=cyclic), "fired", redactor=Redactor())
    assert json.loads(rec.payload) == "<unserialisable dict>"


def test_truncation_is_marked_and_within_the_cap() -> None:
    payload = {"blob": "é" * 50_000, "more": list(range(5000))}
    rec = to_record(
        ev("webhook", "big/one", payload=payload),
        "fired",
        redactor=Redactor(),
        max_payload_bytes=4096,
    )
    assert len(rec.payload.encode()) <= 4096
    doc = json.loads(rec.payload)
    assert doc["truncated"] is True
    assert doc["bytes"] > 100_000
    assert doc["head"].startswith('{"payload":{"blob":"éé')
    with pytest.raises(ReplayError, match="truncated"):
        rebuild(rec)
    assert rebuild(rec, allow_truncated=True).payload is None


def test_rebuild_round_trip_marks_replay() -> None:
    e = ev(
        "pub",
        "!deploy",
        nick="bob",
        uhost="b@h",
        handle="bob",
        channel="#ops",
        text="web prod",
        payload={"k": [1, 2]},
    )
    back = rebuild(to_record(e, "fired", redactor=Redactor()))
    assert back.replay_of == e.id
    assert back.id != e.id
    assert back.handle is None  # resolved again by the dispatcher
    assert (back.type, back.key, back.nick, back.uhost, back.channel, back.text) == (
        "pub",
        "!deploy",
        "bob",
        "b@h",
        "#ops",
        "web prod",
    )
    assert back.payload == {"k": [1, 2]}


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


# --- the CLI's helpers ------------------------------------------------------------


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", NOW - timedelta(hours=1)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2d", NOW - timedelta(days=2)),
        ("90s", NOW - timedelta(seconds=90)),
        ("1w", NOW - timedelta(weeks=1)),
        ("2026-11-01T10:00", datetime(2026, 11, 1, 10, 0, tzinfo=UTC)),
        ("2026-11-01T10:00:00+02:00", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected.timestamp()


def test_parse_since_rejects_nonsense() -> None:
    with pytest.raises(UserError, match="--since 'yesterday'"):
        parse_since("yesterday", NOW)


async def test_list_filters_type_since_and_key(store: SqliteStore) -> None:
    now = time.time()
    recs = [
        EventLogRecord("w1", now - 60, "webhook", "github/push", "{}", "{}", "fired"),
        EventLogRecord("w2", now - 30, "webhook", "gitlab/push", "{}", "{}", "fired"),
        EventLogRecord("w3", now - 7200, "webhook", "github/push", "{}", "{}", "fired"),
        EventLogRecord("p1", now - 10, "pub", "!deploy", "{}", "{}", "fired"),
    ]
    await store.event_log_append(recs)
    assert [r.id for r in await list_events(store)] == ["p1", "w3", "w2", "w1"]
    assert [r.id for r in await list_events(store, types=["webhook"], since=now - 3600)] == [
        "w2",
        "w1",
    ]
    assert [r.id for r in await list_events(store, key_mask="GITHUB/*")] == ["w3", "w1"]
    assert [r.id for r in await list_events(store, limit=1)] == ["p1"]


def test_explain_lists_firing_and_refused_bindings() -> None:
    table = BindingTable()

    def on_push(e: Event) -> None: ...

    def deploy(e: Event) -> None: ...

    table.bind("webhook", "-|-", "github/*", on_push, owner="script:hooks")
    table.bind("pub", "n|-", "!deploy", deploy, owner="script:ops")
    hook = to_record(Event(type="webhook", key="github/push"), "fired", redactor=Redactor())
    cmd = to_record(
        Event(type="pub", key="!deploy", nick="eve", uhost="e@h", channel="#ops"),
        "fired",
        redactor=Redactor(),
    )
    chat = to_record(Event(type="pubm", key="#ops hi"), "fired", redactor=Redactor())
    users = {"eve": Who("eve", "o")}

    def resolve(e: Event) -> Who | None:
        return users.get(e.nick or "")

    hook_lines = explain(hook, table.snapshot, resolve)
    assert hook_lines[0].endswith(f"{hook.id}  webhook  github/push")
    assert hook_lines[1] == (
        "  would fire: webhook -|- github/* -> "
        f"{__name__}.test_explain_lists_firing_and_refused_bindings.<locals>.on_push"
        " [script:hooks]"
    )
    cmd_lines = explain(cmd, table.snapshot, resolve)
    assert cmd_lines[1].startswith(
        "  would be refused (user eve; needs global +n): pub n|- !deploy"
    )
    assert explain(chat, table.snapshot, resolve)[1:] == ["  no binding would fire"]
