"""The dispatcher's work in the lane: whole chains of plain handlers, single
calls, and the replies they send back to the event loop.

How this works
--------------
A chain whose handlers are all scripts' plain ones is one ``LaneChain``: a
lane thread walks it (``ChainHost.run_sync``, the dispatcher's one chain
walk) and the loop collects it when done.  One plain handler of a mixed
chain is one ``LaneCall``, awaited by its task through a future.  A handler
in the lane sees its Event with a ``Relay`` sink: each reply is handed to
the loop in order (``call_soon_threadsafe``), and dropped once the call was
abandoned at its timeout.

``LaneChain.seq`` is odd while a handler runs (one token per call).  The
lane's monitor calls ``check``; past the timeout the loop is told
(``ChainHost.overdue``) and, if that call still runs, abandons the job:
under the lane lock, so either the thread sees ``abandoned`` after the
call or the loop sees the call ended -- never both.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from .access import Principal
from .event import Event, Reply
from .lane import HandlerLane
from .registry import Binding, current_owner

__all__ = [
    "ABANDONED",
    "HANDLER_FAILED",
    "ChainHost",
    "DispatchStats",
    "Done",
    "LaneCall",
    "LaneChain",
    "LoopSink",
    "Relay",
    "Staged",
    "call_in_lane",
]

log = logging.getLogger("masterchief.dispatch")


# A chain's Events that matched, each with its bindings.
Staged = list[tuple[Event, tuple[Binding, ...]]]
Done = Callable[[], object] | None


class ChainHost(Protocol):
    """What a lane chain needs of the dispatcher that made it."""

    @property
    def lane(self) -> HandlerLane: ...

    @property
    def handler_timeout_s(self) -> float: ...

    def run_sync(self, staged: Staged, who: Principal | None, job: LaneChain | None = None) -> bool:
        """Walk the chain in this thread; False when the job was abandoned."""
        ...

    def fail(
        self,
        b: Binding,
        ev: Event,
        exc: BaseException | None,
        timed_out: bool,
        stats: DispatchStats | None = None,
    ) -> None:
        """Report a handler that raised or timed out."""
        ...

    def chain_done(self, job: LaneChain) -> None:
        """In the lane thread: the job walked its chain (the loop collects it)."""
        ...

    def overdue(self, job: LaneChain, token: int) -> None:
        """On the loop: the job's call ``token`` ran past the timeout."""
        ...


class Failed:
    """What ``_call`` returns for a handler that raised or timed out (falsy)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False


HANDLER_FAILED = Failed()


@dataclass(slots=True)
class DispatchStats:
    received: int = 0
    dropped: int = 0
    processed: int = 0
    fired: int = 0
    refused: int = 0
    errors: int = 0
    timeouts: int = 0

    def add(self, other: DispatchStats) -> None:
        """Count ``other``'s handler outcomes here (a lane chain's, on the loop)."""
        self.fired += other.fired
        self.refused += other.refused
        self.errors += other.errors
        self.timeouts += other.timeouts


class Abandoned:
    __slots__ = ()


ABANDONED = Abandoned()


class LoopSink:
    """Replies from a lane thread: each is handed to the loop in order
    (``call_soon_threadsafe``); once the call is abandoned they are dropped."""

    __slots__ = ("_loop", "open")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.open = True

    def wrap(self, inner: Reply) -> Relay:
        return Relay(self, inner)

    def send(self, say: Callable[[Event, str], None], event: Event, text: str) -> None:
        if not self.open:
            log.info(
                "dropped a reply to %s %s from a handler that timed out", event.type, event.key
            )
            return
        try:
            self._loop.call_soon_threadsafe(say, event, text)
        except RuntimeError:  # the loop has closed (the bot stopped)
            log.info("dropped a reply to %s %s: the bot has stopped", event.type, event.key)


class Relay:
    """The ``Reply`` an Event carries into a lane thread."""

    __slots__ = ("_inner", "_sink")

    def __init__(self, sink: LoopSink, inner: Reply) -> None:
        self._sink = sink
        self._inner = inner

    def reply(self, event: Event, text: str) -> None:
        self._sink.send(self._inner.reply, event, text)

    def private(self, event: Event, text: str) -> None:
        self._sink.send(self._inner.private, event, text)


class LaneCall:
    """One plain handler of a mixed chain, for the lane; awaited via ``future``."""

    __slots__ = ("args", "fn", "future", "label")

    def __init__(self, label: str, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.label = label
        self.fn = fn
        self.args = args
        self.future: Future[object] = Future()

    def start(self) -> bool:
        return self.future.set_running_or_notify_cancel()

    def run(self) -> None:
        try:
            result = self.fn(*self.args)
        except BaseException as exc:  # the awaiting task decides what it means
            if not self.future.done():
                self.future.set_exception(exc)
        else:
            if not self.future.done():
                self.future.set_result(result)

    def check(self, now: float) -> None:
        """Its timeout is the awaiting task's."""


class LaneChain:
    """A chain whose handlers are all scripts' plain ones, walked in a lane
    thread (see the module doc for ``seq``, ``check`` and ``abandon``)."""

    __slots__ = (
        "abandoned",
        "at",
        "binding",
        "context",
        "dispatcher",
        "event",
        "label",
        "loop",
        "on_done",
        "records",
        "seq",
        "since",
        "sink",
        "staged",
        "stats",
        "submitted",
        "threaded",
        "told",
        "who",
    )

    def __init__(
        self,
        dispatcher: ChainHost,
        loop: asyncio.AbstractEventLoop,
        staged: Staged,
        who: Principal | None,
        on_done: Done,
    ) -> None:
        sink = LoopSink(loop)
        threaded = [
            (ev if ev.sink is None else dataclasses.replace(ev, sink=sink.wrap(ev.sink)), bs)
            for ev, bs in staged
        ]
        self.dispatcher = dispatcher
        self.loop = loop
        self.staged = staged  # the Events as the loop's sinks see them (for a continuation)
        self.threaded = threaded  # the same, replying through ``sink``
        self.who = who
        self.on_done = on_done
        self.sink = sink
        self.stats = DispatchStats()
        self.records: list[tuple[Event, str]] = []
        self.label = f"{staged[0][0].type} {staged[0][0].key[:40]}"
        self.at: tuple[int, int, bool] = (0, 0, False)  # where a continuation starts
        self.binding: Binding | None = None
        self.event: Event | None = None
        self.seq = 0  # odd while a handler runs; 0 until the job starts
        self.since = 0.0
        self.submitted = time.monotonic()
        self.told = -1  # the last token the loop was told about
        self.abandoned = False
        # The submitting task's context: the script API's bot (``scriptapi``)
        # and anything else a handler reads from context variables.
        self.context = contextvars.copy_context()

    def start(self) -> bool:
        return not self.abandoned  # (lane lock held) expired while it waited

    def note(self, ev: Event, outcome: str) -> None:
        self.records.append((ev, outcome))

    def run(self) -> None:
        d = self.dispatcher
        try:
            finished = self.context.run(d.run_sync, self.threaded, self.who, self)
        except BaseException:  # defensive: the chain must still end (slot, on_done)
            log.exception("dispatcher failed on %s", self.label)
            with d.lane.lock:
                finished = not self.abandoned
                self.abandoned = True  # no timeout report after this
        if finished:
            d.chain_done(self)

    def call(self, b: Binding, ev: Event) -> object:
        """Run one handler in this thread; ``ABANDONED`` if it timed out."""
        self.binding, self.event = b, ev
        self.since = time.monotonic()
        self.seq += 1  # odd: running
        token = current_owner.set(b.owner)
        result: object = None
        failure: BaseException | None = None
        try:
            result = b.handler(ev)
        except BaseException as exc:  # in a thread even CancelledError is just a failure
            failure = exc
        finally:
            current_owner.reset(token)
        with self.dispatcher.lane.lock:
            if self.abandoned:
                return ABANDONED
            self.seq += 1
        if failure is not None:
            self.dispatcher.fail(b, ev, failure, False, self.stats)
            return HANDLER_FAILED
        return result

    def check(self, now: float) -> None:
        """From the lane's monitor (lane lock held): tell the loop once per
        call that has run past the timeout, or once if the job has waited that
        long without starting (token 0)."""
        seq = self.seq
        if seq & 1:
            since = self.since
        elif seq == 0:
            since = self.submitted
        else:
            return
        if seq != self.told and now - since >= self.dispatcher.handler_timeout_s:
            self.told = seq
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self.loop.call_soon_threadsafe(self.dispatcher.overdue, self, seq)

    def abandon(self, token: int) -> bool:
        """On the loop: give up on the call ``token`` if it is still running."""
        with self.dispatcher.lane.lock:
            if self.abandoned or self.seq != token:
                return False
            self.abandoned = True
            return True


async def call_in_lane(lane: HandlerLane, b: Binding, ev: Event, timeout_s: float) -> object:
    """Run one script plain handler of a mixed chain in the lane; its
    result, or raise.  At the timeout the call is abandoned: its later
    replies are dropped, a call still queued never starts, a running one
    is interrupted."""
    sink = LoopSink(asyncio.get_running_loop())
    if ev.sink is not None:
        ev = dataclasses.replace(ev, sink=sink.wrap(ev.sink))
    ctx = contextvars.copy_context()  # current_owner: its tasks and binds are the script's
    call = LaneCall(b.handler_name, ctx.run, (b.handler, ev))
    lane.submit(call)
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.wrap_future(call.future)
    except BaseException:
        sink.open = False
        if not call.future.cancel():
            lane.interrupt(call)
        raise
