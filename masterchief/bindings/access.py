"""Who may fire a binding, and what became of an Event: the words the
dispatcher, the event log and the CLI's dry run share.

How this works.  A ``Resolver`` turns an Event's origin into a ``Principal``
(the user record as far as flags are concerned) or None; ``permitted`` is
the one flag check.  The dispatcher tells its ``Recorder`` each processed
Event's outcome (``FIRED`` ... ``SKIPPED``).  These live apart from the
dispatcher so that what only needs the words (the event log, ``events
explain``) does not import the machinery that runs handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .event import Event
from .registry import Binding

__all__ = [
    "FAILED",
    "FIRED",
    "NO_BINDING",
    "REFUSED",
    "SKIPPED",
    "Principal",
    "Recorder",
    "Resolver",
    "permitted",
    "refusal",
]


class Principal(Protocol):
    """The user record an origin resolved to, as far as flags are concerned."""

    @property
    def handle(self) -> str: ...

    @property
    def restricted(self) -> str | None:
        """Why the match carries no privileges (None: it does) -- told to
        someone refused, so a record's flags that do not count are no mystery."""
        ...

    def global_flags(self) -> str: ...

    def channel_flags(self, channel: str) -> str: ...


Resolver = Callable[[Event], Principal | None]
Recorder = Callable[[Event, str], None]
"""Told each processed Event and its outcome; must be quick and must not block."""

FIRED = "fired"  # at least one handler ran (and none failed)
REFUSED = "refused"  # bindings matched, the flag check refused every one
FAILED = "failed"  # a handler raised or timed out
NO_BINDING = "no-binding"
SKIPPED = "skipped"  # an earlier stage's true return (or a user binding's) skipped it


def permitted(b: Binding, ev: Event, who: Principal | None) -> bool:
    """Whether ``who`` (None: no user record) passes ``b``'s flags for ``ev``."""
    if b.flags.anyone and who is None:
        return True
    glob = who.global_flags() if who is not None else ""
    chan = who.channel_flags(ev.channel) if who is not None and ev.channel else ""
    return b.flags.allows(glob, chan)


def refusal(b: Binding, ev: Event, who: Principal | None) -> str:
    """What someone refused by ``b``'s flags is told: what they need, and why
    their user record (if any) does not give it."""
    to = f"{ev.nick}: " if ev.nick and ev.channel else ""
    need = b.flags.describe(ev.channel)
    if b.flags.anyone:
        return f"{to}you may not use {ev.key}"
    if who is None:
        return f"{to}you need {need} for {ev.key} (no user record matches you)"
    if who.restricted is not None:
        return f"{to}you need {need} for {ev.key} (you matched {who.restricted})"
    return f"{to}you need {need} for {ev.key}"
