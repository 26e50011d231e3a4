"""eventlog.query: --since, listing with filters, the dry run (explain)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.config.secrets import Redactor
from masterchief.errors import UserError
from masterchief.eventlog.policy import to_record
from masterchief.eventlog.query import (
    explain,
    list_events,
    parse_since,
)
from masterchief.store.api import EventLogRecord
from masterchief.store.sqlite import SqliteStore
from tests.harness import Who

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
