"""THE composition root: builds every part of the bot once, in dependency
order, and runs them as Components.

How this works
--------------
``compose(config)`` opens the store, loads the users and builds the ``App``:
the binding table and dispatcher, the IRC connection with its pacer and
transport, the durable outbox, the scripts, the deploy catalogue and jobs,
the event log, the web server, and the source runner over
``sources/families.py``.  Each part gets only the narrow interfaces it uses
(the dispatcher as an ``EventSink``, the outbox's ``announce``, a resolver,
a ``Reply``); the built-in commands see the App through
``commands/host.py``'s Protocols.  Nothing imports this module except the
CLI (``runtime/main.py`` for ``masterchief run``, offline commands that need
the binding table) and tests.

``App.run()`` starts every Component (``components.py``) in one TaskGroup,
logs "ready" once IRC is registered and each component has started, and on
``stop()`` shuts the deploy jobs down first (their last news still reaches
the outbox), then IRC.  ``rehash()`` re-reads the configuration and hands it
to each component's ``reconfigure``; what cannot change live is named in
the reply as needing a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..bindings.dispatcher import Dispatcher
from ..bindings.event import Event
from ..bindings.registry import BindingTable
from ..bindings.scriptapi import ScriptApi, using
from ..bindings.scripts import LoadResult, ScriptManager
from ..commands import core as builtins
from ..commands import deploy as deploy_commands
from ..commands.host import RehashReport
from ..config.engine import load_config
from ..config.schema import Config
from ..config.vault import VaultClient, unfetched_vault_resolver
from ..deploy import announce as deploy_announce
from ..deploy.catalog import ModuleLoader
from ..deploy.jobs import JobManager
from ..deploy.module_config import load_module_config, module_config_problems, module_resolvers
from ..errors import ConfigError
from ..eventlog.writer import EventLog
from ..http.health import ComponentHealth, HealthInfo
from ..http.metrics import Metrics
from ..http.server import WebServer
from ..identity.resolve import Resolver
from ..identity.users import Identity, UserTable
from ..irc.flood import FloodPolicy
from ..irc.pacer import OutputQueue
from ..irc.supervisor import IrcBot, IrcSettings
from ..outputs import announce
from ..outputs.outbox import Outbox
from ..outputs.targets import Transports
from ..sources.base import SharedHttp, SourceDeps, SourceFamily
from ..sources.families import FAMILIES
from ..sources.runner import SourceRunner
from ..store.api import Store
from ..store.sqlite import open_store
from .component import Component
from .components import (
    DispatchComponent,
    EventLogComponent,
    IrcComponent,
    JobsComponent,
    OutboxComponent,
    SourcesComponent,
    Task,
    WebComponent,
)

__all__ = ["App", "RehashReport", "compose", "offline_bindings"]

log = logging.getLogger("masterchief")


def irc_settings(config: Config) -> IrcSettings:
    irc = config.irc
    sasl = irc.sasl
    flood = config.bot.flood
    return IrcSettings(
        host=irc.host,
        port=irc.port,
        nick=irc.nick,
        alt_nicks=list(irc.alt_nicks),
        username=irc.username,
        realname=irc.realname,
        channels=[(c.name, c.key) for c in irc.channels],
        tls=irc.tls,
        tls_verify=irc.tls_verify,
        tls_ca_file=str(irc.tls_ca_file) if irc.tls_ca_file else None,
        sasl_username=sasl.username if sasl else None,
        sasl_password=sasl.password.reveal() if sasl else None,
        rejoin_on_kick=irc.rejoin_on_kick,
        reconnect_min_s=irc.reconnect_min_s,
        reconnect_max_s=irc.reconnect_max_s,
        flood=FloodPolicy(flood.commands, flood.per_s, flood.ignore_s),
        ctcp_replies=flood.ctcp_replies,
        ctcp_per_s=flood.ctcp_per_s,
    )


class App:
    def __init__(
        self,
        config: Config,
        store: Store,
        users: UserTable,
        *,
        vault_client: VaultClient | None = None,
        families: Sequence[SourceFamily] = FAMILIES,
    ) -> None:
        if config.unresolved:  # a partial load (offline commands) holds stand-ins
            raise ConfigError("the bot needs the whole configuration, every reference resolved")
        self.config = config
        # None: ``${vault:...}`` uses vault.url (Azure); tests inject a fake.
        self.vault_client = vault_client
        self.store = store
        self.users = users
        self.started = time.monotonic()
        self.table = BindingTable()
        self.command_prefix = config.bot.command_prefix
        self.dispatcher = Dispatcher(
            self.table,
            resolver=self.resolve,
            handler_timeout_s=config.bot.handler_timeout_s,
            queue_size=config.bot.queue_size,
        )
        out = config.irc.output
        self.output = OutputQueue(
            burst=out.burst, rate=out.rate, max_queue=out.max_queue, recvq=out.recvq
        )
        self.irc = IrcBot(
            irc_settings(config),
            self.dispatcher,
            self.output,
            private_notice=config.bot.private_replies == "notice",
        )
        # One resolver per origin kind (IRC users, console sessions, linked bots).
        self.resolver = Resolver(
            users,
            self.irc,
            hostmask_flags=lambda: self.config.users.hostmask_flags_on_account_networks,
        )
        # What delivers lines to Targets: IRC, later the partyline and web console.
        self.transports = Transports([self.irc.transport])
        # Durable announcements (webhooks, scripts): fed to IRC while connected.
        self.outbox = Outbox(
            store,
            self.output,
            connected=self.irc.connected,
            expire_after_s=config.outbox.expire_after_s,
            delayed_after_s=config.outbox.delayed_after_s,
            max_backlog_s=out.max_backlog_s,
            transports=self.transports,
        )
        # The server's echo of our own lines confirms announcements (echo-message).
        self.irc.on_echo = self.outbox.echo
        # What scripts' bind/say/announce reach: this bot (a context variable, not a global).
        self.script_api = ScriptApi(self.table, self.output.privmsg, self.outbox.announce)
        self.scripts = ScriptManager(self.table, list(config.bot.scripts), api=self.script_api)
        # Deploy modules and jobs: a job's news is deploy.announce Events, said
        # by the builtin:deploy-announce binding through the durable outbox
        # (progress ticks straight to the transports: IRC's alert lane).
        self.modules = ModuleLoader(list(config.deploy.modules))
        self.deploy_announcer = deploy_announce.DeployAnnouncer(
            self.outbox.announce, self.transports.deliver, lambda: self.config.deploy
        )
        self.jobs = JobManager(
            config.deploy,
            store,
            self.modules,
            put=self.dispatcher.put,
            submit=self.dispatcher.submit,
            wants=functools.partial(self.dispatcher.wants, "event"),
            module_config=self.module_config,
            pending=self.outbox.depth,
            project_dir=config.project_dir,
        )
        self.metrics = Metrics()
        self.web: WebServer | None = None
        if config.web.enabled:
            self.web = WebServer(
                config.web, ping=store.ping, health=self._health, metrics=self.metrics.render
            )
        # The event log records what the dispatcher processed.
        self.eventlog = EventLog(store, config.events)
        self.dispatcher.recorder = self.eventlog.record
        # Every input but IRC: the families' sources, built now (a bad entry
        # fails the start), run, supervised and reconfigured by the runner.
        brought = [f.section for f in families if f.entry_model is not None]
        missing = [s for s in brought if s not in type(config).model_fields]
        if missing:  # the entries would silently be none
            raise ConfigError(
                f"the configuration was loaded without {', '.join(missing)} (the sections "
                "source families bring: load it with sources.families.config_schema)"
            )
        self.http = SharedHttp()
        self.sources = SourceRunner(
            families,
            config,
            SourceDeps(
                store=store,
                announce=self.outbox.announce,  # refused files are reported
                project_dir=config.project_dir,
                http=self.http,
                webhooks=self.web,
                outcome=self.eventlog.replay_outcome,
                reply=self.irc.transport,
            ),
            self.dispatcher,
        )
        # Every long-lived part, in start order (component.py, components.py);
        # sources are reconfigured first, on their own (see _reload_config).
        self._sources = SourcesComponent(self.sources)
        self.components: list[Component] = [
            DispatchComponent(self.dispatcher, self.table, users),
            EventLogComponent(self.eventlog),
            Task("scripts", self.scripts.watch),
            OutboxComponent(self.outbox),
            self._sources,
            JobsComponent(self.jobs, self.modules),
            Task("users", users.watch),  # CLI changes within ~0.5 s
        ]
        if self.web is not None:
            self.components.append(WebComponent(self.web, config))
        self.components.append(IrcComponent(self.irc, self.output, config))
        for component in self.components:
            self.metrics.add(component.metrics)
        self._stop = asyncio.Event()
        self._started: dict[str, asyncio.Event] = {}

    @classmethod
    async def create(
        cls,
        config: Config,
        *,
        vault_client: VaultClient | None = None,
        families: Sequence[SourceFamily] = FAMILIES,
    ) -> App:
        store = await open_store(config.store.path)
        try:
            users = await UserTable.load(store)
            return cls(config, store, users, vault_client=vault_client, families=families)
        except BaseException:  # a bot that cannot be built leaves no store open
            await store.close()
            raise

    def module_config(self, name: str, env: str) -> dict[str, Any]:
        """Module ``name``'s config for environment ``env`` (the job's, not the
        bot's ``--env``), its references resolved with the app's resolvers
        (fresh per call, so a rotated vault secret is read at the next job)."""
        resolvers = module_resolvers(self.config, vault_client=self.vault_client)
        return load_module_config(self.config, name, env=env, resolvers=resolvers)

    # -- identity --------------------------------------------------------------

    @property
    def casemapping(self) -> str:
        return self.irc.casemapping

    def resolve(self, ev: Event) -> Identity | None:
        """The user record an Event's origin matches, with the flags that
        match may carry (``Identity``: the one place that is decided)."""
        return self.resolver(ev)

    def _health(self) -> HealthInfo:
        """What /healthz shows besides the web server's own view (store, web)."""
        irc = self.irc.status()
        failing = [s.qualified for s in self.sources.statuses() if s.state == "failing"]
        return HealthInfo(
            components={
                "irc": (
                    ComponentHealth()
                    if irc.connected
                    else ComponentHealth.down(irc.reason or "not registered")
                ),
                # an outside API failing is not the bot's outage: degraded, not down
                "sources": (
                    ComponentHealth.degraded("failing: " + ", ".join(failing))
                    if failing
                    else ComponentHealth()
                ),
            },
            queues={
                "dispatch": self.dispatcher.queue.qsize(),
                "output": sum(self.output.depths().values()),
            },
        )

    # -- lifecycle -------------------------------------------------------------

    def rehash(self) -> RehashReport:
        """Reload the configuration (an invalid one is reported and the running
        one kept), the deploy modules, the scripts and the users."""
        report = RehashReport(scripts=[])
        self.users.request_reload()  # the users watcher re-reads the store at once
        self._reload_config(report)
        self._reload_modules(report)
        report.scripts = self.scripts.load_all()
        self.dispatcher.submit(Event(type="evnt", key="rehash", source="core"))
        self.dispatcher.submit(Event(type="event", key="rehash", source="core"))
        return report

    def _reload_modules(self, report: RehashReport) -> None:
        result = self.modules.reload()
        report.modules_changed = sorted({*result.added, *result.changed, *result.removed})
        report.module_errors = [str(e) for e in result.errors]
        report.modules_kept = list(result.kept)
        # Module config files are configuration too: a broken one is told now,
        # not by the next !deploy of that module (what `module validate` checks).
        # Every environment's overlay: a job may name any of them. Vault
        # secrets are not fetched here (a blocking call on the event loop,
        # once per module and environment): each job reads its own.
        resolvers = {**module_resolvers(self.config), "vault": unfetched_vault_resolver}
        for mod in self.modules.current:
            problems = module_config_problems(self.config, mod, resolvers)
            if problems:
                report.module_config_errors[mod.name] = "\n".join(problems)

    def _reload_config(self, report: RehashReport) -> None:
        global_file = self.config.config_dir / "global" / "config.yaml"
        if not global_file.is_file():  # built in memory (tests): nothing to re-read
            return
        try:
            new = load_config(
                self.config.config_dir,
                self.config.env,
                vault_client=self.vault_client,
                schema=type(self.config),  # with the sections the families bring
            )
        except ConfigError as exc:
            report.config_error = str(exc)
            log.error("rehash: configuration invalid, keeping the running one: %s", exc)
            return
        # Sources first: a source that cannot be built leaves everything as it was.
        sources = self._sources
        try:
            sources.reconfigure(new)
        except ConfigError as exc:
            report.config_error = str(exc)
            log.error("rehash: a source cannot be built, keeping the running ones: %s", exc)
            return
        report.sources_changed = sources.changes
        restart = [c.name for c in self.components if c is not sources and not c.reconfigure(new)]
        if new.store != self.config.store:
            restart.append("store")
        report.restart_needed = tuple(restart)
        self.scripts.dirs = list(new.bot.scripts)  # rehash loads them next
        if new.bot.command_prefix != self.command_prefix:  # the commands move at once
            self.command_prefix = new.bot.command_prefix
            _bind_commands(self.table, self, self.jobs)
        if report.restart_needed:
            log.warning(
                "rehash: %s changed; restart the bot to apply", ", ".join(report.restart_needed)
            )
        self.config = new

    def stop(self) -> None:
        self._stop.set()

    def install_bindings(self) -> None:
        """Bind the built-ins that ``run`` binds before loading the scripts."""
        for err in self.modules.reload().errors:
            log.error("module %s", err)
        _bind_builtins(
            self.table,
            self,
            self.jobs,
            lambda: self.config,
            self.outbox.announce,  # webhook and REST lines, through the durable outbox
            self.deploy_announcer,
        )

    async def run(self) -> None:
        """Run until ``stop()``; raises SaslFailed when IRC login is impossible.
        Everything it starts sees this bot as the scripts' (``using``)."""
        loop = asyncio.get_running_loop()
        self.script_api = dataclasses.replace(self.script_api, loop=loop)
        self.scripts.api = self.script_api
        with using(self.script_api):
            await self._run(loop)

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self.scripts.install_task_factory(loop)
        self.install_bindings()
        for r in self.scripts.load_all():
            (log.info if r.ok else log.error)("%s", r)
        try:
            async with asyncio.TaskGroup() as tg:
                for component in self.components:  # irc last; SaslFailed ends the group
                    started = self._started.setdefault(component.name, asyncio.Event())
                    tg.create_task(component.run(started), name=component.name)
                tg.create_task(self._log_ready(), name="ready")
                await self._stop.wait()
                # Jobs first, while the dispatcher still runs: a cancelled job's
                # result is a deploy.announce Event on its way to the outbox.
                await self.jobs.shutdown()
                await self.irc.shutdown()  # closes the socket so the irc task ends
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            await self._shutdown()

    async def _log_ready(self) -> None:
        """Once registered (and the web listeners are up), one INFO line says
        where to connect and that the bot is ready."""
        await self.irc.connected.wait()
        for started in self._started.values():
            await started.wait()
        log.info("ready: %s", self.where())

    def where(self) -> str:
        """Where people and machines reach the bot (no channel keys, no secrets):
        ``IRC 127.0.0.1:6667 as masterchief in #ops; webhooks on http://...``."""
        s = self.irc.settings
        chans = ", ".join(name for name, _key in s.channels) or "no channels"
        tls = " (TLS)" if s.tls else ""
        text = f"IRC {s.host}:{s.port}{tls} as {self.irc.nickname or s.nick} in {chans}"
        if self.web is not None:
            web = self.config.web
            if self.web.port is None:
                text += "; webhooks not served (see the error above)"
            else:
                text += f"; webhooks on {_http(web.host, self.web.port)}"
            admin = web.admin
            if admin is not None and self.web.admin_port is not None:
                text += f"; /healthz and /metrics on {_http(admin.host, self.web.admin_port)}"
        return text

    async def _shutdown(self) -> None:
        await self.irc.shutdown()  # idempotent; here for the error path
        await self.http.aclose()
        await self.eventlog.flush()  # what was recorded but not yet written
        await self.store.close()


class _Stopped(Exception):
    pass


# Sections whose change needs a restart (connections, sockets, watchers).


def _http(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def compose(
    config: Config,
    *,
    vault_client: VaultClient | None = None,
    families: Sequence[SourceFamily] = FAMILIES,
) -> App:
    """Open the store named by ``config``, load the users and build the bot."""
    return await App.create(config, vault_client=vault_client, families=families)


def _bind_commands(table: BindingTable, host: Any, jobs: Any) -> None:
    """The built-in and deploy commands, each owner's set swapped in at once
    (also when ``bot.command_prefix`` changes on a rehash)."""
    table.install(builtins.OWNER, lambda: builtins.bindings(host))
    table.install(deploy_commands.OWNER, lambda: deploy_commands.bindings(host, jobs))


def _bind_builtins(
    table: BindingTable,
    host: Any,
    jobs: Any,
    config: Callable[[], Config],
    announce_fn: Any,
    deploy_announcer: Any,
) -> None:
    """Every built-in binding: the commands, the CTCP replies, the webhook and
    REST announcements (builtin:webhooks) and the deploy news
    (builtin:deploy-announce) -- for the running bot and offline alike."""
    _bind_commands(table, host, jobs)
    table.install(builtins.CTCP_OWNER, lambda: builtins.ctcp_bindings(host))
    announce.install(table, config, announce_fn)
    deploy_announce.install(table, deploy_announcer)


class _Offline:
    """Stands in for the runtime, the job manager and the announcers when
    only the bindings are wanted (``masterchief events replay --dry-run``):
    making a binding reads the table, the prefix and the config; anything
    else would mean a handler ran, which offline never happens."""

    def __init__(self, table: BindingTable, config: Config) -> None:
        self.table = table
        self.config = config
        self.command_prefix = config.bot.command_prefix

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"offline bindings: {name} is not available")

    def handle(self, ev: Event) -> None:  # the deploy announcer's binding
        raise RuntimeError("offline bindings are never run")

    async def announce(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("offline bindings are never run")


def offline_bindings(config: Config) -> tuple[BindingTable, list[LoadResult]]:
    """The binding table the bot would have -- built-ins and scripts -- with
    nothing built that could run, connect or write: for offline commands."""
    table = BindingTable()
    off: Any = _Offline(table, config)
    _bind_builtins(table, off, off, lambda: config, off.announce, off)
    scripts = ScriptManager(table, list(config.bot.scripts), api=ScriptApi(table))
    return table, scripts.load_all()
