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

Where a handler runs.  The bot's own plain handlers (owner ``builtin:...``)
are short, touch state that lives on the event loop and run inline: a chain
whose handlers are all built-in runs in the worker itself -- no task per
event, which keeps the hot path fast.  A script's plain ``def`` handler runs
in the ``HandlerLane`` (lane.py): a thread that runs its work in submission
order and hands the queue to another thread once a piece blocks for
``takeover_s``.  So a ``def`` handler that blocks never stops the loop, and
what is queued behind it waits at most ``takeover_s``, the first time too.

- A chain whose handlers are all scripts' plain ones is one ``LaneChain``
  for the lane: ``run_sync`` walks it there with the same ``_walk`` as a
  built-in chain inline (flags, ``stop``, records), and the loop collects
  finished jobs in batches (``_collect``: counters, records, ``on_done``).
  No task or future per event: that keeps most of the inline throughput.
- Any other chain runs in its own task (``_run_async``), tracked in
  ``self._tasks``: ``async def`` handlers are awaited under
  ``handler_timeout_s``, a script's plain handler is one ``LaneCall`` in the
  lane awaited the same way, a built-in one runs inline.

Both kinds of task and job hold one of ``max_inflight`` slots; lanework.py
has the lane's side (replies handed back to the loop in order, a handler's
return value deciding as inline).  At ``handler_timeout_s`` a lane call is
abandoned: reported like an async timeout, its later replies dropped,
``HandlerTimeout`` raised into it, and the rest of its chain goes on in a
task (``overdue``); a job that waited that long without starting (every lane
thread blocked) fails and never runs (``_expire``).  A handler that raises
or times out is logged with a reference id, and the user sees only ``!cmd
failed (ref 1a2b3c)``.  Nothing a handler does (raise, ``sys.exit()``,
hang) stops the worker.

Built-in plain handlers cannot be cancelled either, so ``run()`` starts a
``Watchdog`` (watchdog.py) for them: a call that runs past
``handler_timeout_s`` gets ``HandlerTimeout`` raised into it, and the
timeout is then reported exactly like an async one.

An optional ``recorder`` (the event log) is told each Event's outcome once
it has been processed: ``fired``, ``refused``, ``failed``, ``no-binding``
or ``skipped`` (a true return of an earlier stage).  With no recorder the
hot path pays one ``is not None`` test per stage.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from types import CodeType
from typing import Any, Final

from .access import (
    FAILED,
    FIRED,
    NO_BINDING,
    REFUSED,
    SKIPPED,
    Principal,
    Recorder,
    Resolver,
    permitted,
    refusal,
)
from .eager import first_step
from .event import Event, new_ref
from .lane import HandlerLane, HandlerTimeout
from .lanework import (
    ABANDONED,
    HANDLER_FAILED,
    DispatchStats,
    Done,
    LaneChain,
    Staged,
    call_in_lane,
)
from .registry import BIND_TYPES, Binding, BindingTable, current_owner
from .watchdog import Watchdog

__all__ = ["DispatchStats", "Dispatcher"]

log = logging.getLogger("masterchief.dispatch")


def _nobody(_ev: Event) -> Principal | None:
    return None


def _outcome(fired: int, refused: int, failed: int) -> str:
    if failed:
        return FAILED
    if fired:
        return FIRED
    return REFUSED if refused else SKIPPED


Chain = tuple[Event, ...]
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
        handler_threads: int = 16,
        takeover_s: float = 0.02,
    ) -> None:
        self.table = table
        self._wants_snapshot: object = None
        self._wants_cache: dict[tuple[str, str], bool] = {}
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
        # Asked once per chain whose last matched stage is a command, with the
        # sender's record (resolved once, here): False drops the chain. The IRC
        # client's per-user command flood limit, without a second match/resolve.
        self.gate: Callable[[Event, Principal | None], bool] | None = None
        self._watchdog = Watchdog(handler_timeout_s, _CALLERS)
        # Script plain handlers; at most ``handler_threads`` threads, however
        # many handlers are stuck (see lane.py for what happens when all are).
        self.lane = HandlerLane(takeover_s=takeover_s, max_threads=handler_threads)
        self._jobs = 0  # chains in the lane
        self._finished: collections.deque[LaneChain] = collections.deque()  # to collect
        self._collecting = False  # a _collect is scheduled

    # -- intake --------------------------------------------------------------

    def wants(self, type_: str, key: str) -> bool:
        """Whether any binding could match ``(type_, key)`` (``Snapshot.wants``),
        for sources that skip Events nobody listens to.  Asked per log line or
        job output line, so answers are kept until the bindings change."""
        snapshot = self.table.snapshot
        if snapshot is not self._wants_snapshot:
            self._wants_snapshot = snapshot
            self._wants_cache.clear()
        found = self._wants_cache.get((type_, key))
        if found is None:
            if len(self._wants_cache) >= 4096:  # keys may be unbounded (log paths)
                self._wants_cache.clear()
            found = self._wants_cache[(type_, key)] = snapshot.wants(type_, key)
        return found

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
        """Chains running in tasks or in the lane."""
        return len(self._tasks) + self._jobs

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued chain has finished (tests, shutdown)."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    # -- the worker ----------------------------------------------------------

    async def run(self) -> None:
        """Process chains until cancelled; on cancel, cancel running handlers.

        Runs the watchdog for plain handlers meanwhile (see the module doc)."""
        wd = self._watchdog
        wd.timeout = self.handler_timeout_s
        wd.start()
        try:
            while True:
                chain, on_done = await self.queue.get()
                spawned = False
                try:
                    spawned = await self._process(chain, on_done)
                except (Exception, HandlerTimeout):  # defensive: must not stop the bot
                    log.exception("dispatcher failed on %s %s", chain[0].type, chain[0].key)
                if not spawned:
                    self._finish(on_done)
                    self._end()
        finally:
            wd.stop()
            self.lane.shutdown()
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
        """Run or start one chain; True when it continues in a task or the lane."""
        self.stats.processed += 1
        snap = self.table.snapshot
        rec = self.recorder
        staged: Staged = []
        for ev in chain:
            found = snap.match(ev)
            if found:
                staged.append((ev, found))
            elif rec is not None:
                self._record(rec, ev, NO_BINDING)
        if not staged:
            return False
        who = self.resolver(chain[0])
        gate = self.gate
        last = staged[-1][0]
        if gate is not None and BIND_TYPES[last.type].command and not gate(last, who):
            return False
        # A match that carries no privileges (a weak or untrusted hostmask)
        # does not name the record either: a script that trusts ``ev.handle``
        # must not take a stranger with carol's ident for carol.
        if who is not None and who.restricted is None:
            staged = [(dataclasses.replace(ev, handle=who.handle), bs) for ev, bs in staged]
        if all(_inline(b) for _, bs in staged for b in bs):
            self.run_sync(staged, who)
            return False
        await self._slots.acquire()
        if all(_in_lane(b) for _, bs in staged for b in bs):
            self._start_job(staged, who, on_done)
            return True
        self._spawn(self._run_async(staged, who), on_done)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None], on_done: Done) -> None:
        """Run a chain (holding a slot) in a tracked task."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, on_done))

    def _task_done(self, task: asyncio.Task[None], on_done: Done) -> None:
        self._tasks.discard(task)
        self._chain_end(None if task.cancelled() else on_done)

    def _chain_end(self, on_done: Done) -> None:
        """A chain that held a slot (a task's or the lane's) has finished."""
        self._slots.release()
        self._finish(on_done)
        self._end()

    def _allowed(
        self, b: Binding, ev: Event, who: Principal | None, stats: DispatchStats | None = None
    ) -> bool:
        if permitted(b, ev, who):
            return True
        self._refuse(b, ev, who, stats or self.stats)
        return False

    @staticmethod
    def _record(rec: Recorder, ev: Event, outcome: str) -> None:
        try:
            rec(ev, outcome)
        except Exception:  # the recorder must not stop the dispatcher
            log.exception("event recorder failed on %s %s", ev.type, ev.key)

    def _refuse(self, b: Binding, ev: Event, who: Principal | None, stats: DispatchStats) -> None:
        spec = BIND_TYPES[b.type]
        if not spec.command:
            return
        stats.refused += 1
        log.info(
            "refused %s %s for %s (%s) handle=%s: needs %s",
            b.type,
            ev.key,
            ev.nick,
            ev.uhost,
            who.handle if who else None,
            b.flags.text,
        )
        ev.reply(refusal(b, ev, who))

    def fail(
        self,
        b: Binding,
        ev: Event,
        exc: BaseException | None,
        timed_out: bool,
        stats: DispatchStats | None = None,
    ) -> None:
        ref = new_ref()
        stats = stats or self.stats
        if timed_out:
            stats.timeouts += 1
            what, exc = f"timed out after {self.handler_timeout_s}s", None
        else:
            stats.errors += 1
            what = "failed"
        log.error(
            "handler %s for %s %r %s (ref %s)",
            b.handler_name,
            ev.type,
            ev.key,
            what,
            ref,
            exc_info=exc,
        )
        if BIND_TYPES[b.type].command:
            ev.reply(f"{ev.key} failed (ref {ref})")

    # -- plain handlers: inline (built-ins) or in a lane thread (a LaneChain) ------

    def _walk(
        self,
        staged: Staged,
        who: Principal | None,
        stats: DispatchStats,
        note: Callable[[Event, str], object] | None,
        result: list[object],
        start: tuple[int, int] = (0, 0),
        carry: tuple[int, int, int, bool] = (0, 0, 0, False),
        *,
        count: bool = True,
        at: list[tuple[int, int, bool]] | None = None,
    ) -> Iterator[tuple[Binding, Event]]:
        """The one walk of a chain, whoever runs its handlers.

        Yields each permitted binding with its Event; the driver puts the
        handler's result in ``result[0]`` before asking for the next
        (``HANDLER_FAILED``, or its return value: true stops the chain after
        this stage and skips the rest of its built-ins).  A plain ``for``
        loop drives it (no ``send``: its end costs no StopIteration on the
        hot path).  ``note`` is told each stage's outcome.  ``start`` and
        ``carry`` continue a chain part-way (stage, binding; the counters and
        stop flag of that stage); ``at[0]``, when given, says before each
        call where such a continuation would start.  ``count`` False: the
        handlers will not run (``_expire``), so no hits are counted."""
        for i in range(start[0], len(staged)):
            ev, bindings = staged[i]
            first = start[1] if i == start[0] else 0
            fired, refused, failed, stop = carry if i == start[0] else (0, 0, 0, False)
            for j in range(first, len(bindings)):
                b = bindings[j]
                if stop and b.builtin:
                    continue  # a true return from a user binding skips the default
                if not self._allowed(b, ev, who, stats):
                    refused += 1
                    continue
                if count:
                    b.hits += 1
                    stats.fired += 1
                fired += 1
                if at is not None:
                    at[0] = (i, j + 1, stop)
                yield b, ev
                if result[0] is HANDLER_FAILED:
                    failed += 1
                elif result[0]:
                    stop = True
            if note is not None:
                note(ev, _outcome(fired, refused, failed))
            if stop:
                if note is not None:
                    for later in staged[i + 1 :]:
                        note(later[0], SKIPPED)
                break

    def _note(self) -> Callable[[Event, str], object] | None:
        rec = self.recorder
        return None if rec is None else functools.partial(self._record, rec)

    def run_sync(self, staged: Staged, who: Principal | None, job: LaneChain | None = None) -> bool:
        """Walk a chain of plain handlers: inline on the loop (``job`` None),
        or in a lane thread for ``job``.  False when the job was abandoned
        (a handler timed out; the loop finishes the chain, see ``overdue``)."""
        result: list[object] = [None]
        if job is None:
            for b, ev in self._walk(staged, who, self.stats, self._note(), result):
                result[0] = self._call_inline(b, ev)
            return True
        at = [job.at]
        note = job.note if self.recorder is not None else None
        for b, ev in self._walk(staged, who, job.stats, note, result, at=at):
            job.at = at[0]
            result[0] = job.call(b, ev)
            if result[0] is ABANDONED:
                return False
        return True

    def _call_inline(self, b: Binding, ev: Event) -> object:
        """A built-in plain handler on the loop, under the watchdog."""
        wd = self._watchdog
        token = current_owner.set(b.owner)
        wd.binding = b
        seq = wd.seq + 1
        failure: BaseException | None = None
        try:
            wd.seq = seq  # odd: the watchdog times this call
            return b.handler(ev)
        except (Exception, SystemExit, KeyboardInterrupt, HandlerTimeout) as exc:
            failure = exc
        finally:
            wd.seq = seq + 1  # even: no interrupt lands in the reporting below
            current_owner.reset(token)
        timed_out = isinstance(failure, HandlerTimeout)
        self.fail(b, ev, None if timed_out else failure, timed_out)
        return HANDLER_FAILED

    def _start_job(self, staged: Staged, who: Principal | None, on_done: Done) -> None:
        """Hand a chain of scripts' plain handlers to the lane (holding a slot)."""
        self._jobs += 1
        self.lane.submit(LaneChain(self, asyncio.get_running_loop(), staged, who, on_done))

    def chain_done(self, job: LaneChain) -> None:
        """In the lane thread: ``job`` walked its chain; the loop collects it."""
        self._finished.append(job)
        if not self._collecting:
            self._collecting = True
            with contextlib.suppress(RuntimeError):  # the loop has closed
                job.loop.call_soon_threadsafe(self._collect)

    def _collect(self) -> None:
        self._collecting = False  # before draining: a job appended later schedules again
        while self._finished:
            job = self._finished.popleft()
            self._merge(job)
            self._jobs -= 1
            self._chain_end(job.on_done)

    def _merge(self, job: LaneChain) -> None:
        """Count a job's outcome and record its events (on the loop)."""
        self.stats.add(job.stats)
        job.stats = DispatchStats()
        rec = self.recorder
        if rec is not None:
            for ev, outcome in job.records:
                self._record(rec, ev, outcome)
        job.records.clear()

    def overdue(self, job: LaneChain, token: int) -> None:
        """On the loop: a job's handler ran past the timeout.  Report it,
        abandon the job (its thread leaves it alone from now on and is
        interrupted) and finish the chain in a task from the next binding."""
        if not job.abandon(token):
            return  # it returned meanwhile
        if token == 0:
            self._expire(job)
            return
        b, ev = job.binding, job.event
        if b is None or ev is None:  # cannot happen: set before the call
            return
        self._jobs -= 1
        self.fail(b, ev, None, True, job.stats)  # through the job's sink: after its replies
        job.sink.open = False  # anything it says from now on is dropped
        self.lane.interrupt(job)
        self._merge(job)
        stage, index, stop = job.at
        carry = (1, 0, 1, stop)  # this stage fired and failed, whatever else happens
        self._spawn(self._run_async(job.staged, job.who, (stage, index), carry), job.on_done)

    def _expire(self, job: LaneChain) -> None:
        """On the loop: ``job`` waited ``handler_timeout_s`` for a lane thread
        (every one was blocked) and never started; it never will.  Each
        handler it would have run fails as timed out."""
        self._jobs -= 1
        log.error(
            "%s waited %ss for a handler thread (all %d blocked) and was dropped",
            job.label,
            self.handler_timeout_s,
            self.lane.max_threads,
        )
        walk = self._walk(
            job.staged, job.who, self.stats, self._note(), [HANDLER_FAILED], count=False
        )
        for b, ev in walk:
            self.fail(b, ev, None, True)
        self._chain_end(job.on_done)

    # -- async handlers and mixed chains ---------------------------------------

    async def _run_async(
        self,
        staged: Staged,
        who: Principal | None,
        start: tuple[int, int] = (0, 0),
        carry: tuple[int, int, int, bool] = (0, 0, 0, False),
    ) -> None:
        """Run a chain in a task; ``start``/``carry`` continue one part-way."""
        result: list[object] = [None]
        for b, ev in self._walk(staged, who, self.stats, self._note(), result, start, carry):
            result[0] = await self._call(b, ev)

    async def _call(self, b: Binding, ev: Event) -> object:
        if _inline(b):
            result = self._call_inline(b, ev)
            if not inspect.isawaitable(result):
                return result
        token = current_owner.set(b.owner)
        started = time.monotonic()
        try:
            if _inline(b):
                pass  # its awaitable is awaited below
            elif b.is_async:
                result = b.handler(ev)
                if inspect.iscoroutine(result):
                    # Most finish without waiting (a reply is queued at once):
                    # no timer for those; the timeout is armed if it waits.
                    done, result = first_step(result)
                    if done:
                        return result
            else:
                result = await call_in_lane(self.lane, b, ev, self.handler_timeout_s)
            if inspect.isawaitable(result):
                async with asyncio.timeout(self.handler_timeout_s):
                    result = await result
            return result
        except TimeoutError as exc:
            timed_out = time.monotonic() - started >= self.handler_timeout_s * 0.99
            self.fail(b, ev, exc, timed_out)
        except HandlerTimeout:
            self.fail(b, ev, None, True)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            self.fail(b, ev, None, False)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            self.fail(b, ev, exc, False)
        finally:
            with contextlib.suppress(ValueError):
                current_owner.reset(token)
        return HANDLER_FAILED


def _inline(b: Binding) -> bool:
    """Whether ``b`` runs on the loop itself: the bot's own plain handlers."""
    return not b.is_async and b.builtin


def _in_lane(b: Binding) -> bool:
    """Whether ``b`` runs in the lane: a script's (or anyone else's) plain handler."""
    return not b.is_async and not b.builtin


# The dispatcher frames that call handlers inline: HandlerTimeout is raised only below them.
_CALLERS: Final[frozenset[CodeType]] = frozenset({Dispatcher._call_inline.__code__})
