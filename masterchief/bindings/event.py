"""The Event: one frozen value for every input the bot sees.

Every source (IRC, the clock, webhooks, files, a console session) turns
what happened into an ``Event`` and hands it to the dispatcher.  Masks
match against ``key``; flags are checked against the user record found for
the Event's ``origin`` (``identity/resolve.py``), whose handle the
dispatcher fills in.

How this works.  ``origin`` is one of a closed set of frozen values:
``IrcUser`` (nick, uhost, account), ``ConsoleSession`` (a partyline or web
console login, or a test transport), ``LinkedBot`` and ``SourceOrigin``
(nobody: a webhook, the clock).  An IRC user's parts stay flat on the
Event (``nick``/``uhost``/``account``, what scripts read, and what the IRC
hot path writes without building an object); every other peer is in
``peer``; ``origin`` puts them together on demand.  ``sink`` is the
transport's ``Reply``: ``ev.reply`` answers where the Event came from,
``ev.private`` only its sender (never a channel).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Awaitable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

__all__ = [
    "ConsoleSession",
    "Done",
    "Event",
    "IrcUser",
    "LinkedBot",
    "Origin",
    "Reply",
    "SourceOrigin",
    "new_ref",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})


# Event ids must be unique (the event log's key, ``replay_of``), not secret,
# and cheap: every IRC line makes one or two (bench/rtt.py).  They ascend:
# the process's start in ns since the epoch plus a counter (``next`` on a
# count is atomic: lane threads make Events too), then a random per-process
# tag, so two processes started in the same instant still differ.  Ascending
# ids grow the event log's unique index at one end, so a group commit
# dirties a few of its pages; with random ids each row dirtied its own 4 KB
# page, ~5 KB written to the WAL per logged ``!ping``.
_next_id = itertools.count(time.time_ns()).__next__
_ID_TAG = f"{secrets.randbits(16):04x}"


def _new_id() -> str:
    return f"{_next_id():016x}{_ID_TAG}"


def new_ref() -> str:
    """A short reference id shown to users instead of exception text."""
    return secrets.token_hex(3)


class Reply(Protocol):
    """Where ``Event.reply`` and ``Event.private`` send text: each transport
    (IRC, a console) provides one.  Enqueueing is synchronous; a sink that
    writes to IRC sends the text as one message (line breaks become spaces).
    """

    def reply(self, event: Event, text: str) -> None:
        """Answer where ``event`` came from (its channel, else its sender)."""

    def private(self, event: Event, text: str) -> None:
        """Answer only ``event``'s sender (long or personal replies)."""


@dataclass(frozen=True, slots=True)
class IrcUser:
    """Someone on IRC: what the user table matches by account or hostmask."""

    nick: str
    uhost: str | None = None  # ``user@host``
    account: str | None = None  # services account, when the network says


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A logged-in console session: the partyline, the web console, a test
    transport.  The transport checked the password: ``handle`` is the user."""

    transport: str  # "partyline", "web", "test"
    session: str  # the transport's id for this session
    handle: str


@dataclass(frozen=True, slots=True)
class LinkedBot:
    """A bot linked to us (Eggdrop's botnet), and the user on it, if any."""

    bot: str  # the linked bot's handle
    user: str | None = None  # ``nick`` of the remote user who typed it


@dataclass(frozen=True, slots=True)
class SourceOrigin:
    """Nobody: a source (``webhook``, ``clock``, ``deploy`` ...) said it."""

    name: str


Origin = IrcUser | ConsoleSession | LinkedBot | SourceOrigin


class Done:
    """An already-finished awaitable.

    ``ev.reply()`` queues the text at once and returns this, so both
    ``await ev.reply(...)`` in async handlers and a bare ``ev.reply(...)`` in
    plain ``def`` handlers work.
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        # ``return ev.reply(...)`` from a plain handler must not count as the
        # "true" return that stops later bindings.
        return False

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_DONE = Done()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened, as the binding table sees it."""

    type: str
    key: str
    nick: str | None = None
    uhost: str | None = None
    account: str | None = None
    handle: str | None = None
    channel: str | None = None
    text: str = ""
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    payload: Any = None
    source: str | None = None
    # A peer other than an IRC user (who is ``nick``/``uhost``/``account``).
    peer: ConsoleSession | LinkedBot | None = None
    id: str = field(default_factory=_new_id)
    sink: Reply | None = field(default=None, compare=False, repr=False)
    replay_of: str | None = None  # the id of the logged Event this one replays

    def __post_init__(self) -> None:
        if not self.type:
            raise ValueError("Event.type must not be empty")
        if not isinstance(self.tags, MappingProxyType):
            object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))
        if self.peer is not None and (self.nick or self.uhost or self.account) is not None:
            raise ValueError("an Event comes from an IRC user (nick) or a peer, not both")

    @property
    def origin(self) -> Origin | None:
        """Who or what this came from (None: nothing says)."""
        if self.peer is not None:
            return self.peer
        if self.nick is not None:
            return IrcUser(self.nick, self.uhost, self.account)
        if self.source is not None:
            return SourceOrigin(self.source)
        return None

    @property
    def args(self) -> list[str]:
        return self.text.split()

    @property
    def hostmask(self) -> str | None:
        """``nick!user@host`` when both parts are known."""
        if self.nick is None or self.uhost is None:
            return None
        return f"{self.nick}!{self.uhost}"

    def reply(self, text: str) -> Awaitable[None]:
        """Answer where the event came from (the channel, or the nick in private).

        *text* is one message: CR, LF and CRLF in it become a space and NUL
        is dropped on the way out, so it can never start a second IRC line
        (``"x\\r\\nQUIT :bye"`` is said as ``x QUIT :bye``); only a text
        too long for one line is split. Call ``reply`` once per line to say
        several.
        """
        if self.sink is not None:
            self.sink.reply(self, text)
        return _DONE

    def private(self, text: str) -> Awaitable[None]:
        """Answer only the sender, never in a channel (on IRC by PRIVMSG, or
        NOTICE with ``bot.private_replies: notice``; a console: its session).
        For long listings and anything personal.  Awaitable like ``reply``."""
        if self.sink is not None:
            self.sink.private(self, text)
        return _DONE
