"""The lane: plain ``def`` handlers run here, off the event loop, in order.

How this works
--------------
A plain handler cannot be cancelled, and run on the event loop a blocking
one (``time.sleep``, a slow HTTP call, a big file) freezes the whole bot:
no replies, no PONG.  So the dispatcher hands script handlers to a lane.
One thread (the *active* one) takes calls from a FIFO queue and runs them
one after another, in the order they were submitted -- the order they had
when they ran inline, so a ``seen`` script still sees a join before the
part that followed it.

A monitor thread watches the active thread.  Once one call has run for
``takeover_s`` (20 ms by default) the queue is handed to another thread (a
parked one, else a new one), so a blocking handler delays the calls behind
it by at most ``takeover_s`` plus one poll -- the first time it blocks too;
nothing has to be learnt about a handler first.  The blocked thread finishes
its call, then parks as a spare (at most ``spares`` of them) or exits.  Only
calls behind a blocked one lose their order, and only relative to it.

Bounded: at most ``max_threads`` threads exist (active, blocked, parked).
When that many are blocked, the queue waits for the active thread and the
lane logs it once; the event loop, the bot's own handlers and ``async def``
handlers go on.  The monitor then also shows the waiting work to its owner
(``Work.check``): the dispatcher fails a chain that has waited
``handler_timeout_s`` without starting (``!cmd failed (ref ...)``), and it
never runs.

A thread cannot be killed.  ``interrupt`` raises ``HandlerTimeout`` into a
running call at its next Python instruction (``PyThreadState_SetAsyncExc``):
that ends a busy loop at once and a ``time.sleep`` when it returns, so a
timed-out handler does not go on to act late.  A call stuck inside C code
keeps its thread until it returns.  The exception can only be sent while its
call runs; should it land just after the call returned, the worker catches
it and goes on.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import threading
import time
from typing import Final, Protocol

__all__ = ["HandlerLane", "HandlerTimeout", "Work"]

log = logging.getLogger("masterchief.dispatch")


class HandlerTimeout(BaseException):
    """Raised inside a plain ``def`` handler that ran past ``handler_timeout_s``.

    A ``BaseException`` so that the handler's own ``except Exception`` does
    not swallow it; the dispatcher (or the lane) catches it around the call.
    """


_set_async_exc: Final = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class Work(Protocol):
    """What the lane runs (the dispatcher's one call, or a whole chain)."""

    @property
    def label(self) -> str:
        """Names it in log lines."""
        ...

    def start(self) -> bool:
        """Called under the lane lock before ``run``; False: skip it (cancelled)."""
        ...

    def run(self) -> None:
        """Runs in a lane thread; should not raise (what it does is its own business)."""
        ...

    def check(self, now: float) -> None:
        """Called by the monitor (lane lock held, so be quick) while it runs,
        and while it waits when every thread is blocked."""
        ...


class _Worker:
    __slots__ = ("ident", "since", "wake", "work")

    def __init__(self) -> None:
        self.work: Work | None = None  # what runs now (set and cleared under the lock)
        self.since = 0.0  # when it started (monotonic)
        self.ident: int | None = None
        self.wake = threading.Event()  # a parked worker is woken to become active


class HandlerLane:
    """Runs work in submission order on one thread at a time, handing the
    queue to another thread when one piece blocks (module doc)."""

    def __init__(
        self,
        *,
        takeover_s: float = 0.02,
        max_threads: int = 16,
        spares: int = 2,
        name: str = "handler",
    ) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self.takeover_s = takeover_s
        self.max_threads = max_threads
        self.spares = spares
        self.name = name
        self.takeovers = 0  # how often blocked work handed the queue on
        # Held while the monitor looks at running work; work may take it for
        # short sections of its own (the dispatcher's abandon protocol).
        self.lock = threading.Lock()
        # Work not yet started, oldest first: what the active thread takes
        # next, and what the monitor checks when every thread is blocked.
        self._waiting: collections.deque[Work] = collections.deque()
        self._ready = threading.Condition(self.lock)  # notified when work is queued
        self._active: _Worker | None = None
        self._workers: list[_Worker] = []  # alive: active, blocked, parked
        self._parked: list[_Worker] = []
        self._stop = threading.Event()
        self._busy = threading.Event()  # set while work runs or waits: the monitor polls
        self._started = False
        self._told_full = False
        self._seq = 0

    # -- what the dispatcher uses ---------------------------------------------

    def submit(self, work: Work) -> None:
        """Queue ``work``; it runs after everything submitted before it
        (unless something before it blocks)."""
        if not self._started:
            self._start()
        with self._ready:
            self._waiting.append(work)
            self._ready.notify()

    def interrupt(self, work: Work) -> bool:
        """Raise ``HandlerTimeout`` into the thread running ``work``, if one
        does now; True when that was done."""
        with self.lock:
            for w in self._workers:
                if w.work is work and w.ident is not None:
                    return bool(_set_async_exc(w.ident, HandlerTimeout) == 1)
        return False

    @property
    def threads(self) -> int:
        """Threads alive (active, blocked, parked)."""
        return len(self._workers)

    @property
    def blocked(self) -> int:
        """Threads still running work after the queue was handed on."""
        with self.lock:
            return sum(1 for w in self._workers if w.work is not None and w is not self._active)

    def stats(self) -> dict[str, int]:
        """For /metrics: threads alive, blocked ones, work waiting, takeovers so far."""
        return {
            "threads": self.threads,
            "blocked": self.blocked,
            "waiting": len(self._waiting),
            "takeovers": self.takeovers,
        }

    def shutdown(self) -> None:
        """Stop the monitor and let idle threads exit (blocked ones exit when
        their work returns; all are daemon threads)."""
        with self._ready:
            self._stop.set()
            self._busy.set()
            for w in self._workers:
                w.wake.set()
            self._ready.notify_all()

    # -- threads ----------------------------------------------------------------

    def _start(self) -> None:
        with self.lock:
            if self._started:
                return
            self._started = True
            self._active = self._spawn_locked()
        threading.Thread(target=self._watch, name=f"{self.name}-monitor", daemon=True).start()

    def _spawn_locked(self) -> _Worker:
        w = _Worker()
        self._workers.append(w)
        self._seq += 1
        name = f"{self.name}-{self._seq}"
        threading.Thread(target=self._run, args=(w,), name=name, daemon=True).start()
        return w

    def _run(self, w: _Worker) -> None:
        w.ident = threading.get_ident()
        try:
            while (work := self._next(w)) is not None:
                try:
                    try:
                        work.run()
                    finally:
                        self._clear(w)
                except HandlerTimeout:  # an interrupt that landed just after its call
                    self._clear(w)
                except BaseException:
                    self._clear(w)
                    log.exception("handler lane: %s failed", work.label)
        except BaseException:  # never an unhandled exception in a thread
            log.exception("handler lane thread failed")
        finally:
            with self.lock:
                if w in self._workers:
                    self._workers.remove(w)
                if w in self._parked:
                    self._parked.remove(w)
                if self._active is w:
                    self._active = None if self._stop.is_set() else self._spawn_locked()

    def _clear(self, w: _Worker) -> None:
        with self.lock:
            w.work = None

    def _next(self, w: _Worker) -> Work | None:
        """The next work for ``w`` (None: the thread should exit)."""
        while True:
            with self._ready:
                while self._active is w and not self._waiting and not self._stop.is_set():
                    self._ready.wait()
                if self._stop.is_set():
                    return None
                if self._active is w:
                    work = self._waiting.popleft()
                    if not work.start():
                        continue  # cancelled (timed out) while it waited
                    w.since = time.monotonic()
                    w.work = work
                    if not self._busy.is_set():
                        self._busy.set()
                    return work
            if not self._park(w):
                return None

    def _park(self, w: _Worker) -> bool:
        """Wait as a spare until made active; False: exit instead."""
        with self.lock:
            if self._active is w:
                return True
            if len(self._parked) >= self.spares or self._stop.is_set():
                return False
            w.wake.clear()
            self._parked.append(w)
        w.wake.wait()
        return not self._stop.is_set()

    def _watch(self) -> None:
        poll = max(0.002, self.takeover_s / 2)
        while True:
            self._busy.wait()  # an idle lane costs no wake-ups
            if self._stop.wait(poll):
                return
            now = time.monotonic()
            with self.lock:
                running = False
                for w in self._workers:
                    if w.work is not None:
                        running = True
                        w.work.check(now)
                if self._told_full:  # every thread is blocked: waiting work may expire
                    for work in list(self._waiting):
                        work.check(now)
                active = self._active
                if active is None or active.work is None:
                    self._told_full = False
                elif now - active.since >= self.takeover_s:
                    self._hand_over_locked(active.work.label, now - active.since)
                if not running and not self._waiting:
                    self._busy.clear()  # set again (under this lock) when work starts

    def _hand_over_locked(self, label: str, blocked: float) -> None:
        if self._parked:
            nxt = self._parked.pop()
            self._active = nxt
            nxt.wake.set()
        elif len(self._workers) < self.max_threads:
            self._active = self._spawn_locked()
        else:
            if not self._told_full:
                self._told_full = True
                log.error(
                    "all %d handler threads are blocked (the active one in %s for %.1fs); "
                    "plain def handlers wait until one returns",
                    self.max_threads,
                    label,
                    blocked,
                )
            return
        self.takeovers += 1
        log.debug("%s blocked %.0f ms: later work goes to another thread", label, blocked * 1e3)
