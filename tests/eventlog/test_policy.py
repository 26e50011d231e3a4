"""eventlog.policy: what is worth logging, how an Event becomes a row (redacted, capped) and back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from masterchief.bindings.event import Event
from masterchief.config.secrets import Redactor, Secret
from masterchief.eventlog.policy import ReplayError, rebuild, to_record, worth_logging


def ev(type_: str, key: str, **kw: Any) -> Event:
    return Event(type=type_, key=key, **kw)


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


def test_the_shared_encoder_survives_a_failed_row() -> None:
    # One JSON encoder serves every row (policy._dumps): a row it could not
    # encode leaves nothing behind for the next one.
    cyclic: list[object] = []
    cyclic.append(cyclic)
    red = Redactor()
    bad = to_record(ev("webhook", "x/y", payload=cyclic), "fired", redactor=red)
    good = to_record(ev("webhook", "x/y", payload={"a": [1, "é"]}), "fired", redactor=red)
    assert json.loads(bad.payload) == "<unserialisable dict>"
    assert json.loads(good.payload) == {"payload": {"a": [1, "é"]}}
