"""The Event's origin and its two ways to answer (``reply``, ``private``)."""

from __future__ import annotations

import threading

import pytest

from masterchief.bindings.event import (
    ConsoleSession,
    Event,
    IrcUser,
    LinkedBot,
    SourceOrigin,
)


class Said:
    """A Reply that remembers what went where."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def reply(self, event: Event, text: str) -> None:
        self.lines.append(("reply", text))

    def private(self, event: Event, text: str) -> None:
        self.lines.append(("private", text))


SESSION = ConsoleSession("partyline", "7", "alice")


@pytest.mark.parametrize(
    ("fields", "origin"),
    [
        # the IRC hot path's construction: flat fields, an IRC origin
        (
            {"nick": "alice", "uhost": "a@h", "account": "ali", "source": "irc"},
            IrcUser("alice", "a@h", "ali"),
        ),
        ({"nick": "alice"}, IrcUser("alice")),
        ({"peer": SESSION, "source": "partyline"}, SESSION),
        ({"peer": LinkedBot("hub", "bob")}, LinkedBot("hub", "bob")),
        ({"source": "webhook"}, SourceOrigin("webhook")),
        ({}, None),
    ],
)
def test_origin(fields: dict[str, object], origin: object) -> None:
    ev = Event(type="pub", key="!x", **fields)  # type: ignore[arg-type]
    assert ev.origin == origin


def test_scripts_read_the_irc_parts_flat() -> None:
    ev = Event(type="pub", key="!x", nick="alice", uhost="a@h", account="ali", channel="#ops")
    assert (ev.nick, ev.uhost, ev.account, ev.channel) == ("alice", "a@h", "ali", "#ops")
    assert ev.hostmask == "alice!a@h"


def test_a_console_event_has_no_irc_parts() -> None:
    ev = Event(type="msg", key="deploy", peer=SESSION)
    assert (ev.nick, ev.uhost, ev.account, ev.hostmask) == (None, None, None, None)


@pytest.mark.parametrize("flat", [{"nick": "alice"}, {"account": "ali"}, {"uhost": "a@h"}])
def test_an_event_has_one_origin(flat: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not both"):
        Event(type="msg", key="x", peer=SESSION, **flat)  # type: ignore[arg-type]


async def test_reply_and_private_go_through_the_events_sink() -> None:
    said = Said()
    ev = Event(type="msg", key="x", peer=SESSION, sink=said)
    await ev.reply("one")
    await ev.private("two")
    assert said.lines == [("reply", "one"), ("private", "two")]
    # falsy: a plain handler's ``return ev.private(...)`` does not stop later bindings
    assert not ev.private("three")


def test_no_sink_says_nothing() -> None:
    ev = Event(type="msg", key="x")
    assert not ev.reply("lost") and not ev.private("lost")


def test_ids_are_unique_and_ascend_across_threads() -> None:
    # The event log's unique index relies on both: unique (a duplicate row
    # would be skipped as already logged) and ascending within the process
    # (the index grows at one end; see bindings/event.py).
    ids: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(Event(type="pub", key="!ping").id for _ in range(5000))

    threads = [threading.Thread(target=make, args=(out,)) for out in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    every = [i for out in ids for i in out]
    assert len(set(every)) == len(every) == 20_000
    for out in ids:
        assert out == sorted(out)  # each thread saw them ascend
    later = Event(type="pub", key="!ping").id
    assert later > max(every)
    assert len({len(i) for i in [*every, later]}) == 1  # same width: text order is time order
