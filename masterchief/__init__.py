"""MasterChief: a ChatOps bot with Eggdrop's binding table.

Script writers need three names::

    from masterchief import bind, unbind, Event

``bind``/``unbind``/``binds`` act on the running bot's binding table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .bindings.event import Event
from .bindings.registry import Binding, BindingTable, Handler

__all__ = ["Event", "bind", "binds", "say", "unbind"]

_table = BindingTable()
_say: Callable[[str, str], object] | None = None


def table() -> BindingTable:
    """The binding table that ``bind``/``unbind`` use (the running bot's)."""
    return _table


def set_table(new: BindingTable, say_fn: Callable[[str, str], object] | None = None) -> None:
    global _table, _say
    _table = new
    _say = say_fn


def bind(type: str, flags: str, mask: str, handler: Handler | None = None) -> Any:
    """Bind ``handler`` (or decorate it): ``@bind("pub", "-|-", "!ping")``."""
    return _table.bind(type, flags, mask, handler)


def unbind(type: str, flags: str, mask: str, handler: Handler) -> bool:
    """Remove the binding made with exactly these arguments."""
    return _table.unbind(type, flags, mask, handler)


def binds(type: str | None = None) -> list[Binding]:
    """The bindings (optionally of one type) with their hit counts."""
    return _table.binds(type)


def say(target: str, text: str) -> None:
    """Send ``text`` to a channel or nick through the paced output queue.

    For handlers with no origin to reply to (time, cron, event bindings).
    ``text`` is one message: CR, LF and CRLF become a space and NUL is
    dropped, so it can never start another IRC command; only a text too long
    for one line is split. Call ``say`` once per line to send several.
    """
    if _say is None:
        raise RuntimeError("say() needs a running bot")
    _say(target, text)
