"""The Event: one frozen value for every input the bot sees.

Every source (IRC, the clock, later webhooks, files, streams) turns what
happened into an ``Event`` and hands it to the dispatcher.  Masks match
against ``key``; flags are checked against the user record found for the
origin (``nick``/``uhost``/``account``), whose handle the dispatcher fills in.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

__all__ = ["Done", "Event", "ReplySink", "new_ref"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


def new_ref() -> str:
    """A short reference id shown to users instead of exception text."""
    return secrets.token_hex(3)


class ReplySink(Protocol):
    """Where ``Event.reply`` sends text.  Enqueueing is synchronous; a sink
    that writes to IRC sends the text as one message (line breaks become
    spaces)."""

    def reply(self, event: Event, text: str) -> None: ...


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
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    sink: ReplySink | None = field(default=None, compare=False, repr=False)
    replay_of: str | None = None  # the id of the logged Event this one replays

    def __post_init__(self) -> None:
        if not self.type:
            raise ValueError("Event.type must not be empty")
        if not isinstance(self.tags, MappingProxyType):
            object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))

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
