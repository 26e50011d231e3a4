"""Paced, prioritised output to the IRC server.

How this works
--------------
Everything the bot says goes through one ``OutputQueue``. Callers
(``privmsg``/``notice``/``raw``) are synchronous: they validate, sanitise and
split the text into wire lines and append them to one of four bounded FIFO
queues (lanes), Eggdrop style with one lane added: ``mode`` (protocol lines:
JOIN, NICK, MONITOR, WHO), ``alert`` (announcements: the outbox, storm
summaries, deploy lines), ``server`` (command replies and scripts' ``say``),
``help`` (only when the others are empty). Nothing here touches a socket.

Lanes: a higher lane goes first, so no number of command replies waiting in
``server`` delays an alert by more than the line being sent. So that an
alert storm cannot starve replies for good, ``server`` gets a fair share:
after ``ALERT_SHARE`` alert lines in a row while replies wait, one reply
goes (the outbox's storm folding already bounds how many alert lines there
are). Within ``server`` the targets take turns (the oldest line of the
target served longest ago goes next), so one asker's long answer or a
flooder's replies do not hold up another user's; lines to one target keep
their order.

A message text is one message, whatever is in it: CR, LF and CRLF become a
space and NUL is dropped, so a handler's ``"x\\r\\nQUIT :bye"`` is the one
harmless line ``x QUIT :bye``; only length splits it. Code that means to
send several lines (a storm summary) passes a list of lines.

The sans-I/O core is ``next_delay()`` / ``pop()``: a token bucket that models
the server's flood budget. It holds up to ``burst`` tokens and refills at
``rate`` tokens per second; a line may go when the tokens cover its cost.
InspIRCd's stock class (threshold 10, commandrate 1000, fakelag on) lets about
8 lines through at once and then exactly 1 line/s, so the defaults (burst 7,
rate 1.0) stay one line inside it: the server never has to hold our lines
back, which leaves room for the PONGs and JOINs the client library sends
around this queue.

The cost of a line is also paced by bytes so the server's receive queue
(``recvq``, 8192 bytes) can never overflow, whatever ``burst`` is configured:
one token is worth at most ``recvq / 2 / burst`` bytes, so a full bucket
never stands for more than half the recvq. With the defaults a token is worth
585 bytes, more than any 512-byte line, so every line costs exactly 1.

Lines the bot must write at once, outside the queues (a PONG to the
server's PING, registration before the queues run), still cost what the
server will charge: ``charge()`` takes their tokens from the bucket, so
every byte written is counted.

``run(send)`` is the thin I/O adapter: it sends while ``pop()`` gives lines
and otherwise sleeps exactly until the next token is due, or until a line is
queued (an event, not a periodic tick), so a quiet channel sees no added
latency. It is restartable: cancel it on disconnect, call
``reset_budget()`` and ``run()`` again after reconnect; queued lines survive.
A line whose ``send`` fails (``OSError``, which includes ``ConnectionError``
and ``TimeoutError``) or is cancelled mid-send goes back to the head of its
queue: delivery around a disconnect is at-least-once.

Delivery callbacks, for the durable outbox (``outbox.py``): ``privmsg`` and
``notice`` take an optional ``on_sent`` callback, attached to the last wire
line of that message and called with that line right after ``send``
returned for it (or when ``pop()`` hands it out). A line that goes back to
its queue keeps its callback, so it fires once, when the line was written.
An ``owner`` tag lets ``withdraw(owner)`` take that owner's unsent lines back
out; stop hooks (``add_stop_hook``) run whenever ``run()`` ends, i.e. when a
connection ended, before the next one's ``run()`` can send anything.
``drain_time()`` and ``text_budget()`` say how long the queue is and how much
text fits one line.

Overflow: when a queue is full, lines that do not fit are counted per target,
not queued. As soon as that queue has room again, one summary line per target
takes the freed slot ("[output] 42 more lines were not sent: queue full"), so
nobody mistakes a truncated alert storm for the whole story.

Line length: a PRIVMSG is relayed to recipients with the bot's prefix, so
text is split (``linesplit.split_message``) with that prefix counted: the
real one after ``set_self()``, the worst case (nick 30, user 10, host 63)
before it.

Not thread-safe: call everything from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal

from ..config.secrets import REDACTOR, Redactor
from .linesplit import check_target, sanitize, split_message, text_budget

__all__ = ["OutputQueue", "Priority", "SentCallback", "sanitize", "split_message"]

log = logging.getLogger("masterchief.output")

SentCallback = Callable[[str], None]
"""Called with the wire line (no CRLF) once it was written to the server."""

Priority = Literal["mode", "alert", "server", "help"]

PRIORITIES: Final[tuple[Priority, ...]] = ("mode", "alert", "server", "help")  # highest first

# Alert lines that may go in a row while command replies wait; then one reply.
ALERT_SHARE: Final = 4

# Worst-case lengths of the parts of our own prefix before set_self() tells us
# the real ones (InspIRCd defaults: maxnick 30, maxuser 10; 63 for a hostname).
WORST_NICK: Final = 30
WORST_USER: Final = 10
WORST_HOST: Final = 63

# Tolerance for float drift when sleeping "exactly" until a token is due.
_EPSILON: Final = 1e-9


@dataclass(slots=True, frozen=True)
class _Entry:
    line: str  # without CRLF
    priority: Priority
    cost: float  # tokens
    # Whom the line is for (``PRIVMSG #ops :x`` -> ``#ops``), for turns: kept,
    # since every reply sent scans the server lane's targets.
    target: str
    on_sent: SentCallback | None = None  # called once this line went out
    owner: object = None  # for withdraw()


@dataclass(slots=True)
class _Overflow:
    count: int
    command: str


def _check_pace(burst: int, rate: float, max_queue: int, max_line_bytes: int, recvq: int) -> None:
    if burst < 1:
        raise ValueError(f"output burst must be at least 1, got {burst}")
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"output rate must be a positive number of lines/s, got {rate}")
    if max_queue < 1:
        raise ValueError(f"output max_queue must be at least 1, got {max_queue}")
    if max_line_bytes < 64:
        raise ValueError(f"output max_line_bytes must be at least 64, got {max_line_bytes}")
    if recvq < 2 * max_line_bytes:
        raise ValueError(
            f"output recvq must be at least 2 * max_line_bytes ({2 * max_line_bytes}), got {recvq}"
        )


class OutputQueue:
    """Four bounded priority lanes drained through one token bucket.

    *burst* tokens at most, refilled at *rate* per second; each queue holds
    *max_queue* lines; *max_line_bytes* is the IRC line limit including CRLF
    and the relayed prefix; *recvq* is the server's receive queue in bytes
    (half of it is the most a full bucket may stand for); *clock* returns
    seconds and is injectable for tests.
    """

    def __init__(
        self,
        *,
        burst: int = 7,
        rate: float = 1.0,
        max_queue: int = 300,
        max_line_bytes: int = 512,
        clock: Callable[[], float] = time.monotonic,
        recvq: int = 8192,
        redactor: Redactor = REDACTOR,
    ) -> None:
        self.redactor = redactor
        self._max_line_bytes = max_line_bytes
        self._clock = clock
        self._tokens = self._burst = float(burst)  # starts full
        self._stamp, self._rate = clock(), 1.0
        self._wakeup: asyncio.Event | None = None
        self.configure(burst=burst, rate=rate, max_queue=max_queue, recvq=recvq)
        self._queues: dict[Priority, deque[_Entry]] = {p: deque() for p in PRIORITIES}
        self._alert_streak = 0  # alert lines sent in a row while replies waited
        # server lane: when each target was last served (see _server_head)
        self._served: dict[str, int] = {}
        self._serial = 0
        self._overflow: dict[Priority, dict[str, _Overflow]] = {p: {} for p in PRIORITIES}
        self._prefix_len = WORST_NICK + 1 + WORST_USER + 1 + WORST_HOST
        self._running = False
        self._stop_hooks: list[Callable[[], None]] = []
        self._stats: dict[str, int] = dict.fromkeys(
            ("queued", "sent", "grouped", "summaries", "refused", "dropped", "requeued"), 0
        )

    def configure(self, *, burst: int, rate: float, max_queue: int, recvq: int) -> None:
        """Set the pace (also on ``!rehash``); queued lines stay, in order."""
        _check_pace(burst, rate, max_queue, self._max_line_bytes, recvq)
        self._tokens, self._stamp = self._tokens_now()  # tokens earned at the old rate
        self._burst = float(burst)
        self._rate = float(rate)
        self._max_queue = max_queue
        self._bytes_per_token = recvq / 2 / burst
        self._tokens = min(self._tokens, self._burst)  # never above the new burst
        if self._wakeup is not None:  # a faster rate may send waiting lines sooner
            self._wakeup.set()

    # -- identity ---------------------------------------------------------

    def set_self(self, nick: str, user: str | None = None, host: str | None = None) -> None:
        """Record the bot's own ``nick!user@host`` as recipients see it.

        ``None`` means unknown and counts as the worst case, so pass the user
        and host again after a nick change if they are known. Only lines
        queued afterwards are split with the new length.
        """
        user_len = WORST_USER if user is None else len(user.encode("utf-8"))
        host_len = WORST_HOST if host is None else len(host.encode("utf-8"))
        self._prefix_len = len(nick.encode("utf-8")) + 1 + user_len + 1 + host_len

    # -- enqueueing -------------------------------------------------------

    def privmsg(
        self,
        target: str,
        text: str | list[str],
        priority: Priority = "server",
        *,
        on_sent: SentCallback | None = None,
        owner: object = None,
    ) -> int:
        """Queue *text* to *target* as PRIVMSG lines; return how many were queued.

        A ``str`` is one message: CR, LF and CRLF in it become a space and NUL
        is dropped, so it is one line unless it is too long for one. A
        ``list`` is several lines on purpose, each one message (blank ones
        are skipped). Lines that do not fit a full queue are counted for a
        summary line instead. *on_sent* is called with the line (from the
        sending task, synchronously) once the last queued line of this
        message has been sent; never if nothing was queued. *owner* tags the
        lines for ``withdraw()``. Raises ``ValueError`` for a bad target or
        priority.
        """
        return self._message("PRIVMSG", target, text, priority, on_sent, owner)

    def notice(
        self,
        target: str,
        text: str | list[str],
        priority: Priority = "server",
        *,
        on_sent: SentCallback | None = None,
        owner: object = None,
    ) -> int:
        """Like ``privmsg`` but as NOTICE lines."""
        return self._message("NOTICE", target, text, priority, on_sent, owner)

    def raw(self, line: str, priority: Priority = "server") -> bool:
        """Queue one raw command (no CRLF needed); return whether it was queued.

        A trailing line ending is removed; other CR/LF become spaces and NUL is
        removed. Refused (``False``) when empty, longer than ``max_line_bytes``
        with CRLF, or when the queue is full. The relayed prefix is the
        caller's concern for raw lines.
        """
        queue = self._queue(priority)
        clean = sanitize(line.removesuffix("\n").removesuffix("\r"))
        size = len(clean.encode("utf-8")) + 2
        if not clean.strip() or size > self._max_line_bytes:
            self._stats["refused"] += 1
            return False
        if len(queue) >= self._max_queue:
            self._stats["dropped"] += 1
            return False
        words = clean.split(" ", 2)
        self._push(_Entry(clean, priority, self._cost(size), words[1] if len(words) > 1 else ""))
        return True

    def _message(
        self,
        command: str,
        target: str,
        text: str | list[str],
        priority: Priority,
        on_sent: SentCallback | None = None,
        owner: object = None,
    ) -> int:
        queue = self._queue(priority)
        check_target(target)
        # Message text never carries a configured secret (raw lines may: a
        # channel key in JOIN), whoever produced it: a script, a job, a formatter.
        redact = self.redactor.redact
        split = self._prefix_len, command, target
        if isinstance(text, str):
            chunks = split_message(*split, redact(text), self._max_line_bytes)
        else:
            chunks = [
                chunk
                for line in text
                for chunk in split_message(*split, redact(line), self._max_line_bytes)
            ]
        room = max(0, self._max_queue - len(queue))
        fits = chunks[:room]
        for i, chunk in enumerate(fits):
            line = f"{command} {target} :{chunk}"
            callback = on_sent if i == len(fits) - 1 else None
            cost = self._cost(len(line.encode("utf-8")) + 2)
            self._push(_Entry(line, priority, cost, target, callback, owner))
        left = len(chunks) - room
        if left > 0:
            pending = self._overflow[priority].setdefault(target, _Overflow(0, command))
            pending.count += left
            if command == "PRIVMSG":  # a summary of mixed lines goes as PRIVMSG
                pending.command = command
            self._stats["grouped"] += left
        return min(room, len(chunks))

    def _queue(self, priority: Priority) -> deque[_Entry]:
        try:
            return self._queues[priority]
        except KeyError:
            raise ValueError(
                f"unknown output priority {priority!r}; use one of {', '.join(PRIORITIES)}"
            ) from None

    def _push(self, entry: _Entry) -> None:
        self._queues[entry.priority].append(entry)
        self._stats["queued"] += 1
        if self._wakeup is not None:
            self._wakeup.set()

    def _cost(self, wire_bytes: int) -> float:
        return max(1.0, wire_bytes / self._bytes_per_token)

    # -- sans-I/O core ----------------------------------------------------

    def _head(self) -> tuple[_Entry, int] | None:
        """The next line to send and its index in its lane (0 but for replies)."""
        q = self._queues
        if q["mode"]:
            return q["mode"][0], 0
        if q["alert"] and (not q["server"] or self._alert_streak < ALERT_SHARE):
            return q["alert"][0], 0
        if q["server"]:
            i = self._server_head()
            return q["server"][i], i
        for priority in ("alert", "help"):
            if q[priority]:
                return q[priority][0], 0
        return None

    def _server_head(self) -> int:
        """Index of the next reply: the oldest line of the target served
        longest ago.  Targets take turns, so one asker's long answer (or a
        flooder's) does not hold up everyone else's; each target's lines keep
        their order."""
        best, best_turn = 0, None
        seen: set[str] = set()
        for i, entry in enumerate(self._queues["server"]):
            target = entry.target
            if target in seen:
                continue
            seen.add(target)
            turn = self._served.get(target, -1)
            if best_turn is None or turn < best_turn:
                best, best_turn = i, turn
                if turn < 0:
                    break  # never served (or put back): nothing goes before it
        return best

    def _tokens_now(self) -> tuple[float, float]:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        return min(self._burst, self._tokens + elapsed * self._rate), now

    def next_delay(self) -> float | None:
        """Seconds until ``pop()`` will give a line; 0.0 if now; None if nothing is queued."""
        picked = self._head()
        if picked is None:
            return None
        cost = picked[0].cost
        tokens, _ = self._tokens_now()
        if tokens + _EPSILON >= cost:
            return 0.0
        return (cost - tokens) / self._rate

    def pop(self) -> str | None:
        """Take the next line (without CRLF) if a token is available now, else None.

        Consumes the tokens and counts the line as sent: the caller sends it.
        """
        entry = self._take()
        if entry is None:
            return None
        self._sent(entry)
        return entry.line

    def _take(self) -> _Entry | None:
        picked = self._head()
        if picked is None:
            return None
        head, index = picked
        tokens, now = self._tokens_now()
        if tokens + _EPSILON < head.cost:
            return None
        self._tokens = tokens - head.cost
        self._stamp = now
        queue = self._queues[head.priority]
        del queue[index]  # the scan _head() made for a reply is not made twice
        if head.priority == "server":
            self._serial += 1
            self._served[head.target] = self._serial
            if not queue:
                self._served.clear()  # bounded: nobody waits, nobody has had a turn
        if head.priority == "alert" and self._queues["server"]:
            self._alert_streak += 1
        elif head.priority in ("alert", "server"):
            self._alert_streak = 0
        self._flush_overflow(head.priority)
        return head

    def _flush_overflow(self, priority: Priority) -> None:
        """Give freed slots to summary lines for targets whose lines did not fit."""
        pending = self._overflow[priority]
        queue = self._queues[priority]
        while pending and len(queue) < self._max_queue:
            target = next(iter(pending))
            overflow = pending.pop(target)
            noun = "line was" if overflow.count == 1 else "lines were"
            text = f"[output] {overflow.count} more {noun} not sent: queue full"
            try:
                chunk = split_message(
                    self._prefix_len, overflow.command, target, text, self._max_line_bytes
                )[0]
            except ValueError:  # our prefix grew since the target was checked
                continue
            line = f"{overflow.command} {target} :{chunk}"
            cost = self._cost(len(line.encode("utf-8")) + 2)
            self._push(_Entry(line, priority, cost, target))
            self._stats["summaries"] += 1

    def withdraw(self, owner: object) -> int:
        """Take every queued line tagged *owner* back out; return how many.

        Their callbacks never fire; they do not count as sent.
        """
        taken = 0
        for queue in self._queues.values():
            keep = [e for e in queue if e.owner is not owner or owner is None]
            taken += len(queue) - len(keep)
            queue.clear()
            queue.extend(keep)
        return taken

    def add_stop_hook(self, hook: Callable[[], None]) -> None:
        """Call *hook* (synchronously) each time ``run()`` ends: the connection
        it sent to is gone, and the next ``run()`` has not started yet."""
        self._stop_hooks.append(hook)

    def drain_time(self, extra_lines: int = 0, priority: Priority | None = None) -> float:
        """Seconds until every queued line, and *extra_lines* more one-token
        lines, would have been sent at the paced rate (0.0 when the tokens
        available now cover them).

        With a *priority*, only what goes before (or with) a line of that
        lane counts: the lanes above it, its own, and for ``alert`` the
        replies its fair share lets in between.
        """
        if priority is None:
            lanes: tuple[Priority, ...] = PRIORITIES
        else:
            self._queue(priority)  # validates
            lanes = PRIORITIES[: PRIORITIES.index(priority) + 1]
        queued = sum(e.cost for p in lanes for e in self._queues[p]) + extra_lines
        if priority == "alert" and self._queues["server"]:
            ahead = len(self._queues["alert"]) + extra_lines
            let_in = min(len(self._queues["server"]), math.ceil(ahead / ALERT_SHARE))
            queued += sum(e.cost for e in list(self._queues["server"])[:let_in])
        tokens, _ = self._tokens_now()
        return max(0.0, queued - tokens) / self._rate

    def charge(self, wire_bytes: int) -> None:
        """Take the cost of a line written outside the queues (a PONG, a
        registration line) from the bucket: the server counts it too.  The
        bucket may go below zero; the next queued line then waits longer."""
        tokens, now = self._tokens_now()
        self._tokens = max(-self._burst, tokens - self._cost(wire_bytes))
        self._stamp = now

    def text_budget(self, target: str, command: str = "PRIVMSG") -> int:
        """Bytes of text that fit one *command* line to *target* (as split now)."""
        return text_budget(self._prefix_len, command, target, self._max_line_bytes)

    @property
    def rate(self) -> float:
        """Lines (tokens) per second once the burst is spent."""
        return self._rate

    @property
    def burst(self) -> int:
        """Tokens the bucket holds when full."""
        return int(self._burst)

    def reset_budget(self) -> None:
        """Refill the bucket: call on (re)connect, the server's budget starts full."""
        self._tokens = self._burst
        self._stamp = self._clock()

    # -- I/O adapter ------------------------------------------------------

    async def run(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Send queued lines through *send* at the paced rate until cancelled.

        *send* gets one line without CRLF. If it raises ``OSError`` (including
        ``ConnectionError``) the line goes back to the head of its queue and
        ``run()`` returns; call it again after reconnecting. Only one ``run()``
        may be active at a time.
        """
        if self._running:
            raise RuntimeError("OutputQueue.run() is already running")
        self._running = True
        self._wakeup = wakeup = asyncio.Event()
        try:
            while True:
                entry = self._take()
                if entry is None:
                    await self._wait(wakeup)
                    continue
                try:
                    await send(entry.line)
                except OSError:
                    self._requeue(entry)
                    return
                except asyncio.CancelledError:
                    # Most likely the connection died mid-write: keep the line.
                    self._requeue(entry)
                    raise
                self._sent(entry)
        finally:
            self._running = False
            self._wakeup = None
            for hook in list(self._stop_hooks):
                try:
                    hook()
                except Exception:
                    log.exception("output stop hook failed")

    def _sent(self, entry: _Entry) -> None:
        """Count a line as sent; run its callback (a failure must not stop the sender)."""
        self._stats["sent"] += 1
        if entry.on_sent is None:
            return
        try:
            entry.on_sent(entry.line)
        except Exception:
            log.exception("on_sent callback for %r failed", entry.line[:60])

    def _requeue(self, entry: _Entry) -> None:
        # May leave the queue one over max_queue: the line in flight is never dropped.
        self._queues[entry.priority].appendleft(entry)
        if entry.priority == "server":
            self._served[entry.target] = -1  # its turn again, first
        self._stats["requeued"] += 1

    async def _wait(self, wakeup: asyncio.Event) -> None:
        """Sleep until the next token is due or a line is queued, whichever is first."""
        wakeup.clear()
        delay = self.next_delay()
        if delay is None:
            await wakeup.wait()
        elif delay > 0:
            try:
                async with asyncio.timeout(delay):
                    await wakeup.wait()
            except TimeoutError:
                pass

    # -- measurement ------------------------------------------------------

    def depths(self) -> dict[str, int]:
        """Lines waiting in each lane: ``{"mode": n, "alert": n, "server": n, "help": n}``."""
        return {p: len(self._queues[p]) for p in PRIORITIES}

    def stats(self) -> dict[str, int]:
        """Counters since creation.

        ``queued`` lines accepted (including summaries), ``sent`` lines handed
        to the server, ``grouped`` lines that did not fit a full queue and were
        counted for a summary, ``summaries`` summary lines queued,
        ``pending_grouped`` grouped lines whose summary is not queued yet,
        ``refused`` raw lines that were empty or too long, ``dropped`` raw lines
        refused for a full queue, ``requeued`` lines put back after a failed
        send.
        """
        pending = sum(o.count for per in self._overflow.values() for o in per.values())
        return {**self._stats, "pending_grouped": pending}
