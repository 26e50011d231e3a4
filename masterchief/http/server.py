"""The web server: webhook intake (verified, durable, deduplicated), /healthz
and /metrics.

How this works
--------------
Routes (aiohttp): ``POST /webhooks/{github,gitlab,jenkins,alertmanager,
pagerduty}``, ``POST /webhooks/generic/{name}``, ``GET /healthz`` and
``GET /metrics``.  The last two are the admin routes: with ``web.admin.port``
they are served on a listener of their own (``web.admin.host``) and the
webhook port answers them 404, so the port the providers reach serves only
``/webhooks/*``; with ``web.admin.token`` they need ``Authorization: Bearer
<token>`` (compared in constant time; 401 otherwise).  /healthz answers 503
while a component is down (see ``health``).  A
provider without a secret is not in the table and answers 404 like an
unknown one; ``insecure: true`` without a secret opens it, and that is
logged as a warning every time the server starts (with a secret configured,
``insecure`` changes nothing: the secret is checked).  A port that cannot be
bound is logged as an error and the bot runs on without webhooks.

Per request, in this order:

1. size: a ``Content-Length`` above ``web.max_body_bytes`` is refused at
   once; otherwise the body is streamed and reading stops as soon as it
   passes the limit (413) — an unbounded body is never held in memory;
2. ``providers.intake``: verification on the raw bytes (401), JSON (400),
   provider validation (400), event name and dedup key; a signature header
   we have no key for (GitLab ``webhook-signature`` without
   ``signing_secret``) is said to be unchecked, once, at info level;
3. a full dispatch backlog (``MAX_BACKLOG``) answers 503 before storing:
   backpressure onto the providers, which retry;
4. the store write (``DeliveryWriter.insert``) — the only thing awaited
   before answering: 202 ``{"id": n}`` for a new delivery, 200
   ``{"duplicate": true}`` for one already stored (not dispatched again).
   A store failure is our transient fault: 503, never 4xx;
5. after the answer is decided, the Event goes to the dispatcher without
   waiting for handlers; when every handler has finished, ``on_done`` marks
   the delivery done (batched by the writer).

Every rejection is logged on one line (provider, remote address, status,
reason) and counted per provider and outcome (``counters()``, shown on
/healthz and meant for /metrics).

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

Recovery: at start, before listening, deliveries stored but never marked
done (a crash between 202 and the handlers) are read and dispatched again
with ``redelivery: "true"``.  Done deliveries older than ``KEEP_DONE_S``
(7 days) are pruned at start and then every ``PRUNE_EVERY_S``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.config.engine import ConfigError
from masterchief.config.schema import WebConfig, WebhooksConfig
from masterchief.store.api import DeliveryRecord, DeliveryStore, HealthStore

from ..sources.webhooks import verify
from ..sources.webhooks.providers import (
    PROVIDERS,
    Accepted,
    Provider,
    ProviderConfigError,
    Rejection,
    build_providers,
    intake,
)
from ..sources.webhooks.writer import DeliveryWriter, reraise_if_cancelling
from .health import ComponentHealth, HealthInfo, probe_store, summarize

__all__ = [
    "KEEP_DONE_S",
    "MAX_BACKLOG",
    "PRUNE_EVERY_S",
    "WebServer",
    "WebServerError",
    "delivery_event",
]

log = logging.getLogger("masterchief.web")

KEEP_DONE_S = 7 * 86400.0
PRUNE_EVERY_S = 3600.0
MAX_BACKLOG = 10_000
"""Deliveries stored but waiting for room in the dispatch queue; beyond this, 503."""
RECOVER_LIMIT = 100_000

Health = Callable[[], HealthInfo]
"""The running bot's components and queues for /healthz (read per request)."""


class WebServerError(Exception):
    """The web server cannot start (the message says why; no secrets in it)."""


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


class WebStore(DeliveryStore, HealthStore, Protocol):
    """What the web server needs of the store: intake, and /healthz's probe."""


class WebServer:
    """The aiohttp server.  ``await run()`` serves until cancelled; ``port``
    is the bound port once ``started`` is set (``web.port: 0`` picks one)."""

    def __init__(
        self,
        web_config: WebConfig,
        hooks: WebhooksConfig,
        store: WebStore,
        dispatcher: Dispatcher,
        *,
        health: Health | None = None,
        metrics: Callable[[], bytes] | None = None,
        clock: Callable[[], float] = time.time,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self.config = web_config
        self.store = store
        self.dispatcher = dispatcher
        try:
            self.providers: dict[str, Provider] = build_providers(hooks)
        except ProviderConfigError as exc:
            raise ConfigError(str(exc), key=exc.key) from None
        self.writer = DeliveryWriter(store)
        self.port: int | None = None
        self.admin_port: int | None = None  # the admin listener's, when it has one
        self.started = asyncio.Event()
        self._health = health
        self._metrics = metrics
        self._clock = clock
        self._max_backlog = max_backlog
        self._limit = web_config.max_body_bytes
        self._counters: dict[str, dict[str, int]] = {}
        self._backlog: collections.deque[tuple[Event, int]] = collections.deque()
        self._backlog_ready = asyncio.Event()
        self._inflight: set[int] = set()
        self._noted: set[tuple[str, str]] = set()  # (provider, header) said to be unchecked
        self._runners: list[web.AppRunner] = []
        self._listen_error: str | None = None  # why the webhook port is not served

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

    # -- lifecycle ---------------------------------------------------------------

    @property
    def _separate_admin(self) -> bool:
        admin = self.config.admin
        return admin is not None and admin.port is not None

    def _hooks_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhooks/generic/{name}", self._on_generic)
        app.router.add_post("/webhooks/{provider}", self._on_provider)
        if not self._separate_admin:
            self._add_admin_routes(app)
        return app

    def _add_admin_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._on_healthz)
        app.router.add_get("/metrics", self._on_metrics)

    async def run(self) -> None:
        """Recover pending deliveries, listen, and serve until cancelled.

        A port that cannot be bound is logged as an error and the bot runs on
        without webhooks (IRC stays up; providers retry).  Recovery of stored
        deliveries happens either way."""
        try:
            self._warn_config()
            try:
                pending = await self.store.pending_deliveries(RECOVER_LIMIT)
            except Exception as exc:
                reraise_if_cancelling()
                log.error("webhooks: cannot read pending deliveries: %s", type(exc).__name__)
                pending = []
            await self._listen_all()
            self._recover(pending)
            self.started.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._feed(), name="web-feed")
                tg.create_task(self._prune_loop(), name="web-prune")
        finally:
            await self._stop()

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

    async def _listen_all(self) -> None:
        admin = self.config.admin
        try:
            self.port = await self._listen(self._hooks_app(), self.config.host, self.config.port)
        except WebServerError as exc:
            self._listen_error = str(exc)
            what = "webhooks" if self._separate_admin else "webhooks, /healthz and /metrics"
            log.error("web: %s; %s are unavailable", exc, what)
        else:
            what = "/webhooks/*" if self._separate_admin else "/webhooks/*, /healthz, /metrics"
            log.info("web: listening on %s:%s (%s)", self.config.host, self.port, what)
        if admin is not None and admin.port is not None:
            app = web.Application()
            self._add_admin_routes(app)
            try:
                self.admin_port = await self._listen(app, admin.host, admin.port)
            except WebServerError as exc:
                log.error("web: %s; /healthz and /metrics are unavailable", exc)
            else:
                log.info(
                    "web: /healthz and /metrics on %s:%s%s",
                    admin.host,
                    self.admin_port,
                    " (bearer token)" if admin.token is not None else "",
                )
        elif admin is None:
            log.info(
                "web: /healthz and /metrics are open on the webhook port"
                " (web.admin moves them to their own port or puts a token on them)"
            )

    async def _listen(self, app: web.Application, host: str, port: int) -> int:
        """Serve ``app`` on host:port; the bound port.  Raises WebServerError."""
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            lingering_time=2.0,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise WebServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._runners.append(runner)
        addresses = runner.addresses
        return int(addresses[0][1]) if addresses else port

    async def _stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        await self.writer.close()
        self.started.clear()

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
        if not self._backlog and not self.dispatcher.queue.full():
            self.dispatcher.submit(ev, on_done=functools.partial(self._done, delivery_id))
            return
        self._backlog.append((ev, delivery_id))
        self._backlog_ready.set()

    def _done(self, delivery_id: int) -> None:
        self._inflight.discard(delivery_id)
        self.writer.mark_done(delivery_id)

    async def _feed(self) -> None:
        """Move backlogged deliveries into the dispatch queue as room appears."""
        while True:
            await self._backlog_ready.wait()
            while self._backlog:
                ev, delivery_id = self._backlog[0]
                await self.dispatcher.put(ev, on_done=functools.partial(self._done, delivery_id))
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

    # -- handlers ----------------------------------------------------------------

    async def _on_provider(self, request: web.Request) -> web.Response:
        name = request.match_info["provider"]
        return await self._handle(request, name if name in PROVIDERS else None, name)

    async def _on_generic(self, request: web.Request) -> web.Response:
        name = f"generic/{request.match_info['name']}"
        return await self._handle(request, name if name in self.providers else None, name)

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

    def _refused(self, request: web.Request) -> web.Response | None:
        """401 unless the admin token is configured and presented (or none is)."""
        admin = self.config.admin
        if admin is None or admin.token is None:
            return None
        presented = request.headers.get("Authorization", "")
        value = verify.bearer(presented)
        if value is not None and verify.token_matches(admin.token.reveal(), value):
            return None
        log.warning(
            "web: %s from %s refused (401): %s",
            request.path,
            request.remote,
            "wrong bearer token" if presented else "no bearer token",
        )
        return web.json_response(
            {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )

    async def _on_metrics(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        if self._metrics is None:
            return _json(404, {"error": "metrics are not enabled"})
        return web.Response(
            body=self._metrics(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def _on_healthz(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        info = self._health() if self._health is not None else HealthInfo()
        components = {
            **info.components,
            "store": await probe_store(self.store.ping),
            "web": self._web_health(),
        }
        status, body = summarize(components)
        body["queues"] = {
            "dispatch": self.dispatcher.queue.qsize(),
            **self.depths(),
            **info.queues,
        }
        body["webhooks"] = self.counters()
        return _json(status, body)

    def _web_health(self) -> ComponentHealth:
        if self._listen_error is not None:
            return ComponentHealth.down(self._listen_error)
        if len(self._backlog) >= self._max_backlog:
            return ComponentHealth.down("webhook dispatch backlog full (answering 503)")
        return ComponentHealth()


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.json_response(body, status=status)
