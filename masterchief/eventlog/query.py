"""The event log from the CLI: list, format, explain (the dry run) and
asking the running bot for replays.

How this works.  ``masterchief events list`` pages through the log newest
first (``list_events``, key masks are Eggdrop wildcards) and prints one
line per row (``format_record``).  ``events replay ID`` writes a
``replay_requests`` row and waits for the running bot's replay source to
finish it (``request_replays``); a request no bot took in time is
cancelled, so it cannot fire later unexpectedly.  ``explain`` answers the
dry run: which bindings would fire for a logged Event under a given
binding table and user table, without running anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from masterchief.bindings.access import Principal, Resolver, permitted
from masterchief.bindings.event import Event
from masterchief.bindings.masks import compile_mask
from masterchief.bindings.registry import Snapshot
from masterchief.errors import UserError
from masterchief.identity.resolve import Resolver as IdentityResolver
from masterchief.identity.users import UserTable
from masterchief.store.api import EventLogRecord, EventLogStore, LoggedReplayStore, ReplayRequest

from .policy import ReplayError, rebuild, truncated

__all__ = [
    "explain",
    "format_record",
    "list_events",
    "offline_resolver",
    "origin_summary",
    "parse_since",
    "request_replays",
]

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
    store: EventLogStore,
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


def offline_resolver(users: UserTable, *, hostmask_flags: bool = False) -> Resolver:
    """The user an Event's stored origin resolves to, without IRC: the live
    bot's IRC resolver, except that the network offered accounts iff the
    origin has one -- by account then, else by hostmask, with the flags that
    match carries (``hostmask_flags``: ``users.hostmask_flags_on_account_networks``)."""
    irc = IdentityResolver(users, hostmask_flags=lambda: hostmask_flags)

    def resolve(ev: Event) -> Principal | None:
        if ev.nick is None and ev.account is None:
            return None  # a source
        return irc.irc_user(
            ev.nick, ev.uhost, ev.account, accounts_available=ev.account is not None
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
    store: LoggedReplayStore, event_ids: Sequence[str], *, timeout: float, poll_s: float = 0.1
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
