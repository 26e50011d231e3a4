"""What the event log records and how an Event becomes a row and back.

How this works.  ``worth_logging`` decides, per processed Event and its
outcome, whether it is recorded at all (commands that matched, every input
from a source, ``deploy.*`` happenings, refusals and replays; never IRC
chatter or clock ticks).  ``to_record`` turns an Event into an
``EventLogRecord`` whose origin and payload are JSON, redacted with the
process redactor (each secret also in its JSON-escaped form) and capped at
``max_payload_bytes`` (a capped payload says so and keeps its start).

What is stored as the payload is ``{"payload": ..., "text": ..., "tags":
...}`` (text and tags only when present).  A payload that cannot be JSON is
described, never iterated (a CSV row stream stays unread for its handler).

``rebuild`` is the way back, for replays and the dry run: the *stored*
payload, which is redacted (a secret that was in the original payload is
``***`` in the replay), a new id and ``replay_of`` set to the original.  An
Event whose payload was truncated when logged is not replayed.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from datetime import time as dtime
from pathlib import PurePath
from typing import Any

from masterchief.bindings.access import FAILED, FIRED, REFUSED
from masterchief.bindings.event import Event, Reply
from masterchief.config.secrets import MASK, REDACTOR, Redactor, Secret
from masterchief.errors import UserError
from masterchief.store.api import EventLogRecord

__all__ = ["ReplayError", "rebuild", "to_record", "truncated", "worth_logging"]

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


# One encoder for every row: ``json.dumps`` with options builds a new
# JSONEncoder per call, a third of the JSON cost of a row on the IRC hot path
# (bench/rtt.py logs a row per ``!ping``).
_ENCODE = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":")).encode


def _dumps(value: object) -> str:
    try:
        return _ENCODE(value)
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
    raw = text.encode()
    size = len(raw)
    if size <= limit:
        return text
    budget = max(limit - 100, 0)
    while True:
        head = raw[:budget].decode("utf-8", "ignore")
        doc = json.dumps({"truncated": True, "bytes": size, "head": head}, ensure_ascii=False)
        over = len(doc.encode()) - limit
        if over <= 0 or budget == 0:
            return doc
        budget = max(budget - over - 16, 0)


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
    origin: dict[str, str] = {}
    for field in _ORIGIN_FIELDS:
        value = getattr(ev, field)
        if value is not None:
            origin[field] = value
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
    rec: EventLogRecord, *, sink: Reply | None = None, allow_truncated: bool = False
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
