"""The watchdog: built-in plain handlers that run on the event loop, timed out.

How this works
--------------
The bot's own plain handlers run inline on the loop (the dispatcher's fast
path), and a plain call cannot be cancelled.  Around each inline call the
dispatcher bumps one counter, ``seq`` (odd while a call runs: two integer
stores, so the inline path stays fast).  A thread polls it; a call it has
seen running for ``timeout`` seconds is interrupted: the thread sends
``SIGUSR2`` to the main thread, whose handler raises ``HandlerTimeout`` into
the handler -- but only if that same call is still running and the
innermost frame is not in the dispatcher's own code (``callers``), so it
never lands in dispatcher code.  Signals reach only the main thread: with
the loop in another thread the watchdog can only log, once per call, which
binding has blocked the loop and for how long.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, Final

from .lane import HandlerTimeout
from .registry import Binding

__all__ = ["WATCHDOG_SIGNAL", "Watchdog"]

log = logging.getLogger("masterchief.dispatch")

# The signal the watchdog interrupts the main thread with.  Not SIGALRM:
# pytest-timeout (and other timers) own that one.
WATCHDOG_SIGNAL: Final = signal.SIGUSR2

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class Watchdog:
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
        "callers",
        "fired",
        "seq",
        "timeout",
    )

    def __init__(self, timeout: float, callers: frozenset[CodeType]) -> None:
        """``callers``: the code of the functions that call handlers; the
        interrupt is raised only in a frame below one of them."""
        self.callers = callers
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
_watched: list[Watchdog] = []
_previous: _SignalHandler = None


def _install(wd: Watchdog) -> None:
    global _previous
    if not _watched:
        _previous = signal.signal(WATCHDOG_SIGNAL, _on_signal)
    _watched.append(wd)


def _uninstall(wd: Watchdog) -> None:
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
            if _in_handler(frame, wd.callers):
                wd.fired = 0
                raise HandlerTimeout(f"handler ran past {wd.timeout}s")
            return
    if callable(_previous):
        _previous(signum, frame)


def _in_handler(frame: FrameType | None, callers: frozenset[CodeType]) -> bool:
    if frame is None or frame.f_code in callers:
        return False
    while frame is not None:
        if frame.f_code in callers:
            return True
        frame = frame.f_back
    return False
