"""An in-process console transport for tests: a second transport beside IRC.

A session is logged in as a known handle (what the partyline or web console
would check with a password).  A line typed into it becomes an Event whose
origin is a ``ConsoleSession`` and whose ``Reply`` is this transport, so
``ev.reply``/``ev.private`` come back to the session; announcements for
``test:<session>`` targets come back through ``deliver`` (the outbox's road).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from masterchief.bindings.event import ConsoleSession, Event

NAME = "test"


@dataclass
class Session:
    origin: ConsoleSession
    transport: ConsoleTransport
    lines: list[tuple[str, str]] = field(default_factory=list)  # (how, text)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def target(self) -> str:
        return f"{NAME}:{self.origin.session}"

    def type(self, line: str) -> None:
        self.transport.typed(self, line)

    def add(self, how: str, text: str) -> None:
        self.lines.append((how, text))
        self.changed.set()

    async def wait_for(self, pred: Callable[[str, str], bool], timeout: float = 15.0) -> str:
        """The first line (``how``, ``text``) that ``pred`` accepts, waiting for it."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for how, text in self.lines[seen:]:
                    if pred(how, text):
                        return text
                seen = len(self.lines)
                self.changed.clear()
                await self.changed.wait()


class ConsoleTransport:
    """``Reply`` for its Events and ``Transport`` for ``test:`` targets."""

    name = NAME

    def __init__(self, submit: Callable[..., object], command_prefix: str = "!") -> None:
        self._submit = submit
        self._prefix = command_prefix
        self._ids = itertools.count(1)
        self.sessions: dict[str, Session] = {}
        self.connected = True

    def login(self, handle: str) -> Session:
        origin = ConsoleSession(NAME, f"s{next(self._ids)}", handle)
        session = self.sessions[origin.session] = Session(origin, self)
        return session

    def typed(self, session: Session, line: str) -> None:
        """A command (``!deploy svc dev``) becomes a ``msg`` Event, as a private
        message to the bot would: the same bindings answer it."""
        word, _, rest = line.strip().removeprefix(self._prefix).partition(" ")
        self._submit(
            Event(
                type="msg",
                key=word,
                text=rest.strip(),
                peer=session.origin,
                source=NAME,
                sink=self,
            )
        )

    def _session(self, event: Event) -> Session:
        assert isinstance(event.peer, ConsoleSession), event
        return self.sessions[event.peer.session]

    def reply(self, event: Event, text: str) -> None:
        self._session(event).add("reply", text)

    def private(self, event: Event, text: str) -> None:
        self._session(event).add("private", text)

    def deliver(self, name: str, text: str) -> int:
        self.sessions[name].add("announce", text)
        return 1
