"""Run a coroutine up to its first wait, now, and go on later only if it waits.

How this works.  ``first_step(coro)`` sends the first ``None`` into the
coroutine at once.  Most handlers on the hot path never wait (a reply is
queued synchronously), so they finish right there: ``(True, value)``, with
no task, timer or timeout made for them.  One that waits gives ``(False,
awaitable)``: awaiting it drives the same coroutine on from where it
stopped, passing through whatever the awaiting task sends or throws into it
(cancellation included), so the caller can put it in a task or under a
timeout only then.  An exception raised by the first step propagates.
Python 3.12's eager tasks do this for tasks; this is the 3.11 form.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, Literal, TypeVar

__all__ = ["first_step"]

T = TypeVar("T")


def first_step(
    coro: Coroutine[Any, Any, T],
) -> tuple[Literal[True], T] | tuple[Literal[False], Awaitable[T]]:
    """``(True, result)`` if ``coro`` finished without waiting, else
    ``(False, awaitable)`` that continues it (see the module doc)."""
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _finish(coro, pending)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], pending: Any) -> Generator[Any, Any, T]:
    while True:
        try:
            value = yield pending
        except BaseException as exc:  # cancellation too: the coroutine decides
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                pending = coro.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


async def _finish(coro: Coroutine[Any, Any, T], pending: Any) -> T:
    return await _resume(coro, pending)
