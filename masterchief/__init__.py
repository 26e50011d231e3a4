"""MasterChief: a ChatOps bot with Eggdrop's binding table.

Script writers need three names::

    from masterchief import bind, unbind, Event

``bind``/``unbind``/``binds`` act on the running bot's binding table.

A script's plain ``def`` handlers run in a worker thread (see the README),
so everything here may be called from one: ``say`` is handed to the bot's
event loop (in order), ``bind``/``unbind`` run there and return their result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from .bindings.event import Event
from .bindings.registry import Binding, BindingTable, Handler

__all__ = ["Event", "bind", "binds", "say", "unbind"]

T = TypeVar("T")

_table = BindingTable()
_say: Callable[[str, str], object] | None = None
_loop: asyncio.AbstractEventLoop | None = None  # the running bot's


def table() -> BindingTable:
    """The binding table that ``bind``/``unbind`` use (the running bot's)."""
    return _table


def set_table(new: BindingTable, say_fn: Callable[[str, str], object] | None = None) -> None:
    """Point the script API at a bot (called by the App, on its event loop)."""
    global _table, _say, _loop
    _table = new
    _say = say_fn
    try:
        _loop = asyncio.get_running_loop()
    except RuntimeError:  # built outside a loop (offline tools): calls run in place
        _loop = None


def _off_loop() -> asyncio.AbstractEventLoop | None:
    """The bot's loop when called from a thread without one (a plain
    handler's), else None: call in place."""
    loop = _loop
    if loop is None or not loop.is_running():
        return None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return loop
    return None


def _on_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, run on the bot's loop; waits for its result from a thread.

    The call keeps the caller's context (``call_soon_threadsafe`` copies it),
    so a binding made from a script's handler still belongs to that script."""
    loop = _off_loop()
    if loop is None:
        return fn(*args)
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)

    loop.call_soon_threadsafe(run)
    return done.result(timeout=30)


def bind(type: str, flags: str, mask: str, handler: Handler | None = None) -> Any:
    """Bind ``handler`` (or decorate it): ``@bind("pub", "-|-", "!ping")``."""
    if handler is None:
        return lambda fn: bind(type, flags, mask, fn)
    return _on_loop(_table.bind, type, flags, mask, handler)


def unbind(type: str, flags: str, mask: str, handler: Handler) -> bool:
    """Remove the binding made with exactly these arguments."""
    return _on_loop(_table.unbind, type, flags, mask, handler)


def binds(type: str | None = None) -> list[Binding]:
    """The bindings (optionally of one type) with their hit counts."""
    return _table.binds(type)


def say(target: str, text: str) -> None:
    """Send ``text`` to a channel or nick through the paced output queue.

    For handlers with no origin to reply to (time, cron, event bindings).
    ``text`` is one message: CR, LF and CRLF become a space and NUL is
    dropped, so it can never start another IRC command; only a text too long
    for one line is split. Call ``say`` once per line to send several.
    From a plain handler's thread the line is handed to the bot's event loop,
    after anything that handler said before.
    """
    say_fn = _say
    if say_fn is None:
        raise RuntimeError("say() needs a running bot")
    loop = _off_loop()
    if loop is None:
        say_fn(target, text)
        return
    try:
        loop.call_soon_threadsafe(say_fn, target, text)
    except RuntimeError:  # the loop has closed
        raise RuntimeError("say() needs a running bot") from None
