"""Webhook intake, a source: verified, durable, deduplicated deliveries.

How this works
--------------
The web server (``http/server.py``) routes ``POST /webhooks/{github,gitlab,
jenkins,alertmanager,pagerduty}`` and ``POST /webhooks/generic/{name}`` to
the mounted ``WebhookIntake`` (``handle``); with none mounted they answer
404.  A provider without a secret is not in the table and answers 404 like
an unknown one; ``insecure: true`` without a secret opens it, and that is
logged as a warning every time the intake starts (with a secret configured,
``insecure`` changes nothing: the secret is checked).

Per request, in this order:

1. size: a ``Content-Length`` above ``web.max_body_bytes`` is refused at
   once; otherwise the body is streamed and reading stops as soon as it
   passes the limit (413) -- an unbounded body is never held in memory;
2. ``providers.intake``: verification on the raw bytes (401), JSON (400),
   provider validation (400), event name and dedup key; a signature header
   we have no key for (GitLab ``webhook-signature`` without
   ``signing_secret``) is said to be unchecked, once, at info level;
3. a full dispatch backlog (``MAX_BACKLOG``) answers 503 before storing:
   backpressure onto the providers, which retry;
4. the store write (``DeliveryWriter.insert``) -- the only thing awaited
   before answering: 202 ``{"id": n}`` for a new delivery, 200
   ``{"duplicate": true}`` for one already stored (not dispatched again).
   A store failure is our transient fault: 503, never 4xx;
5. after the answer is decided, the Event goes to the dispatcher without
   waiting for handlers; when every handler has finished, ``on_done`` marks
   the delivery done (batched by the writer).

Every rejection is logged on one line (provider, remote address, status,
reason) and counted per provider and outcome (``counters()``, on /healthz
and /metrics).

Webhook Events
--------------
``Event(type="webhook", key="<source>/<name>", source="<source>",
payload=<parsed JSON, unchanged>, time=<when received>, tags=...)`` with
tags ``delivery`` (the store id, as text), ``provider`` (route name:
``github`` ... or ``generic/<name>``), ``dedup`` (the dedup key),
``redelivery`` (``"true"`` when dispatched again after a restart, else
``"false"``) and the provider's headers of interest, lower-cased
(``x-github-event``, ``x-github-delivery``, ``x-gitlab-event``,
``x-webhook-id``, ``x-request-id`` ...).  Payload text is not sanitised here;
that is the formatters' job.

Recovery: when the intake starts, deliveries stored but never marked done
(a crash between 202 and the handlers) are read and dispatched again with
``redelivery: "true"``; requests wait for that read, so a delivery is never
both recovered and dispatched.  Done deliveries older than ``KEEP_DONE_S``
(7 days) are pruned at start and then every ``PRUNE_EVERY_S``.

As a source (family ``webhooks``, one entry built from ``webhooks:`` and
``web.max_body_bytes``), ``!rehash`` with changed providers or secrets
builds a new intake and mounts it in place of the old one: the listener and
its port stay.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ...bindings.event import Event
from ...config.schema import Config, WebhooksConfig
from ...errors import ConfigError
from ...metrics import Family
from ...store.api import DeliveryRecord, DeliveryStore
from ..base import EventSink, SourceDeps, SourceStatus, WebhookMount
from .providers import (
    PROVIDERS,
    Accepted,
    Provider,
    ProviderConfigError,
    Rejection,
    build_providers,
    intake,
)
from .writer import DeliveryWriter, reraise_if_cancelling

__all__ = [
    "FAMILY",
    "KEEP_DONE_S",
    "MAX_BACKLOG",
    "PRUNE_EVERY_S",
    "WebhookIntake",
    "delivery_event",
]

log = logging.getLogger("masterchief.web")

KEEP_DONE_S = 7 * 86400.0
PRUNE_EVERY_S = 3600.0
MAX_BACKLOG = 10_000
"""Deliveries stored but waiting for room in the dispatch queue; beyond this, 503."""
RECOVER_LIMIT = 100_000


def delivery_event(
    *,
    delivery_id: int,
    provider: str,
    source: str,
    event_key: str,
    dedup_key: str,
    payload: Any,
    headers: Mapping[str, str],
    received_at: float,
    redelivery: bool,
) -> Event:
    """The ``webhook`` Event for a stored delivery (see the module docstring)."""
    tags = dict(headers)
    tags.update(
        delivery=str(delivery_id),
        provider=provider,
        dedup=dedup_key,
        redelivery="true" if redelivery else "false",
    )
    return Event(
        type="webhook",
        key=event_key,
        payload=payload,
        source=source,
        time=datetime.fromtimestamp(received_at, UTC),
        tags=tags,
    )


class _Reject(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.reason)
        self.rejection = rejection


class WebhookIntake:
    """The ``webhooks`` source: ``handle(request)`` answers a delivery;
    ``run(sink, started)`` recovers, feeds and prunes until cancelled."""

    family = "webhooks"
    name = "intake"

    def __init__(
        self,
        hooks: WebhooksConfig,
        store: DeliveryStore,
        *,
        max_body_bytes: int,
        mount: WebhookMount | None = None,
        clock: Callable[[], float] = time.time,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self.store = store
        try:
            self.providers: dict[str, Provider] = build_providers(hooks)
        except ProviderConfigError as exc:
            raise ConfigError(str(exc), key=exc.key) from None
        self.writer = DeliveryWriter(store)
        self.sink: EventSink | None = None
        self._mount = mount
        self._clock = clock
        self._max_backlog = max_backlog
        self._limit = max_body_bytes
        self._counters: dict[str, dict[str, int]] = {}
        self._backlog: collections.deque[tuple[Event, int]] = collections.deque()
        self._backlog_ready = asyncio.Event()
        self._inflight: set[int] = set()
        self._noted: set[tuple[str, str]] = set()  # (provider, header) said to be unchecked
        self._open = asyncio.Event()  # set once stored deliveries were read
        self.last_success: float | None = None

    # -- counters --------------------------------------------------------------

    def _count(self, provider: str, outcome: str) -> None:
        per = self._counters.setdefault(provider, {})
        per[outcome] = per.get(outcome, 0) + 1

    def counters(self) -> dict[str, dict[str, int]]:
        """``{provider: {outcome: n}}``; outcomes: accepted, duplicate,
        redelivered, unauthorized, too_large, bad_request, not_found,
        unavailable.  Unknown endpoint names count as provider "unknown"."""
        return {p: dict(c) for p, c in self._counters.items()}

    def depths(self) -> dict[str, int]:
        """Deliveries waiting for the dispatch queue, and dispatched but not done."""
        return {"webhook_backlog": len(self._backlog), "webhook_inflight": len(self._inflight)}

    @property
    def backlog_full(self) -> bool:
        return len(self._backlog) >= self._max_backlog

    def status(self) -> SourceStatus:
        counts = self.counters()
        accepted = sum(c.get("accepted", 0) + c.get("redelivered", 0) for c in counts.values())
        errors = sum(
            n
            for c in counts.values()
            for k, n in c.items()
            if k not in ("accepted", "redelivered", "duplicate")
        )
        enabled = ", ".join(sorted(self.providers)) or "no providers enabled"
        return SourceStatus(
            self.family,
            self.name,
            "failing" if self.backlog_full else ("ok" if self._open.is_set() else "starting"),
            "dispatch backlog full (answering 503)" if self.backlog_full else enabled,
            events=accepted,
            errors=errors,
            pending=len(self._backlog) + len(self._inflight),
            last_success=self.last_success,
        )

    def metrics(self) -> list[Family]:
        counters = self.counters()
        return [
            Family(
                "masterchief_webhook_deliveries",
                "Webhook requests by outcome",
                "counter",
                ("provider", "outcome"),
                {(p, o): n for p, c in counters.items() for o, n in c.items()},
            ),
            Family(
                "masterchief_webhook_queue_depth",
                "Webhook backlog and in flight",
                "gauge",
                ("queue",),
                {(q,): n for q, n in self.depths().items()},
            ),
        ]

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, sink: EventSink, started: asyncio.Event) -> None:
        """Recover pending deliveries, take requests, feed and prune until cancelled."""
        self.sink = sink
        if self._mount is not None:
            self._mount.mount_webhooks(self)
        try:
            self._warn_config()
            try:
                pending = await self.store.pending_deliveries(RECOVER_LIMIT)
            except Exception as exc:
                reraise_if_cancelling()
                log.error("webhooks: cannot read pending deliveries: %s", type(exc).__name__)
                pending = []
            self._recover(pending)
            self._open.set()
            started.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._feed(), name="web-feed")
                tg.create_task(self._prune_loop(), name="web-prune")
        finally:
            if self._mount is not None:
                self._mount.unmount_webhooks(self)
            await self.writer.close()

    def _warn_config(self) -> None:
        for p in self.providers.values():
            if p.insecure:
                log.warning(
                    "webhooks: %s accepts UNVERIFIED deliveries (insecure: true, no secret)",
                    p.name,
                )
        for name in PROVIDERS:
            if name not in self.providers:
                log.info("webhooks: %s disabled (no secret configured)", name)

    def _recover(self, pending: list[DeliveryRecord]) -> None:
        if len(pending) >= RECOVER_LIMIT:
            log.warning(
                "webhooks: more than %d pending deliveries; the rest on the next start",
                RECOVER_LIMIT,
            )
        for rec in pending:
            try:
                payload = json.loads(rec.body)
                meta = json.loads(rec.meta)
                headers = meta.get("headers", {}) if isinstance(meta, dict) else {}
                source = meta.get("source", rec.provider.partition("/")[0])
            except (ValueError, RecursionError, AttributeError):
                log.error("webhooks: stored delivery %d is unreadable; marked done", rec.id)
                self.writer.mark_done(rec.id)
                continue
            ev = delivery_event(
                delivery_id=rec.id,
                provider=rec.provider,
                source=str(source),
                event_key=rec.event_key,
                dedup_key=rec.dedup_key,
                payload=payload,
                headers={str(k): str(v) for k, v in headers.items()},
                received_at=rec.received_at,
                redelivery=True,
            )
            self._count(rec.provider, "redelivered")
            self._dispatch(ev, rec.id)
        if pending:
            log.warning(
                "webhooks: re-dispatching %d delivery(ies) from before a restart", len(pending)
            )

    # -- dispatch ----------------------------------------------------------------

    def _dispatch(self, ev: Event, delivery_id: int) -> None:
        self._inflight.add(delivery_id)
        assert self.sink is not None
        if not self._backlog and self.sink.submit(
            ev, on_done=functools.partial(self._done, delivery_id)
        ):
            return
        self._backlog.append((ev, delivery_id))
        self._backlog_ready.set()

    def _done(self, delivery_id: int) -> None:
        self._inflight.discard(delivery_id)
        self.last_success = time.time()
        self.writer.mark_done(delivery_id)

    async def _feed(self) -> None:
        """Move backlogged deliveries into the dispatch queue as room appears."""
        while True:
            await self._backlog_ready.wait()
            while self._backlog:
                ev, delivery_id = self._backlog[0]
                assert self.sink is not None
                await self.sink.put(ev, on_done=functools.partial(self._done, delivery_id))
                self._backlog.popleft()
            self._backlog_ready.clear()

    async def _prune_loop(self) -> None:
        while True:
            try:
                removed = await self.store.prune_deliveries(self._clock() - KEEP_DONE_S)
            except Exception as exc:
                reraise_if_cancelling()
                log.warning("webhooks: pruning old deliveries failed: %s", type(exc).__name__)
            else:
                if removed:
                    log.info("webhooks: pruned %d delivery(ies) older than 7 days", removed)
            await asyncio.sleep(PRUNE_EVERY_S)

    # -- requests ----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """One ``POST /webhooks/...`` request."""
        await self._open.wait()
        generic = request.match_info.get("name")
        if generic is not None:
            asked = f"generic/{generic}"
            return await self._handle(request, asked if asked in self.providers else None, asked)
        name = request.match_info.get("provider", "")
        return await self._handle(request, name if name in PROVIDERS else None, name)

    async def _handle(self, request: web.Request, route: str | None, asked: str) -> web.Response:
        provider = self.providers.get(route) if route is not None else None
        if provider is None:
            what = route if route is not None else "unknown"
            self._reject(request, what, Rejection(404, "not_found", f"no webhook {asked[:64]!r}"))
            return _json(404, {"error": "no such webhook"})
        try:
            body = await self._read_body(request)
        except _Reject as exc:
            return self._reject(request, provider.name, exc.rejection)
        result = intake(provider, request.headers, body, self._clock())
        if isinstance(result, Rejection):
            return self._reject(request, provider.name, result)
        self._note_unchecked(provider, request)
        if len(self._backlog) >= self._max_backlog:
            return self._reject(
                request, provider.name, Rejection(503, "unavailable", "dispatch backlog full")
            )
        received = self._clock()
        meta = json.dumps({"source": result.source, "headers": dict(result.headers)})
        try:
            delivery_id = await self.writer.insert(
                result.provider, result.dedup_key, result.event_key, result.body, meta, received
            )
        except Exception as exc:
            reraise_if_cancelling()
            log.error(
                "webhook %s from %s: store write failed (%s); answered 503",
                provider.name,
                request.remote,
                type(exc).__name__,
            )
            self._count(provider.name, "unavailable")
            return _json(503, {"error": "temporarily unavailable, retry"})
        if delivery_id is None:
            self._count(provider.name, "duplicate")
            log.info(
                "webhook %s %s: duplicate delivery %s",
                provider.name,
                result.event_key,
                result.dedup_key,
            )
            return _json(200, {"duplicate": True})
        self._count(provider.name, "accepted")
        self._dispatch(self._event(result, delivery_id, received), delivery_id)
        return _json(202, {"id": delivery_id})

    def _note_unchecked(self, provider: Provider, request: web.Request) -> None:
        """Say once that a signature header we cannot check is being ignored."""
        for header, key in provider.unchecked:
            if header in request.headers and (provider.name, header) not in self._noted:
                self._noted.add((provider.name, header))
                log.info(
                    "webhook %s: deliveries carry %s, which is not checked"
                    " (set webhooks.%s.%s to check it)",
                    provider.name,
                    header,
                    provider.name,
                    key,
                )

    @staticmethod
    def _event(result: Accepted, delivery_id: int, received: float) -> Event:
        return delivery_event(
            delivery_id=delivery_id,
            provider=result.provider,
            source=result.source,
            event_key=result.event_key,
            dedup_key=result.dedup_key,
            payload=result.payload,
            headers=result.headers,
            received_at=received,
            redelivery=False,
        )

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._limit
        too_large = _Reject(Rejection(413, "too_large", f"body larger than {limit} bytes"))
        length = request.content_length
        if length is not None and length > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _reject(self, request: web.Request, provider: str, rej: Rejection) -> web.Response:
        self._count(provider, rej.outcome)
        log.warning(
            "webhook %s from %s rejected (%d): %s", provider, request.remote, rej.status, rej.reason
        )
        return _json(rej.status, {"error": rej.reason})


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


@dataclass(frozen=True, slots=True)
class IntakeEntry:
    name: str
    hooks: WebhooksConfig
    max_body_bytes: int


class WebhooksFamily:
    """Webhook intake: one source, when the web server is enabled."""

    name = "webhooks"
    section = "webhooks"
    bind_types = ("webhook",)
    entry_model = None  # a built-in section

    def entries(self, config: Config) -> Sequence[IntakeEntry]:
        if not config.web.enabled:
            return []
        return [IntakeEntry(WebhookIntake.name, config.webhooks, config.web.max_body_bytes)]

    def build(self, entry: IntakeEntry, deps: SourceDeps) -> WebhookIntake:
        return WebhookIntake(
            entry.hooks, deps.stored(), max_body_bytes=entry.max_body_bytes, mount=deps.webhooks
        )


FAMILY = WebhooksFamily()
