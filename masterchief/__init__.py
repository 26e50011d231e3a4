"""MasterChief: a ChatOps bot with Eggdrop's binding table.

Script writers need three names::

    from masterchief import bind, unbind, Event

``bind``/``unbind``/``binds``/``say`` act on the bot that runs the script
(``bindings/scriptapi.py``: a context variable each bot sets, so two bots in
one process never touch each other's bindings).

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
from .bindings.registry import Binding, Handler
from .bindings.scriptapi import current

__all__ = ["Event", "announce", "bind", "binds", "say", "unbind"]

T = TypeVar("T")


def _off_loop(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop | None:
    """The bot's loop when called from a thread without one (a plain
    handler's), else None: call in place."""
    if loop is None or not loop.is_running():
        return None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return loop
    return None


def _on_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, run on the bot's loop; waits for its result from a thread.

    The call keeps the caller's context (``call_soon_threadsafe`` copies it),
    so a binding made from a script's handler still belongs to that script."""
    target = _off_loop(loop)
    if target is None:
        return fn(*args)
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)

    target.call_soon_threadsafe(run)
    return done.result(timeout=30)


def bind(type: str, flags: str, mask: str, handler: Handler | None = None) -> Any:
    """Bind ``handler`` (or decorate it): ``@bind("pub", "-|-", "!ping")``."""
    if handler is None:
        return lambda fn: bind(type, flags, mask, fn)
    api = current()
    return _on_loop(api.loop, api.table.bind, type, flags, mask, handler)


def unbind(type: str, flags: str, mask: str, handler: Handler) -> bool:
    """Remove the binding made with exactly these arguments."""
    api = current()
    return _on_loop(api.loop, api.table.unbind, type, flags, mask, handler)


def binds(type: str | None = None) -> list[Binding]:
    """The bindings (optionally of one type) with their hit counts."""
    return current().table.binds(type)


def say(target: str, text: str) -> None:
    """Send ``text`` to a channel or nick through the paced output queue.

    For handlers with no origin to reply to (time, cron, event bindings).
    ``text`` is one message: CR, LF and CRLF become a space and NUL is
    dropped, so it can never start another IRC command; only a text too long
    for one line is split. Call ``say`` once per line to send several.
    From a plain handler's thread the line is handed to the bot's event loop,
    after anything that handler said before.
    """
    api = current()
    if api.say is None:
        raise RuntimeError("say() needs a running bot")
    loop = _off_loop(api.loop)
    if loop is None:
        api.say(target, text)
        return
    try:
        loop.call_soon_threadsafe(api.say, target, text)
    except RuntimeError:  # the loop has closed
        raise RuntimeError("say() needs a running bot") from None


def announce(target: str, text: str) -> Any:
    """Announce ``text`` to a channel through the durable outbox: kept in the
    store until IRC has it (across a disconnect or a restart), in order with
    the bot's other announcements -- unlike ``say``, which is paced but not
    stored.  On the loop it returns an awaitable (awaiting it waits for the
    store write); from a plain handler's thread it returns once stored."""
    api = current()
    if api.announce is None:
        raise RuntimeError("announce() needs a running bot")
    loop = _off_loop(api.loop)
    if loop is None:
        return asyncio.ensure_future(api.announce(target, text))
    return asyncio.run_coroutine_threadsafe(api.announce(target, text), loop).result(timeout=30)
