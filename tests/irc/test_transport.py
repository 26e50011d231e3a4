"""The IRC transport: where replies, private answers and delivered lines go."""

from __future__ import annotations

import asyncio

import pytest

from masterchief.bindings.event import Event
from masterchief.irc.pacer import OutputQueue
from masterchief.irc.transport import IrcTransport


def drain(q: OutputQueue) -> list[str]:
    lines = []
    while (line := q.pop()) is not None:
        lines.append(line)
    return lines


def irc_event(channel: str | None, nick: str | None = "alice") -> Event:
    return Event(type="pub" if channel else "msg", key="!x", nick=nick, channel=channel)


@pytest.mark.parametrize(
    ("channel", "notice", "expected"),
    [
        ("#ops", False, ["PRIVMSG #ops :here", "PRIVMSG alice :just you"]),
        (None, False, ["PRIVMSG alice :here", "PRIVMSG alice :just you"]),
        ("#ops", True, ["PRIVMSG #ops :here", "NOTICE alice :just you"]),
    ],
)
def test_reply_answers_where_it_came_from_private_only_the_sender(
    channel: str | None, notice: bool, expected: list[str]
) -> None:
    q = OutputQueue(burst=10)
    t = IrcTransport(q, private_notice=notice)
    ev = irc_event(channel)
    t.reply(ev, "here")
    t.private(ev, "just you")
    assert drain(q) == expected


def test_private_without_a_nick_answers_where_it_came_from() -> None:
    q = OutputQueue(burst=10)
    IrcTransport(q).private(irc_event("#ops", nick=None), "to the channel")
    assert drain(q) == ["PRIVMSG #ops :to the channel"]


def test_deliver_uses_the_alert_lane_ahead_of_replies() -> None:
    q = OutputQueue(burst=10)
    t = IrcTransport(q)
    t.reply(irc_event("#ops"), "a reply")
    assert t.deliver("#deploy", "an announcement") == 1
    assert drain(q) == ["PRIVMSG #deploy :an announcement", "PRIVMSG #ops :a reply"]


async def test_connected_follows_the_registration_event() -> None:
    registered = asyncio.Event()
    t = IrcTransport(OutputQueue(), registered)
    assert not t.connected
    registered.set()
    assert t.connected
