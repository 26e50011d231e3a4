"""The dispatcher: one bounded queue, one matching step, isolated handlers.

How this works
--------------
Sources put *chains* of Events on one bounded queue: usually one Event, but
a channel message is the chain ``(pubm, pub)`` — pubm bindings run first and
if any returns a true value, the pub stage is skipped (Eggdrop's rule).

A true return value also skips the built-in bindings of the same stage (a
script's ``ctcp VERSION`` handler returning True suppresses the default
reply, as in Eggdrop).

A single worker takes a chain, finds the user record for its origin (once),
and matches each stage against the current immutable ``Snapshot``.  Flags are
checked per binding; a refused *command* (pub, msg, dcc) is answered with a
short reason, logged and counted, other refused types are skipped silently.

When every matched handler is a plain function the chain runs inline — no
task per event, which is what keeps the hot path fast.  Otherwise the chain
runs in its own task, tracked in ``self._tasks`` and limited by
``max_inflight``; each async handler runs under ``handler_timeout_s``.  A
handler that raises or times out is logged with a reference id, and the user
sees only ``!cmd failed (ref 1a2b3c)``.  Nothing a handler does (raise,
``sys.exit()``, hang) stops the worker.

An optional ``recorder`` (the event log) is told each Event's outcome once
it has been processed: ``fired``, ``refused``, ``failed``, ``no-binding``
or ``skipped`` (a true return of an earlier stage).  With no recorder the
hot path pays one ``is not None`` test per stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .event import Event, new_ref
from .registry import BIND_TYPES, Binding, BindingTable, current_owner

__all__ = [
    "FAILED",
    "FIRED",
    "NO_BINDING",
    "REFUSED",
    "SKIPPED",
    "DispatchStats",
    "Dispatcher",
    "Principal",
    "Recorder",
    "Resolver",
    "permitted",
]

log = logging.getLogger("masterchief.dispatch")


class Principal(Protocol):
    """The user record an origin resolved to, as far as flags are concerned."""

    @property
    def handle(self) -> str: ...

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


def _nobody(_ev: Event) -> Principal | None:
    return None


def permitted(b: Binding, ev: Event, who: Principal | None) -> bool:
    """Whether ``who`` (None: no user record) passes ``b``'s flags for ``ev``."""
    if b.flags.anyone and who is None:
        return True
    glob = who.global_flags() if who is not None else ""
    chan = who.channel_flags(ev.channel) if who is not None and ev.channel else ""
    return b.flags.allows(glob, chan)


def _outcome(fired: int, refused: int, failed: int) -> str:
    if failed:
        return FAILED
    if fired:
        return FIRED
    return REFUSED if refused else SKIPPED


class _Failed:
    """What ``_call`` returns for a handler that raised or timed out (falsy)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False


_FAILED = _Failed()


@dataclass(slots=True)
class DispatchStats:
    received: int = 0
    dropped: int = 0
    processed: int = 0
    fired: int = 0
    refused: int = 0
    errors: int = 0
    timeouts: int = 0


Chain = tuple[Event, ...]
Done = Callable[[], object] | None
_Item = tuple[Chain, Done]


class Dispatcher:
    def __init__(
        self,
        table: BindingTable,
        *,
        resolver: Resolver = _nobody,
        handler_timeout_s: float = 30.0,
        queue_size: int = 10_000,
        max_inflight: int = 1_000,
    ) -> None:
        self.table = table
        self.resolver = resolver
        self.handler_timeout_s = handler_timeout_s
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(queue_size)
        self.stats = DispatchStats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_inflight)
        self._pending = 0  # chains queued or running
        self._idle = asyncio.Event()
        self._idle.set()
        self.recorder: Recorder | None = None

    # -- intake --------------------------------------------------------------

    def submit(self, *chain: Event, on_done: Done = None) -> bool:
        """Queue a chain without waiting; False (and counted) when the queue is full.

        ``on_done`` is called once every handler of the chain has finished
        (durable sources mark their record dispatched there)."""
        self.stats.received += 1
        try:
            self.queue.put_nowait((chain, on_done))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.warning("dispatch queue full: dropped %s %s", chain[0].type, chain[0].key)
            return False
        self._begin()
        return True

    async def put(self, *chain: Event, on_done: Done = None) -> None:
        """Queue a chain, waiting for room (backpressure for sources that can wait)."""
        self.stats.received += 1
        await self.queue.put((chain, on_done))
        self._begin()

    def _begin(self) -> None:
        self._pending += 1
        self._idle.clear()

    def _end(self) -> None:
        self._pending -= 1
        if self._pending <= 0:
            self._pending = 0
            self._idle.set()

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued chain has finished (tests, shutdown)."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    # -- the worker ----------------------------------------------------------

    async def run(self) -> None:
        """Process chains until cancelled; on cancel, cancel running handlers."""
        try:
            while True:
                chain, on_done = await self.queue.get()
                spawned = False
                try:
                    spawned = await self._process(chain, on_done)
                except Exception:  # defensive: a bug here must not stop the bot
                    log.exception("dispatcher failed on %s %s", chain[0].type, chain[0].key)
                if not spawned:
                    self._finish(on_done)
                    self._end()
        finally:
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    def _finish(on_done: Done) -> None:
        if on_done is not None:
            try:
                on_done()
            except Exception:
                log.exception("on_done callback failed")

    async def _process(self, chain: Chain, on_done: Done = None) -> bool:
        """Run or start one chain; True when it continues in a task."""
        self.stats.processed += 1
        snap = self.table.snapshot
        rec = self.recorder
        staged: list[tuple[Event, tuple[Binding, ...]]] = []
        for ev in chain:
            found = snap.match(ev)
            if found:
                staged.append((ev, found))
            elif rec is not None:
                self._record(rec, ev, NO_BINDING)
        if not staged:
            return False
        who = self.resolver(chain[0])
        if who is not None:
            staged = [(dataclasses.replace(ev, handle=who.handle), bs) for ev, bs in staged]
        if not any(b.is_async for _, bs in staged for b in bs):
            self._run_sync(staged, who)
            return False
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._run_async(staged, who))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, on_done))
        return True

    def _task_done(self, task: asyncio.Task[None], on_done: Done) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled():
            self._finish(on_done)
        self._end()

    def _allowed(self, b: Binding, ev: Event, who: Principal | None) -> bool:
        if permitted(b, ev, who):
            return True
        self._refuse(b, ev, who)
        return False

    @staticmethod
    def _record(rec: Recorder, ev: Event, outcome: str) -> None:
        try:
            rec(ev, outcome)
        except Exception:  # the recorder must not stop the dispatcher
            log.exception("event recorder failed on %s %s", ev.type, ev.key)

    def _record_rest(
        self, rec: Recorder, staged: list[tuple[Event, tuple[Binding, ...]]], last: Event
    ) -> None:
        """Record the stages after ``last`` as skipped (a true return stopped the chain)."""
        after = False
        for ev, _ in staged:
            if after:
                self._record(rec, ev, SKIPPED)
            after = after or ev is last

    def _refuse(self, b: Binding, ev: Event, who: Principal | None) -> None:
        spec = BIND_TYPES[b.type]
        if not spec.command:
            return
        self.stats.refused += 1
        need = b.flags.describe(ev.channel)
        log.info(
            "refused %s %s for %s (%s) handle=%s: needs %s",
            b.type,
            ev.key,
            ev.nick,
            ev.uhost,
            who.handle if who else None,
            b.flags.text,
        )
        to = f"{ev.nick}: " if ev.nick and ev.channel else ""
        if b.flags.anyone:
            ev.reply(f"{to}you may not use {ev.key}")
        elif who is None:
            ev.reply(f"{to}you need {need} for {ev.key} (no user record matches you)")
        else:
            ev.reply(f"{to}you need {need} for {ev.key}")

    def _fail(self, b: Binding, ev: Event, exc: BaseException | None, timed_out: bool) -> None:
        ref = new_ref()
        if timed_out:
            self.stats.timeouts += 1
            log.error(
                "handler %s for %s %r timed out after %ss (ref %s)",
                b.handler_name,
                ev.type,
                ev.key,
                self.handler_timeout_s,
                ref,
            )
        else:
            self.stats.errors += 1
            log.error(
                "handler %s for %s %r failed (ref %s)",
                b.handler_name,
                ev.type,
                ev.key,
                ref,
                exc_info=exc,
            )
        if BIND_TYPES[b.type].command:
            ev.reply(f"{ev.key} failed (ref {ref})")

    def _run_sync(
        self, staged: list[tuple[Event, tuple[Binding, ...]]], who: Principal | None
    ) -> None:
        rec = self.recorder
        for ev, bindings in staged:
            stop = False
            fired = refused = failed = 0
            for b in bindings:
                if stop and b.builtin:
                    continue  # a true return from a user binding skips the default
                if not self._allowed(b, ev, who):
                    refused += 1
                    continue
                b.hits += 1
                self.stats.fired += 1
                fired += 1
                token = current_owner.set(b.owner)
                try:
                    if b.handler(ev):
                        stop = True
                except (Exception, SystemExit, KeyboardInterrupt) as exc:
                    failed += 1
                    self._fail(b, ev, exc, False)
                finally:
                    current_owner.reset(token)
            if rec is not None:
                self._record(rec, ev, _outcome(fired, refused, failed))
            if stop:
                if rec is not None:
                    self._record_rest(rec, staged, ev)
                break

    async def _run_async(
        self, staged: list[tuple[Event, tuple[Binding, ...]]], who: Principal | None
    ) -> None:
        for ev, bindings in staged:
            stop = False
            fired = refused = failed = 0
            for b in bindings:
                if stop and b.builtin:
                    continue
                if not self._allowed(b, ev, who):
                    refused += 1
                    continue
                b.hits += 1
                self.stats.fired += 1
                fired += 1
                result = await self._call(b, ev)
                if result is _FAILED:
                    failed += 1
                elif result:
                    stop = True
            rec = self.recorder
            if rec is not None:
                self._record(rec, ev, _outcome(fired, refused, failed))
            if stop:
                if rec is not None:
                    self._record_rest(rec, staged, ev)
                break

    async def _call(self, b: Binding, ev: Event) -> object:
        token = current_owner.set(b.owner)
        started = time.monotonic()
        try:
            result = b.handler(ev)
            if inspect.isawaitable(result):
                async with asyncio.timeout(self.handler_timeout_s):
                    result = await result
            return result
        except TimeoutError as exc:
            timed_out = time.monotonic() - started >= self.handler_timeout_s * 0.99
            self._fail(b, ev, exc, timed_out)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            self._fail(b, ev, None, False)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            self._fail(b, ev, exc, False)
        finally:
            with contextlib.suppress(ValueError):
                current_owner.reset(token)
        return _FAILED
