"""Targets and transports: where a line goes, and what takes it there.

How this works.  A ``Target`` is a transport's name and a name within it,
written ``irc:#ops``, ``irc:alice``, ``test:s1``: the outbox stores that
text and the announcer, the deploy announcements and scripts speak it.  A
bare name (``#ops``, ``alice``: the configuration's channels, outbox rows
written before targets existed) is an IRC target.  A ``Transport`` is what
delivers lines to its own targets' names (the IRC one is
``irc/transport.py``); ``Transports`` finds it by ``Target.transport``, for
the outbox and for lines that need not be durable (deploy progress ticks).
Validation is here, once: a transport name is lower-case letters, digits
and dashes; a target name is one word, not starting with ``:``, that fits a
protocol line (no spaces or control characters, at most 200 bytes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["IRC", "Target", "Transport", "Transports"]

IRC = "irc"
_TRANSPORT = re.compile(r"[a-z][a-z0-9-]{0,31}")
_MAX_NAME_BYTES = 200  # leaves a line room for its text (the outbox's summaries too)


class Transport(Protocol):
    """Delivers lines to the names of its targets."""

    @property
    def name(self) -> str:
        """The transport's part of its targets (``irc``)."""
        ...

    @property
    def connected(self) -> bool:
        """Whether ``deliver`` reaches anyone now (the outbox waits while not)."""
        ...

    def deliver(self, name: str, text: str) -> int:
        """Send ``text`` (one message) to ``name``; how many lines it became."""
        ...


@dataclass(frozen=True, slots=True)
class Target:
    """Where a line goes: ``transport:name`` (see the module doc)."""

    transport: str
    name: str

    def __post_init__(self) -> None:
        if not _TRANSPORT.fullmatch(self.transport):
            raise ValueError(f"target transport {self.transport[:40]!r} is not a transport name")
        name = self.name
        bad = not name or name.startswith(":") or any(c <= " " or c == "\x7f" for c in name)
        if bad or len(name.encode("utf-8")) > _MAX_NAME_BYTES:
            raise ValueError(f"target {name[:80]!r} is not a channel, nick or session name")

    def __str__(self) -> str:
        return f"{self.transport}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> Target:
        """``irc:#ops`` -> irc, ``#ops``; a bare name is an IRC target.
        ``ValueError`` for a name no transport could take."""
        head, sep, rest = text.partition(":")
        if sep and _TRANSPORT.fullmatch(head):
            return cls(head, rest)
        return cls(IRC, text)

    @classmethod
    def irc(cls, name: str) -> Target:
        """The IRC channel or nick ``name``."""
        return cls(IRC, name)

    @property
    def is_irc(self) -> bool:
        return self.transport == IRC


class Transports:
    """The transports by name (see the module doc)."""

    def __init__(self, transports: Iterable[Transport] = ()) -> None:
        self._by_name = {t.name: t for t in transports}

    def add(self, transport: Transport) -> None:
        self._by_name[transport.name] = transport

    def get(self, name: str) -> Transport | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def deliver(self, target: Target, text: str) -> int:
        """Say ``text`` to ``target`` now, not durably; the lines it became
        (0: no transport of that name)."""
        transport = self._by_name.get(target.transport)
        return 0 if transport is None else transport.deliver(target.name, text)
