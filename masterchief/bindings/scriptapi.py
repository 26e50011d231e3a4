"""Which bot a script's ``bind``/``say`` talk to: a context variable, never a global.

How this works
--------------
``masterchief.bind``/``unbind``/``binds``/``say`` act on the ``ScriptApi``
of the current context: the binding table, the paced ``say`` and the event
loop of one running bot.  A runtime sets it once around everything it runs
(``using(api)`` in ``run``), so every task it starts -- the dispatcher, the
sources, a script's handlers and the tasks those start -- inherits it; a
plain handler in the lane runs in a copy of its chain's context, so it sees
it too, as does code a handler passes to ``asyncio.to_thread``.  The script
manager sets it while it imports a script (a ``bind`` at import time), also
when a rehash comes from a signal handler's context.

So two bots in one process (tests, a worker beside a speaker) never bind
into each other's table.  A thread a script starts itself does not inherit
context variables: ``say`` from there raises "needs a running bot" unless it
was started with ``contextvars.copy_context().run`` (or ``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from .registry import BindingTable

__all__ = ["ScriptApi", "current", "using"]

Say = Callable[[str, str], object]
Announce = Callable[[str, str], Coroutine[Any, Any, object]]


@dataclass(frozen=True, slots=True)
class ScriptApi:
    """One bot as scripts see it."""

    table: BindingTable
    say: Say | None = None
    announce: Announce | None = None  # durable, through the outbox
    loop: asyncio.AbstractEventLoop | None = None  # the bot's, for calls from threads


_current: contextvars.ContextVar[ScriptApi | None] = contextvars.ContextVar(
    "masterchief_script_api", default=None
)


def current() -> ScriptApi:
    """The current context's bot; RuntimeError when there is none."""
    api = _current.get()
    if api is None:
        raise RuntimeError(
            "the script API needs a running bot (call it from a script, a handler, "
            "or code they start with its context)"
        )
    return api


@contextlib.contextmanager
def using(api: ScriptApi) -> Iterator[ScriptApi]:
    """Make ``api`` the current bot for the duration (and for tasks started within)."""
    token = _current.set(api)
    try:
        yield api
    finally:
        _current.reset(token)
