"""MasterChief: a ChatOps bot with Eggdrop's binding table.

Script writers need three names::

    from masterchief import bind, unbind, Event

``bind``/``unbind``/``binds`` act on the running bot's binding table.
"""

from __future__ import annotations

from typing import Any

from .bindings.event import Event
from .bindings.registry import Binding, BindingTable, Handler

__all__ = ["Event", "bind", "binds", "unbind"]

_table = BindingTable()


def table() -> BindingTable:
    """The binding table that ``bind``/``unbind`` use (the running bot's)."""
    return _table


def set_table(new: BindingTable) -> None:
    global _table
    _table = new


def bind(type: str, flags: str, mask: str, handler: Handler | None = None) -> Any:
    """Bind ``handler`` (or decorate it): ``@bind("pub", "-|-", "!ping")``."""
    return _table.bind(type, flags, mask, handler)


def unbind(type: str, flags: str, mask: str, handler: Handler) -> bool:
    """Remove the binding made with exactly these arguments."""
    return _table.unbind(type, flags, mask, handler)


def binds(type: str | None = None) -> list[Binding]:
    """The bindings (optionally of one type) with their hit counts."""
    return _table.binds(type)
