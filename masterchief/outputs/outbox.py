"""The durable outbox: announcements wait in the store until IRC has them.

How this works
--------------
``announce()`` writes the announcement to the store (table ``outbox``) and
only then returns, so a ``kill -9`` after it returned loses nothing: the next
start loads every row left in the table. It also keeps the row in memory, per
target in id order, and wakes the feeder.

The feeder (``run()``, a task in the App's TaskGroup) hands announcements to
the paced ``OutputQueue``'s ``alert`` lane while IRC is connected, and only a
little at a time: as long as the queue would send what goes before them
(the mode and alert lanes, and the replies the alert lane's fair share lets
in; command replies waiting in the ``server`` lane do not count) within
``lead`` seconds (about one token interval). The rest waits here, where it
can still be folded. Targets take turns, one unit each. A unit is what one
``privmsg`` carries:

1. all rows of a target older than ``expire_after_s``: one line, "[delayed]
   42 older announcements expired while I was away: 30 github, 12 alerts
   (oldest 2h ago)" (named by ``meta["source"]``, else the kind);
2. when the row at the head is an alert and the target's backlog would take
   longer than ``max_backlog_s`` to send at the pacer's rate (what the queue
   holds plus this target's fair share of the rows waiting here, targets
   taking turns): every waiting alert of that target, folded by
   ``storm.fold()`` into a few summary lines, in the place of the first;
3. else the row at the head, as written.

A unit older than ``delayed_after_s`` when handed over starts with
``[delayed 3m] `` (s, m, h, d; a summary counts its oldest row).

When is a row delivered? Written to the socket is not enough: a server with
fakelag holds lines in its receive queue for seconds and drops them when the
connection dies (seen: a ``kill -9`` lost the 3 lines InspIRCd was holding).
So a unit is *confirmed* when the server echoes its last line back
(IRCv3 echo-message; the App binds ``echo_handler()`` to ``raw PRIVMSG``) or
echoes a later line (it handles a connection's lines in order), or, on a
server without echo-message, once ``confirm_after_s`` passed with the
connection up. Only confirmed rows are deleted from the store. When the
output task stops (the connection ended), the units written but not
confirmed and those still waiting in the output queue (withdrawn from it)
go back here, in id order, and are sent again after reconnecting, with the
delayed marker: ordered, at-least-once delivery. A line can repeat when the
server handled it but the bot died or the connection dropped before the
echo arrived.

Order: per target, rows go out in id order, except that a storm summary takes
the place of the first alert it folds (later alerts move up past plain rows).

Repeats from upstream: a webhook intake that dispatches a delivery again
after a crash (its "done" mark was not yet on disk) announces the same lines
again. When ``meta["delivery"]`` names the delivery, an announcement equal to
one still waiting here (same target, text and delivery) is not stored twice.

Targets: a row names a ``Target`` (``targets.py``), stored as its text,
``irc:#ops``; a row written before targets existed (``#ops``) is an IRC
target. IRC targets are fed to the pacer as above. A target of another
transport (a console, a test transport: ``add_transport``) is handed to
that transport whole, in id order, whenever it is connected, and confirmed
once delivered: there is no server to echo it and no flood budget to fold for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..bindings.event import Event
from ..bindings.masks import irc_lower
from ..irc import storm
from ..irc.pacer import OutputQueue, sanitize
from ..store.api import OutboxRecord, OutboxStore, StoreError
from .targets import IRC, Target, Transport, Transports

__all__ = ["Outbox", "delayed_prefix", "expired_line", "human_age"]

log = logging.getLogger("masterchief.outbox")

_RETRY_S = 5.0  # after a store failure in the feeder
_EARLY_S = 2.0  # how long an echo may wait for the on_sent of its line


def human_age(seconds: float) -> str:
    """``45s``, ``3m``, ``2h``, ``3d``: whole units, rounded down."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def delayed_prefix(age: float, after: float) -> str:
    """``[delayed 3m] `` for what waited longer than *after* seconds, else ``""``."""
    return f"[delayed {human_age(age)}] " if age > after else ""


def _category(rec: OutboxRecord) -> str:
    meta = _meta(rec)
    source = meta.get("source") if meta else None
    if isinstance(source, str) and source.strip():
        return "".join(source.split())
    return {"alert": "alerts", "text": "other"}.get(rec.kind, rec.kind)


def expired_line(records: Sequence[OutboxRecord], now: float) -> str:
    """The one line that stands for announcements that expired unsent."""
    n = len(records)
    counts = Counter(_category(r) for r in records)
    kinds = ", ".join(f"{c} {k}" for k, c in sorted(counts.items(), key=lambda kc: (-kc[1], kc[0])))
    oldest = human_age(now - min(r.created_at for r in records))
    noun = "announcement" if n == 1 else "announcements"
    return f"[delayed] {n} older {noun} expired while I was away: {kinds} (oldest {oldest} ago)"


def _meta(rec: OutboxRecord) -> dict[str, Any] | None:
    if not rec.meta:
        return None
    try:
        value = json.loads(rec.meta)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


_IRC_PREFIX = f"{IRC}:"


def _irc_name(target: str) -> str:
    """The channel or nick of a stored IRC target (``irc:#ops`` -> ``#ops``)."""
    return target.removeprefix(_IRC_PREFIX)


@dataclass(slots=True, eq=False)
class _Unit:
    """Rows handed to the output queue as one message."""

    target: str
    records: list[OutboxRecord]
    line: str = ""  # its last wire line, once written
    sent_at: float = 0.0  # monotonic, once written


class Outbox:
    """Durable announcements for IRC; see the module doc.

    *connected* is the IRC connection's state (None: always connected, for
    tests); *clock* gives wall-clock seconds (rows keep their age across
    restarts), *monotonic* the time for confirmation deadlines.
    """

    def __init__(
        self,
        store: OutboxStore,
        output: OutputQueue,
        *,
        connected: asyncio.Event | None = None,
        expire_after_s: float = 1800.0,
        delayed_after_s: float = 60.0,
        max_backlog_s: float = 10.0,
        confirm_after_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        transports: Transports | None = None,
    ) -> None:
        self._store = store
        self._output = output
        self._connected = connected
        self._expire_after_s = expire_after_s
        self._delayed_after_s = delayed_after_s
        self._max_backlog_s = max_backlog_s
        self._confirm_after_s = confirm_after_s
        self._clock = clock
        self._monotonic = monotonic
        self._lead = 0.0
        self._max_summary_lines = 0
        self._pace()
        self._pending: dict[str, deque[OutboxRecord]] = {}
        self._turns: deque[str] = deque()  # targets with pending rows, in turn order
        self._others: deque[str] = deque()  # the same, of other transports than IRC
        self._transports = transports if transports is not None else Transports()
        self._known: set[int] = set()  # ids pending, handed over or unconfirmed
        self._handed: deque[_Unit] = deque()  # in the output queue, not yet written
        self._unconfirmed: deque[_Unit] = deque()  # written, in order
        self._confirmed: list[int] = []  # ids to delete from the store
        # Own echoes that matched nothing yet (target, text, when): one can
        # overtake its on_sent when the write waited for the socket to drain.
        self._early: deque[tuple[str, str, float]] = deque(maxlen=64)
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self._deliveries: dict[int, tuple[str, str, str]] = {}  # id -> (target, delivery, text)
        self._delivery_keys: set[tuple[str, str, str]] = set()
        self._wakeup = asyncio.Event()
        self._stats: dict[str, int] = dict.fromkeys(
            ("announced", "repeats", "sent", "confirmed", "echoed", "requeued", "delayed",
             "summaries", "folded", "expired", "deleted"),
            0,
        )  # fmt: skip
        output.add_stop_hook(self._connection_ended)

    # -- intake ------------------------------------------------------------------

    def add_transport(self, transport: Transport) -> None:
        """Deliver the targets of ``transport.name`` through ``transport``."""
        self._transports.add(transport)
        self._wakeup.set()

    def _pace(self) -> None:
        rate = self._output.rate
        # Hand over only what the pacer sends within this many seconds.
        self._lead = max(1.0 / rate, 0.05)
        # A summary stays within half the backlog limit (1..10 lines).
        self._max_summary_lines = max(1, min(10, math.floor(self._max_backlog_s * rate / 2)))

    def configure(
        self, *, expire_after_s: float, delayed_after_s: float, max_backlog_s: float
    ) -> None:
        """New limits (``!rehash``); they apply to rows already waiting too.
        Call after the pacer's own ``configure``: the lead follows its rate."""
        self._expire_after_s = expire_after_s
        self._delayed_after_s = delayed_after_s
        self._max_backlog_s = max_backlog_s
        self._pace()

    async def announce(
        self,
        target: Target | str,
        text: str,
        *,
        kind: str = "text",
        fold_key: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue *text* for *target* durably: it is in the store when this returns.

        ``kind="alert"`` announcements may be folded into storm summaries;
        *meta* (JSON-able) says what they carry (see ``storm.notes_from_meta``).
        ``meta["source"]`` names the sender in expiry summaries,
        ``meta["delivery"]`` the upstream delivery (a repeat of it while the
        first is still waiting is dropped). Raises ``ValueError`` for a bad
        target or empty text, ``StoreError`` when the store cannot take it
        (the caller should fail its request).
        """
        parsed = target if isinstance(target, Target) else Target.parse(target)
        if not parsed.is_irc and parsed.transport not in self._transports:
            raise ValueError(f"no transport {parsed.transport!r} for announcements to {parsed}")
        target = str(parsed)
        if not sanitize(text).strip():
            raise ValueError("announcement text is empty")
        await self._ensure_loaded()
        delivery = meta.get("delivery") if meta else None
        if delivery is not None and (target, str(delivery), text) in self._delivery_keys:
            self._stats["repeats"] += 1
            log.info("outbox: delivery %s announced again to %s: kept once", delivery, target)
            return
        meta_json = json.dumps(dict(meta), default=str) if meta else None
        created = self._clock()
        rid = await self._store.outbox_add(
            target, text, kind=kind, fold_key=fold_key, meta=meta_json, created_at=created
        )
        self._stats["announced"] += 1
        self._queue(OutboxRecord(rid, target, text, kind, fold_key, meta_json, created), delivery)
        self._wakeup.set()

    def _add(self, rec: OutboxRecord) -> None:
        """Queue a row read from the store."""
        where = str(Target.parse(rec.target))
        if where != rec.target:  # a row from before targets: "#ops" is "irc:#ops"
            rec = dataclasses.replace(rec, target=where)
        has = rec.meta is not None and '"delivery"' in rec.meta
        self._queue(rec, (_meta(rec) or {}).get("delivery") if has else None)

    def _queue(self, rec: OutboxRecord, delivery: object) -> None:
        """Queue ``rec`` (target canonical, ``delivery`` its meta's: not parsed again)."""
        if rec.id in self._known:
            return
        self._known.add(rec.id)
        if delivery is not None and rec.id not in self._deliveries:
            key = (rec.target, str(delivery), rec.text)
            self._deliveries[rec.id] = key
            self._delivery_keys.add(key)
        where = rec.target
        queue = self._pending.setdefault(where, deque())
        if not queue:
            (self._turns if where.startswith(_IRC_PREFIX) else self._others).append(where)
        if queue and queue[-1].id > rec.id:  # requeued, or announce() calls resumed out of order
            items = sorted([*queue, rec], key=lambda r: r.id)
            queue.clear()
            queue.extend(items)
        else:
            queue.append(rec)

    async def load(self) -> int:
        """Take in what earlier runs left in the store; return how many rows."""
        rows = await self._store.outbox_pending(limit=10_000_000)
        self._loaded = True
        for rec in rows:
            self._add(rec)
        if rows:
            log.info("outbox: %d announcements waiting from before", len(rows))
        return len(rows)

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if not self._loaded:
                await self.load()

    # -- confirmation ------------------------------------------------------------

    def echo(self, target: str, text: str) -> bool:
        """The server echoed our PRIVMSG *text* to *target* (a channel or nick):
        confirm its unit and every unit written before it. Whether it was one of ours."""
        want = irc_lower(_IRC_PREFIX + target, "rfc1459")
        for k, unit in enumerate(self._unconfirmed):
            if irc_lower(unit.target, "rfc1459") == want and unit.line.endswith(" :" + text):
                self._confirm([self._unconfirmed.popleft() for _ in range(k + 1)])
                self._stats["echoed"] += 1
                self._wakeup.set()
                return True
        if any(irc_lower(u.target, "rfc1459") == want for u in self._handed):
            self._early.append((want, text, self._monotonic()))
        return False

    def echo_handler(self, own_nick: Callable[[], str | None]) -> Callable[[Event], None]:
        """A ``raw PRIVMSG`` binding that feeds our own echoes to ``echo()``."""

        def on_privmsg(ev: Event) -> None:
            me = own_nick()
            if me is None or ev.nick is None:
                return
            if irc_lower(ev.nick, "rfc1459") != irc_lower(me, "rfc1459"):
                return
            target, _, text = ev.text.partition(" ")
            self.echo(target, text)

        return on_privmsg

    def _confirm(self, units: Iterable[_Unit]) -> None:
        for unit in units:
            self._confirmed.extend(r.id for r in unit.records)
            self._stats["confirmed"] += 1

    def _on_sent(self, unit: _Unit, line: str) -> None:
        with contextlib.suppress(ValueError):
            self._handed.remove(unit)
        unit.line = line
        unit.sent_at = self._monotonic()
        self._unconfirmed.append(unit)
        self._stats["sent"] += 1
        self._wakeup.set()
        _, _, text = line.partition(" :")
        want = irc_lower(unit.target, "rfc1459")
        for early in list(self._early):
            if unit.sent_at - early[2] > _EARLY_S:
                self._early.remove(early)  # a line of a longer message, not a last one
            elif early[:2] == (want, text):
                self._early.remove(early)
                self.echo(_irc_name(unit.target), text)
                break

    def _connection_ended(self) -> None:
        """The output task stopped: what the server may not have handled comes back."""
        self._output.withdraw(self)
        units = [*self._unconfirmed, *self._handed]
        self._unconfirmed.clear()
        self._handed.clear()
        self._early.clear()
        for unit in units:
            for rec in unit.records:
                self._known.discard(rec.id)
                self._queue(rec, None)  # (its delivery key stays registered)
        if units:
            self._stats["requeued"] += len(units)
            log.info("outbox: %d unconfirmed announcements will be sent again", len(units))
        self._wakeup.set()

    # -- feeding -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected is None or self._connected.is_set()

    async def step(self) -> float | None:
        """Confirm by time, delete what is confirmed, hand over what fits.

        Returns seconds until something is due (a confirmation deadline, room
        in the pacer when nothing of ours will wake the feeder), else None.
        ``run()`` calls it in a loop; tests call it directly.
        """
        await self._ensure_loaded()
        now = self._monotonic()
        due = [u for u in self._unconfirmed if now - u.sent_at >= self._confirm_after_s]
        if due:
            self._confirm([self._unconfirmed.popleft() for _ in due])
        try:
            await self._delete_confirmed()
        except StoreError as exc:  # they were delivered; forget them later
            log.warning("outbox: cannot delete delivered announcements yet: %s", exc)
        delays: list[float] = []
        if self._unconfirmed:
            delays.append(self._unconfirmed[0].sent_at + self._confirm_after_s - now)
        wait = self._feed()
        if wait is not None:
            delays.append(wait)
        return max(0.0, min(delays)) if delays else None

    async def run(self) -> None:
        """Feed IRC until cancelled (a task in the App's TaskGroup).  Scripts
        reach it through ``masterchief.announce`` (the runtime's script API)."""
        try:
            while True:
                self._wakeup.clear()
                try:
                    delay = await self.step()
                except StoreError as exc:  # e.g. the disk is full: keep the bot up, retry
                    log.error("outbox: the store failed, retrying in %.0fs: %s", _RETRY_S, exc)
                    delay = _RETRY_S
                await self._sleep(delay)
        finally:
            with contextlib.suppress(StoreError, asyncio.CancelledError):
                await self._delete_confirmed()

    async def _sleep(self, delay: float | None) -> None:
        """Until woken (announce, a line sent or echoed, a connect) or *delay* passed."""
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(self._wakeup.wait())]
        if self._connected is not None and not self._connected.is_set():
            waits.append(asyncio.create_task(self._connected.wait()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waits:
                t.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _delete_confirmed(self) -> None:
        if not self._confirmed:
            return
        ids, self._confirmed = self._confirmed, []
        try:
            await self._store.outbox_remove(ids)
        except BaseException:
            self._confirmed[:0] = ids  # try again next time
            raise
        self._known.difference_update(ids)
        for rid in ids:
            key = self._deliveries.pop(rid, None)
            if key is not None:
                self._delivery_keys.discard(key)
        self._stats["deleted"] += len(ids)

    def _feed(self) -> float | None:
        for _ in range(len(self._others)):
            target = self._others.popleft()
            if not self._hand_elsewhere(target):
                self._others.append(target)  # its transport is not connected
        if not self.connected:
            return None
        while self._turns:
            wait = self._output.drain_time(priority="alert") - self._lead
            if wait >= 0:
                # A line of ours going out wakes us; if none is queued, the tokens will.
                return None if self._handed else wait + 1e-3
            target = self._turns.popleft()
            queue = self._pending[target]
            self._hand_over(target, queue)
            if queue:
                self._turns.append(target)
            else:
                del self._pending[target]
        return None

    def _hand_elsewhere(self, target: str) -> bool:
        """Hand every row of a target of another transport to it, confirmed at
        once; False (nothing done) while that transport is not connected."""
        parsed = Target.parse(target)
        transport = self._transports.get(parsed.transport)
        if transport is not None and not transport.connected:
            return False
        records = list(self._pending.pop(target))
        now = self._clock()
        for rec in records:
            text = self._prefix(now, [rec]) + rec.text
            try:
                if transport is None:  # gone since it was announced (a restart)
                    raise LookupError(f"no transport {parsed.transport!r}")
                transport.deliver(parsed.name, text)
            except Exception:  # one transport's failure must not stop the others
                log.exception("outbox: dropped an announcement for %s", target)
            self._stats["sent"] += 1
        self._confirm([_Unit(target, records)])
        return True

    def _hand_over(self, target: str, queue: deque[OutboxRecord]) -> None:
        now = self._clock()
        expired = [r for r in queue if now - r.created_at > self._expire_after_s]
        if expired:
            self._remove(queue, expired)
            self._stats["expired"] += len(expired)
            self._send(target, expired_line(expired, now), expired)
            return
        head = queue[0]
        if head.kind == "alert" and self._backlog_s(target) > self._max_backlog_s:
            alerts = [r for r in queue if r.kind == "alert"]
            self._remove(queue, alerts)
            prefix = self._prefix(now, alerts)
            notes = [
                note
                for r in alerts
                for note in storm.notes_from_meta(_meta(r), fold_key=r.fold_key, ref=str(r.id))
            ]
            lines = storm.fold(
                notes,
                max_bytes=self._output.text_budget(_irc_name(target)) - len(prefix.encode("utf-8")),
                max_lines=self._max_summary_lines,
            )
            self._stats["summaries"] += 1
            self._stats["folded"] += len(alerts)
            log.info(
                "outbox: %d alerts for %s folded into %d lines", len(alerts), target, len(lines)
            )
            self._send(target, [prefix + line for line in lines], alerts)
            return
        queue.popleft()
        self._send(target, self._prefix(now, [head]) + head.text, [head])

    def _prefix(self, now: float, records: Iterable[OutboxRecord]) -> str:
        age = now - min(r.created_at for r in records)
        prefix = delayed_prefix(age, self._delayed_after_s)
        if prefix:
            self._stats["delayed"] += 1
        return prefix

    @staticmethod
    def _remove(queue: deque[OutboxRecord], records: Sequence[OutboxRecord]) -> None:
        gone = {r.id for r in records}
        keep = [r for r in queue if r.id not in gone]
        queue.clear()
        queue.extend(keep)

    def _backlog_s(self, target: str) -> float:
        """Seconds until *target*'s waiting rows would all be sent one per line."""
        mine = len(self._pending.get(target, ()))
        share = sum(min(len(q), mine) for q in self._pending.values())
        return self._output.drain_time(share, priority="alert")

    def _send(self, target: str, text: str | list[str], records: Sequence[OutboxRecord]) -> None:
        """Hand *text* to the output queue (a list: several lines, a summary)."""
        unit = _Unit(target, list(records))
        self._handed.append(unit)
        try:
            queued = self._output.privmsg(
                _irc_name(target),
                text,
                "alert",
                on_sent=lambda line: self._on_sent(unit, line),
                owner=self,
            )
        except ValueError as exc:  # cannot ever be sent: do not block the others
            log.error("outbox: dropped an announcement for %s: %s", target, exc)
            queued = 0
        if queued == 0:  # nothing to send (only line breaks, or refused): done with it
            self._handed.remove(unit)
            self._confirm([unit])

    # -- measurement -------------------------------------------------------------

    def depth(self) -> int:
        """Announcements waiting to be handed to IRC."""
        return sum(len(q) for q in self._pending.values())

    def stats(self) -> dict[str, int]:
        """Counters since start: ``announced`` rows; units (lines or
        summaries) ``sent`` to the socket, ``confirmed`` (``echoed`` by the
        server, or by time) and ``requeued`` after a connection ended;
        ``delayed`` units sent with the marker; ``summaries`` storm summaries
        and the alerts ``folded`` into them; ``expired`` rows summarised;
        ``deleted`` rows. ``pending``, ``in_flight`` (handed over or sent, not
        confirmed) now."""
        in_flight = len(self._handed) + len(self._unconfirmed)
        return {**self._stats, "pending": self.depth(), "in_flight": in_flight}
