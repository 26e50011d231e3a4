"""The event log: every Event that matters, stored for audit and replay.

How this works.  The dispatcher calls ``EventLog.record(ev, outcome)`` once
per processed Event (its ``recorder`` hook).  ``record`` decides with
``worth_logging`` and appends ``(ev, outcome)`` to a bounded in-memory
buffer -- nothing else happens on the dispatcher's path.  ``EventLog.run``
group-commits the buffer (one transaction per 500 rows, every ~100 ms):
each Event becomes an ``EventLogRecord`` whose origin and payload are JSON,
redacted with the process redactor and capped at ``max_payload_bytes``.
A full buffer drops (and counts) new rows rather than slow the dispatcher;
a failed write keeps the rows for the next try.  Rows older than
``events.retention_days`` are pruned at start and hourly.

What is stored as the payload is ``{"payload": ..., "text": ..., "tags":
...}`` (text and tags only when present).  A payload that cannot be JSON is
described, never iterated (a CSV row stream stays unread for its handler).

Replay: ``masterchief events replay ID`` writes a ``replay_requests`` row;
the bot's ``ReplayWorker`` polls for them, rebuilds the Event from the log
(a new id, ``replay_of`` set to the original) and dispatches it, and the
new dispatch is logged too.  A replay uses the *stored* payload, which is
redacted: a secret that was in the original payload is ``***`` in the
replay.  An Event whose payload was truncated when logged is not replayed.
``explain`` answers the dry run: which bindings would fire for an Event
under a given binding table, without running anything.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import re
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import PurePath
from typing import Any, Protocol

from masterchief.bindings.dispatcher import (
    FAILED,
    FIRED,
    REFUSED,
    Dispatcher,
    Principal,
    Resolver,
    permitted,
)
from masterchief.bindings.event import Event, ReplySink, new_ref
from masterchief.bindings.masks import compile_mask
from masterchief.bindings.registry import Snapshot
from masterchief.config.engine import EventsConfig
from masterchief.config.secrets import MASK, REDACTOR, Redactor, Secret
from masterchief.errors import UserError
from masterchief.store.sqlite.store import EventLogRecord, ReplayRequest, Store, StoreError

__all__ = [
    "EventLog",
    "EventLogStats",
    "ReplayError",
    "ReplayWorker",
    "explain",
    "format_record",
    "list_events",
    "offline_resolver",
    "origin_summary",
    "parse_since",
    "rebuild",
    "request_replays",
    "to_record",
    "truncated",
    "worth_logging",
]

log = logging.getLogger("masterchief.eventlog")

_INGESTION = frozenset({"webhook", "rest", "file", "log", "stream", "db", "metric"})
# IRC chatter and clock ticks: never logged unless a flag check refused.
_CHATTER = frozenset(
    {
        "raw",
        "join",
        "part",
        "sign",
        "nick",
        "mode",
        "kick",
        "topc",
        "ctcp",
        "ctcr",
        "account",
        "time",
        "cron",
        "evnt",
    }
)
_INTERNAL_KEYS = frozenset({"rehash"})
_NOT_LOGGED_DEPLOY = frozenset({"deploy.progress"})  # one per output line: too many


def worth_logging(ev: Event, outcome: str) -> bool:
    """Whether ``ev``, processed with ``outcome``, goes into the event log.

    - replays (``replay_of`` set) and refusals: always;
    - commands (pub, msg, dcc): when a binding matched (fired, failed or refused);
    - ingestion (webhook, rest, file, log, stream, db, metric): always;
    - ``event``: keys ``deploy.*`` (except ``deploy.progress``) and ``rehash``;
    - IRC chatter (raw, join, part, ...) and time/cron ticks: never;
    - the rest (pubm, msgm, notc, partyline and bot-link types): when a binding fired.
    """
    if ev.replay_of is not None or outcome == REFUSED:
        return True
    kind = ev.type
    if kind in _INGESTION:
        return True
    if kind == "event":
        key = ev.key
        return key in _INTERNAL_KEYS or (
            key.startswith("deploy.") and key not in _NOT_LOGGED_DEPLOY
        )
    if kind in _CHATTER:
        return False
    return outcome in (FIRED, FAILED)


# --- serialisation ---------------------------------------------------------------

_ORIGIN_FIELDS = ("nick", "uhost", "account", "handle", "channel", "source")


def _default(value: object) -> object:
    """JSON for what ``json`` cannot encode.  Never iterates an iterator."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Iterable):  # an iterator (CSV rows) stays unread
        return f"<{type(value).__name__}: not recorded>"
    return str(value)


def _dumps(value: object) -> str:
    try:
        return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return json.dumps(f"<unserialisable {type(value).__name__}>")


class _JsonRedactor:
    """The process redactor, extended with each secret's JSON-escaped form (a
    secret holding a quote or backslash looks different inside JSON text)."""

    def __init__(self, base: Redactor) -> None:
        self._base = base
        self._seen: frozenset[str] | None = None
        self._json = Redactor()

    def redact(self, text: str) -> str:
        values = self._base.values()
        if values is not self._seen:
            fresh = Redactor()
            for v in values:
                fresh.register(v)
                escaped = json.dumps(v, ensure_ascii=False)[1:-1]
                if escaped != v:
                    fresh.register(escaped)
            self._json, self._seen = fresh, values
        return self._json.redact(text)


_JSON_REDACTORS: weakref.WeakKeyDictionary[Redactor, _JsonRedactor] = weakref.WeakKeyDictionary()


def _json_redactor(redactor: Redactor) -> _JsonRedactor:
    found = _JSON_REDACTORS.get(redactor)
    if found is None:
        found = _JSON_REDACTORS[redactor] = _JsonRedactor(redactor)
    return found


def _cap(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` UTF-8 bytes, else a JSON object that
    says so and keeps as much of the start as fits."""
    size = len(text.encode())
    if size <= limit:
        return text
    budget = max(limit - 100, 0)
    while True:
        head = text.encode()[:budget].decode("utf-8", "ignore")
        doc = json.dumps({"truncated": True, "bytes": size, "head": head}, ensure_ascii=False)
        if len(doc.encode()) <= limit or budget == 0:
            return doc
        budget = max(budget - (len(doc.encode()) - limit) - 16, 0)


def to_record(
    ev: Event,
    outcome: str,
    *,
    redactor: Redactor = REDACTOR,
    max_payload_bytes: int = 65_536,
) -> EventLogRecord:
    """The event log row for ``ev``: origin and payload as redacted JSON
    (each secret ``redactor`` knows, also in its JSON-escaped form)."""
    redact = _json_redactor(redactor).redact
    origin = {f: getattr(ev, f) for f in _ORIGIN_FIELDS if getattr(ev, f) is not None}
    doc: dict[str, object] = {"payload": ev.payload}
    if ev.text:
        doc["text"] = ev.text
    if ev.tags:
        doc["tags"] = dict(ev.tags)
    return EventLogRecord(
        id=ev.id,
        time=ev.time.timestamp(),
        type=ev.type,
        key=redact(ev.key),
        origin=redact(_dumps(origin)),
        payload=_cap(redact(_dumps(doc)), max_payload_bytes),
        outcome=outcome,
        replay_of=ev.replay_of,
    )


class ReplayError(UserError):
    """A logged Event that cannot be dispatched again; the message says why."""


def _loads(text: str, what: str, rec_id: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ReplayError(f"event {rec_id}: its stored {what} is not JSON") from None
    if not isinstance(value, dict):
        raise ReplayError(f"event {rec_id}: its stored {what} is not a JSON object")
    return value


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def truncated(rec: EventLogRecord) -> bool:
    """Whether ``rec``'s payload was cut to ``max_payload_bytes`` when logged."""
    return _loads(rec.payload, "payload", rec.id).get("truncated") is True


def rebuild(
    rec: EventLogRecord, *, sink: ReplySink | None = None, allow_truncated: bool = False
) -> Event:
    """The Event a replay of ``rec`` dispatches: the stored (redacted) data,
    a new id and time, ``replay_of`` = the original's id.  The handle is left
    for the dispatcher to resolve again.  ``ReplayError`` when the payload
    was truncated (unless ``allow_truncated``: then it is None)."""
    origin = _loads(rec.origin, "origin", rec.id)
    doc = _loads(rec.payload, "payload", rec.id)
    if doc.get("truncated") is True:
        if not allow_truncated:
            raise ReplayError(
                f"event {rec.id}: its payload was over events.max_payload_bytes and was "
                "truncated when logged, so it cannot be replayed"
            )
        doc = {}
    tags = doc.get("tags")
    text = doc.get("text")
    return Event(
        type=rec.type,
        key=rec.key,
        nick=_opt_str(origin.get("nick")),
        uhost=_opt_str(origin.get("uhost")),
        account=_opt_str(origin.get("account")),
        channel=_opt_str(origin.get("channel")),
        source=_opt_str(origin.get("source")),
        text=text if isinstance(text, str) else "",
        tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
        payload=doc.get("payload"),
        sink=sink,
        replay_of=rec.id,
    )


# --- the log ---------------------------------------------------------------------


@dataclass(slots=True)
class EventLogStats:
    recorded: int = 0  # accepted into the buffer
    written: int = 0  # rows inserted
    dropped: int = 0  # buffer full
    write_errors: int = 0  # failed group commits (rows kept for the next try)
    pruned: int = 0


class EventLog:
    """The dispatcher's recorder; ``run()`` writes what ``record()`` buffered."""

    def __init__(
        self,
        store: Store,
        config: EventsConfig,
        *,
        redactor: Redactor = REDACTOR,
        max_buffer: int = 100_000,
        batch_rows: int = 500,
        flush_interval_s: float = 0.1,
        prune_interval_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.max_buffer = max_buffer
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.prune_interval_s = prune_interval_s
        self.stats = EventLogStats()
        self._clock = clock
        self._redactor = redactor
        self._buffer: collections.deque[tuple[Event, str]] = collections.deque()
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._dropped_unreported = 0
        self._failing = False
        # Outcomes of replayed Events, for the ReplayWorker (bounded).
        self._replays: collections.OrderedDict[str, str] = collections.OrderedDict()

    # -- the dispatcher's side (synchronous, cheap) -------------------------------

    def record(self, ev: Event, outcome: str) -> None:
        """Buffer ``ev`` if it is worth logging.  Never blocks, never raises."""
        if ev.replay_of is not None:
            self._replays[ev.id] = outcome
            while len(self._replays) > 1000:
                self._replays.popitem(last=False)
        if not self.config.enabled or not worth_logging(ev, outcome):
            return
        if len(self._buffer) >= self.max_buffer:
            self.stats.dropped += 1
            self._dropped_unreported += 1
            return
        self._buffer.append((ev, outcome))
        self.stats.recorded += 1
        if len(self._buffer) >= self.batch_rows:
            self._wake.set()

    def replay_outcome(self, event_id: str) -> str | None:
        """The outcome a replayed Event was recorded with (once; then forgotten)."""
        return self._replays.pop(event_id, None)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def counters(self) -> dict[str, int]:
        """For /metrics: the counters and the buffer depth."""
        return {**dataclasses.asdict(self.stats), "buffered": len(self._buffer)}

    # -- the writer --------------------------------------------------------------

    async def run(self) -> None:
        """Group-commit the buffer until cancelled; prune now and hourly."""
        await self._prune_logged()
        next_prune = time.monotonic() + self.prune_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()
            if time.monotonic() >= next_prune:
                await self._prune_logged()
                next_prune = time.monotonic() + self.prune_interval_s

    async def flush(self) -> int:
        """Write everything buffered now; the number of rows inserted.  Rows
        stay buffered when the write fails (and the failure is logged)."""
        written = 0
        async with self._flushing:
            while self._buffer:
                n = min(self.batch_rows, len(self._buffer))
                batch = [self._buffer[i] for i in range(n)]
                records = [self._to_record(ev, outcome) for ev, outcome in batch]
                try:
                    written += await self.store.event_log_append(records)
                except StoreError as exc:
                    self._write_failed(exc)
                    break
                for _ in range(n):
                    self._buffer.popleft()
                if self._failing:
                    log.info("event log: writing again")
                    self._failing = False
        self.stats.written += written
        if self._dropped_unreported:
            log.warning(
                "event log buffer full (%d rows): %d events not logged",
                self.max_buffer,
                self._dropped_unreported,
            )
            self._dropped_unreported = 0
        return written

    def _to_record(self, ev: Event, outcome: str) -> EventLogRecord:
        return to_record(
            ev,
            outcome,
            redactor=self._redactor,
            max_payload_bytes=self.config.max_payload_bytes,
        )

    def _write_failed(self, exc: StoreError) -> None:
        self.stats.write_errors += 1
        if not self._failing:  # once per failing spell, not every 100 ms
            self._failing = True
            log.error("event log: cannot write (%d rows kept): %s", len(self._buffer), exc)

    async def prune(self) -> int:
        """Delete rows older than ``retention_days``; how many went."""
        cutoff = self._clock() - self.config.retention_days * 86400.0
        removed = await self.store.event_log_prune(cutoff)
        self.stats.pruned += removed
        return removed

    async def _prune_logged(self) -> None:
        try:
            removed = await self.prune()
        except StoreError as exc:
            log.error("event log: pruning failed: %s", exc)
            return
        if removed:
            log.info(
                "event log: pruned %d events older than %s days",
                removed,
                self.config.retention_days,
            )


# --- replay in the running bot -------------------------------------------------------


class ReplayWorker:
    """Takes replay requests from the store and dispatches the logged Events again.

    Polls every ``poll_s`` (one small query: the table holds only requests
    younger than the retention); claims a request (pending -> running) so it
    runs once, dispatches the rebuilt Event, waits until its handlers have
    finished and marks the request done with ``replayed as <new id>:
    <outcome>`` (or failed with the reason).  IRC-born Events reply through
    ``sink`` (the bot), to where the original came from.
    """

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        eventlog: EventLog | None = None,
        *,
        sink: ReplySink | None = None,
        poll_s: float = 0.5,
        max_inflight: int = 16,
        wait_s: float | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.eventlog = eventlog
        self.sink = sink
        self.poll_s = poll_s
        self.max_inflight = max_inflight
        self.wait_s = wait_s if wait_s is not None else max(60.0, 4 * dispatcher.handler_timeout_s)
        self.replayed = 0
        self.failed = 0
        self._inflight = 0
        self._failing = False

    async def run(self) -> None:
        """Poll until cancelled; replays in flight are cancelled with it."""
        async with asyncio.TaskGroup() as tg:
            while True:
                try:
                    await self.poll(tg)
                    self._failing = False
                except StoreError as exc:
                    if not self._failing:
                        log.error("replay worker: cannot read requests: %s", exc)
                    self._failing = True
                await asyncio.sleep(self.poll_s)

    async def poll(self, tg: asyncio.TaskGroup) -> int:
        """Claim and start the pending requests there is room for; how many."""
        room = self.max_inflight - self._inflight
        if room <= 0:
            return 0
        started = 0
        for req in await self.store.replay_pending(limit=room):
            if not await self.store.replay_claim(req.id):
                continue  # cancelled by the CLI, or another bot took it
            self._inflight += 1
            started += 1
            tg.create_task(self._replay(req), name=f"replay:{req.id}")
        return started

    async def _replay(self, req: ReplayRequest) -> None:
        try:
            state, result = await self._dispatch(req)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.store.replay_finish(req.id, "failed", "the bot stopped during the replay")
                )
            raise
        except Exception:
            ref = new_ref()
            log.exception("replay of %s failed (ref %s)", req.event_id, ref)
            state, result = "failed", f"internal error (ref {ref})"
        finally:
            self._inflight -= 1
        if state == "done":
            self.replayed += 1
        else:
            self.failed += 1
        try:
            await self.store.replay_finish(req.id, state, result)
        except StoreError as exc:
            log.error("replay of %s: cannot record the result: %s", req.event_id, exc)

    async def _dispatch(self, req: ReplayRequest) -> tuple[str, str]:
        found = await self.store.event_log_get([req.event_id])
        if not found:
            return "failed", f"event {req.event_id} is not in the event log (pruned?)"
        rec = found[0]
        try:
            ev = rebuild(rec)
        except ReplayError as exc:
            return "failed", str(exc)
        if self.sink is not None and (ev.nick or ev.channel):
            ev = dataclasses.replace(ev, sink=self.sink)  # replies go where the original's did
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def on_done() -> None:
            if not finished.done():
                finished.set_result(None)

        log.info("replaying %s %s %s as %s", rec.type, rec.key, rec.id, ev.id)
        await self.dispatcher.put(ev, on_done=on_done)
        try:
            async with asyncio.timeout(self.wait_s):
                await finished
        except TimeoutError:
            return "failed", f"replayed as {ev.id}, but its handlers did not finish in time"
        outcome = self.eventlog.replay_outcome(ev.id) if self.eventlog is not None else None
        return "done", f"replayed as {ev.id}: {outcome or 'dispatched'}"


# --- the CLI's side --------------------------------------------------------------------

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> float:
    """``1h``, ``30m``, ``2d``, ``90s``, ``1w`` ago, or an ISO time (UTC when
    it names no zone), as epoch seconds."""
    now = now or datetime.now(UTC)
    m = _SPAN.match(text)
    if m:
        return (now - timedelta(seconds=float(m[1]) * _UNIT_S[m[2].lower()])).timestamp()
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(
            f"--since {text!r}: expected a span like 30m, 1h, 2d or an ISO time "
            "like 2026-01-31T12:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


async def list_events(
    store: Store,
    *,
    types: Sequence[str] = (),
    since: float | None = None,
    key_mask: str | None = None,
    limit: int = 50,
) -> list[EventLogRecord]:
    """Logged events, newest first, filtered by type, time and key mask
    (Eggdrop wildcards, case-insensitive)."""
    match = compile_mask(key_mask).fullmatch if key_mask else None
    out: list[EventLogRecord] = []
    before: int | None = None
    while len(out) < limit:
        page = await store.event_log_page(
            types=types, since=since, before_seq=before, limit=max(limit, 500)
        )
        if not page:
            break
        out.extend(r for r in page if match is None or match(r.key) is not None)
        before = page[-1].seq
    return out[:limit]


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str, limit: int = 80) -> str:
    flat = "".join(c if c.isprintable() else "?" for c in text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def origin_summary(origin_json: str) -> str:
    """``alice!a@host [alice] #ops`` or ``src=github`` for a stored origin."""
    try:
        origin = json.loads(origin_json)
    except ValueError:
        return "?"
    if not isinstance(origin, dict):
        return "?"
    parts: list[str] = []
    nick, uhost = origin.get("nick"), origin.get("uhost")
    if nick:
        parts.append(f"{nick}!{uhost}" if uhost else str(nick))
    if origin.get("handle"):
        parts.append(f"[{origin['handle']}]")
    if origin.get("account") and origin.get("account") != origin.get("handle"):
        parts.append(f"account={origin['account']}")
    if origin.get("channel"):
        parts.append(str(origin["channel"]))
    if origin.get("source") and not nick:
        parts.append(f"src={origin['source']}")
    return _one_line(" ".join(parts), 60) or "-"


def format_record(rec: EventLogRecord) -> str:
    """One line of ``events list``: time, id, type, key, origin, outcome, replay_of."""
    line = (
        f"{_when(rec.time)}  {rec.id}  {rec.type}  {_one_line(rec.key)}  "
        f"{origin_summary(rec.origin)}  {rec.outcome or '-'}"
    )
    return f"{line}  replay-of={rec.replay_of}" if rec.replay_of else line


class _UserLookup(Protocol):
    """The user table as the offline resolver needs it (``UserTable.identify``)."""

    def identify(
        self,
        nick: str | None,
        uhost: str | None,
        account: str | None,
        *,
        accounts_available: bool,
        casemapping: str = ...,
        hostmask_flags: bool = ...,
    ) -> Principal | None: ...


def offline_resolver(users: _UserLookup, *, hostmask_flags: bool = False) -> Resolver:
    """The user an Event's stored origin resolves to, without IRC: by account
    when the origin has one (the network offered accounts), else by hostmask
    -- with the flags that match carries, as the running bot decides them
    (``hostmask_flags``: ``users.hostmask_flags_on_account_networks``)."""

    def resolve(ev: Event) -> Principal | None:
        if ev.nick is None and ev.account is None:
            return None
        return users.identify(
            ev.nick,
            ev.uhost,
            ev.account,
            accounts_available=ev.account is not None,
            hostmask_flags=hostmask_flags,
        )

    return resolve


def explain(rec: EventLogRecord, snapshot: Snapshot, resolve: Resolver) -> list[str]:
    """The dry run of one logged Event: which bindings of ``snapshot`` would
    fire for it (in firing order) or be refused for its origin.  Runs nothing."""
    head = f"{_when(rec.time)}  {rec.id}  {rec.type}  {_one_line(rec.key)}"
    try:
        ev = rebuild(rec, allow_truncated=True)
    except ReplayError as exc:
        return [head, f"  cannot be replayed: {exc}"]
    lines = [head]
    if truncated(rec):
        lines.append("  note: its payload was truncated when logged; a replay would be refused")
    who = resolve(ev)
    if who is not None:
        ev = dataclasses.replace(ev, handle=who.handle)
    found = snapshot.match(ev)
    if not found:
        lines.append("  no binding would fire")
    for b in found:
        if permitted(b, ev, who):
            verdict = "would fire"
        else:
            user = f"user {who.handle}" if who is not None else "no user record"
            verdict = f"would be refused ({user}; needs {b.flags.describe(ev.channel)})"
        lines.append(
            f"  {verdict}: {b.type} {b.flags.text} {b.mask} -> {b.handler_name} [{b.owner}]"
        )
    return lines


async def request_replays(
    store: Store, event_ids: Sequence[str], *, timeout: float, poll_s: float = 0.1
) -> list[ReplayRequest]:
    """Queue a replay of each event for the running bot and wait up to
    ``timeout`` seconds for each to finish.  Requests no bot took by then are
    cancelled (so they cannot fire later, unexpectedly).  Unknown ids raise
    ``UserError`` before anything is queued."""
    known = {r.id for r in await store.event_log_get(event_ids)}
    missing = [i for i in event_ids if i not in known]
    if missing:
        raise UserError(
            f"not in the event log: {', '.join(missing)} (see: masterchief events list)"
        )
    ids = await store.replay_enqueue(event_ids)
    deadline = time.monotonic() + timeout
    while True:
        current = await store.replay_get(ids)
        if all(r.state not in ("pending", "running") for r in current):
            return current
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll_s)
    for r in current:
        if r.state == "pending":
            await store.replay_cancel(
                r.id, f"no running bot took the request within {timeout:g}s; cancelled"
            )
    return await store.replay_get(ids)
