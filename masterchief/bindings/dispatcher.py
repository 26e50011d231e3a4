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

A plain ``def`` handler cannot be cancelled, and inline it blocks the whole
loop (no PONGs), so ``run()`` starts a ``_Watchdog`` thread for them.  Around
each plain call the worker bumps one counter (odd while a call runs: two
integer stores, the inline path stays fast).  The thread polls it; a call
it has seen running for ``handler_timeout_s`` is interrupted: the thread
sends ``SIGUSR2`` to the main thread, whose handler raises ``HandlerTimeout``
into the handler, but only if that same call is still running and is not in
the dispatcher's own frames, so it never lands in dispatcher code.  The
timeout is then reported exactly like an async one.  Signals reach only the
main thread: with the loop in another thread the watchdog can only log,
once per call, which binding has blocked the loop and for how long.

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
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Final, Protocol

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
    "HandlerTimeout",
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


class HandlerTimeout(BaseException):
    """Raised inside a plain ``def`` handler that ran past ``handler_timeout_s``.

    A ``BaseException`` so that the handler's own ``except Exception`` does
    not swallow it; the dispatcher catches it around the call.
    """


# The signal the watchdog interrupts the main thread with.  Not SIGALRM:
# pytest-timeout (and other timers) own that one.
WATCHDOG_SIGNAL: Final = signal.SIGUSR2

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class _Watchdog:
    """Times plain handler calls from a thread; interrupts an overdue one.

    The loop thread owns ``seq`` and ``binding``: ``seq`` is odd while a call
    runs and a fresh odd number marks each call (its token).  The thread only
    reads them, so no lock is needed.  A token it has seen unchanged for
    ``timeout`` seconds belongs to a call that has run at least that long
    (never less: it was first seen after the call began), at most one poll
    interval more.
    """

    __slots__ = (
        "_poll",
        "_stop",
        "_target",
        "_thread",
        "binding",
        "fired",
        "seq",
        "timeout",
    )

    def __init__(self, timeout: float) -> None:
        self.seq = 0
        self.binding: Binding | None = None
        self.fired = 0  # the token the last signal was meant for
        self.timeout = timeout
        self._poll = 0.1
        self._stop = threading.Event()
        self._target: int | None = None  # main thread ident when signals can be used
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._poll = min(0.1, max(0.01, self.timeout / 4))
        self._stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            self._target = threading.main_thread().ident
            _install(self)
        self._thread = threading.Thread(target=self._watch, name="dispatch-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()  # no signal is sent after this returns
        if self._target is not None:
            _uninstall(self)

    def _watch(self) -> None:
        seen, since, told = 0, 0.0, False
        while not self._stop.wait(self._poll):
            token = self.seq
            if not token & 1:  # no call running
                continue
            binding = self.binding
            now = time.monotonic()
            if token != seen:
                seen, since, told = token, now, False
                continue
            blocked = now - since
            if blocked < self.timeout or self.seq != token:
                continue
            if self._target is not None:
                self.fired = token
                signal.pthread_kill(self._target, WATCHDOG_SIGNAL)
                # Interrupted at once unless it blocks in C code (or swallows
                # the exception): say so once; the signal is repeated each poll.
                if not told and blocked >= 2 * self.timeout + 1:
                    told = True
                    self._blocked(binding, blocked, "did not stop when interrupted")
            elif not told:
                told = True
                self._blocked(binding, blocked, "the loop is not in the main thread")

    @staticmethod
    def _blocked(b: Binding | None, seconds: float, why: str) -> None:
        what = f"{b.handler_name} ({b.type} {b.mask})" if b is not None else "?"
        log.error(
            "handler %s has blocked the event loop for %.1fs and cannot be timed out (%s)",
            what,
            seconds,
            why,
        )


# Watchdogs whose loop runs in the main thread share one signal handler.
_watched: list[_Watchdog] = []
_previous: _SignalHandler = None


def _install(wd: _Watchdog) -> None:
    global _previous
    if not _watched:
        _previous = signal.signal(WATCHDOG_SIGNAL, _on_signal)
    _watched.append(wd)


def _uninstall(wd: _Watchdog) -> None:
    with contextlib.suppress(ValueError):
        _watched.remove(wd)
    if not _watched and signal.getsignal(WATCHDOG_SIGNAL) is _on_signal:
        signal.signal(WATCHDOG_SIGNAL, _previous if _previous is not None else signal.SIG_DFL)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Raise ``HandlerTimeout`` into the overdue call, if it still runs.

    Runs in the main thread between two bytecodes of whatever it was doing.
    The token check makes a late signal harmless; the frame checks keep the
    exception out of the dispatcher's own code: it is raised only when the
    innermost frame is the handler's (or below it) and a dispatcher frame that
    calls handlers is further up.  Otherwise nothing happens and the watchdog
    repeats the signal at its next poll while the call goes on.
    """
    for wd in _watched:
        if wd.fired and wd.seq == wd.fired:
            if _in_handler(frame):
                wd.fired = 0
                raise HandlerTimeout(f"handler ran past {wd.timeout}s")
            return
    if callable(_previous):
        _previous(signum, frame)


def _in_handler(frame: FrameType | None) -> bool:
    if frame is None or frame.f_code in _CALLERS:
        return False
    while frame is not None:
        if frame.f_code in _CALLERS:
            return True
        frame = frame.f_back
    return False


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
        self._watchdog = _Watchdog(handler_timeout_s)

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
        wd = self._watchdog
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
                wd.binding = b
                seq = wd.seq + 1
                try:
                    wd.seq = seq  # odd: the watchdog times this call
                    if b.handler(ev):
                        stop = True
                except HandlerTimeout:
                    failed += 1
                    self._fail(b, ev, None, True)
                except (Exception, SystemExit, KeyboardInterrupt) as exc:
                    failed += 1
                    self._fail(b, ev, exc, False)
                finally:
                    wd.seq = seq + 1
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
        wd = self._watchdog
        wd.binding = b
        seq = wd.seq + 1
        try:
            try:  # a plain handler in an async chain runs here: timed like inline ones
                wd.seq = seq
                result = b.handler(ev)
            finally:
                wd.seq = seq + 1
            if inspect.isawaitable(result):
                async with asyncio.timeout(self.handler_timeout_s):
                    result = await result
            return result
        except TimeoutError as exc:
            timed_out = time.monotonic() - started >= self.handler_timeout_s * 0.99
            self._fail(b, ev, exc, timed_out)
        except HandlerTimeout:
            self._fail(b, ev, None, True)
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


# The dispatcher frames that call handlers: HandlerTimeout is raised only below them.
_CALLERS: Final[frozenset[CodeType]] = frozenset(
    {Dispatcher._run_sync.__code__, Dispatcher._call.__code__}
)
