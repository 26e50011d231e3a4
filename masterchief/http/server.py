"""The web server: listeners, route groups, /healthz and /metrics.

How this works
--------------
Routes (aiohttp): ``POST /webhooks/{provider}`` and ``POST
/webhooks/generic/{name}`` go to the mounted webhook intake (the
``webhooks`` source, ``sources/webhooks/intake.py``; 404 while none is
mounted); ``GET /healthz`` and ``GET /metrics`` are the admin routes.  With
``web.admin.port`` they are served on a listener of their own
(``web.admin.host``) and the webhook port answers them 404, so the port the
providers reach serves only ``/webhooks/*``; with ``web.admin.token`` they
need ``Authorization: Bearer <token>`` (compared in constant time; 401
otherwise).  /healthz answers 503 while a component is down (see
``health``).  A port that cannot be bound is logged as an error and the bot
runs on without webhooks (IRC stays up; providers retry).

The server knows nothing of the bot's parts: /healthz's components and
queues come from the ``health`` callable, /metrics' text from ``metrics``,
and the store's probe from ``ping``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from masterchief.config.schema import WebConfig

from ..sources.webhooks import verify
from .health import ComponentHealth, HealthInfo, probe_store, summarize

__all__ = ["WebServer", "WebServerError"]

log = logging.getLogger("masterchief.web")

Health = Callable[[], HealthInfo]
"""The running bot's components and queues for /healthz (read per request)."""


class WebServerError(Exception):
    """The web server cannot start (the message says why; no secrets in it)."""


class Intake(Protocol):
    """The mounted webhook intake, as the server sees it."""

    @property
    def backlog_full(self) -> bool: ...

    async def handle(self, request: web.Request) -> web.Response: ...

    def counters(self) -> dict[str, dict[str, int]]: ...

    def depths(self) -> dict[str, int]: ...


class WebServer:
    """The aiohttp server.  ``await run()`` serves until cancelled; ``port``
    is the bound port once ``started`` is set (``web.port: 0`` picks one)."""

    def __init__(
        self,
        web_config: WebConfig,
        *,
        ping: Callable[[], Awaitable[object]],
        health: Health | None = None,
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self.config = web_config
        self.port: int | None = None
        self.admin_port: int | None = None  # the admin listener's, when it has one
        self.started = asyncio.Event()
        self._ping = ping
        self._health = health
        self._metrics = metrics
        self._intake: Intake | None = None
        self._runners: list[web.AppRunner] = []
        self._listen_error: str | None = None  # why the webhook port is not served

    # -- the webhook route group ---------------------------------------------------

    def mount_webhooks(self, intake: Intake) -> None:
        self._intake = intake

    def unmount_webhooks(self, intake: Intake) -> None:
        if self._intake is intake:  # a newer intake may already be mounted
            self._intake = None

    async def _on_webhook(self, request: web.Request) -> web.Response:
        intake = self._intake
        if intake is None:
            return _json(404, {"error": "no such webhook"})
        return await intake.handle(request)

    # -- lifecycle ---------------------------------------------------------------

    @property
    def _separate_admin(self) -> bool:
        admin = self.config.admin
        return admin is not None and admin.port is not None

    def _hooks_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhooks/generic/{name}", self._on_webhook)
        app.router.add_post("/webhooks/{provider}", self._on_webhook)
        if not self._separate_admin:
            self._add_admin_routes(app)
        return app

    def _add_admin_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._on_healthz)
        app.router.add_get("/metrics", self._on_metrics)

    async def run(self) -> None:
        """Listen and serve until cancelled."""
        try:
            await self._listen_all()
            self.started.set()
            await asyncio.Event().wait()
        finally:
            await self._stop()

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
        self.started.clear()

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
            "store": await probe_store(self._ping),
            "web": self._web_health(),
        }
        status, body = summarize(components)
        intake = self._intake
        body["queues"] = {**info.queues, **(intake.depths() if intake is not None else {})}
        body["webhooks"] = intake.counters() if intake is not None else {}
        return _json(status, body)

    def _web_health(self) -> ComponentHealth:
        if self._listen_error is not None:
            return ComponentHealth.down(self._listen_error)
        if self._intake is not None and self._intake.backlog_full:
            return ComponentHealth.down("webhook dispatch backlog full (answering 503)")
        return ComponentHealth()


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.json_response(body, status=status)
