"""The bot's parts as Components: lifecycle, metrics and live reconfiguration.

Each adapter wraps one part (see ``component.py`` for why the parts do not
implement the protocol themselves) and knows which of its settings apply
live and which need a restart:

=============  ==============================================  =====================
component      applied by ``!rehash``                          needs a restart
=============  ==============================================  =====================
dispatch       ``bot.handler_timeout_s``                        ``bot.queue_size``
irc            ``irc.output`` (burst, rate, queue, recvq),      server, port, TLS,
               ``bot.flood``, ``bot.private_replies``           nick, SASL, channels
outbox         ``outbox.*``                                     --
eventlog       ``events.*``                                     --
jobs           ``deploy.*`` (channels, approvals, intervals)    --
web            --                                               ``web.*`` (listeners)
store          --                                               ``store.*``
=============  ==============================================  =====================

Sources (REST, files, logs, webhooks, the clock, replays) are reconfigured
by their runner: added, removed and changed live.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..config.schema import OutputConfig
from ..metrics import Family

if TYPE_CHECKING:
    from ..bindings.dispatcher import Dispatcher
    from ..bindings.registry import BindingTable
    from ..config.schema import Config, IrcConfig
    from ..deploy.catalog import ModuleLoader
    from ..deploy.jobs import JobManager
    from ..eventlog.writer import EventLog
    from ..http.server import WebServer
    from ..identity.users import UserTable
    from ..irc.pacer import OutputQueue
    from ..irc.supervisor import IrcBot
    from ..outputs.outbox import Outbox
    from ..sources.runner import SourceRunner

__all__ = [
    "DispatchComponent",
    "EventLogComponent",
    "IrcComponent",
    "JobsComponent",
    "OutboxComponent",
    "SourcesComponent",
    "Task",
    "WebComponent",
]


class Task:
    """A part with nothing to report or reconfigure: a watcher loop."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._run = run

    async def run(self, started: asyncio.Event) -> None:
        started.set()
        await self._run()

    def metrics(self) -> list[Family]:
        return []

    def reconfigure(self, config: Config) -> bool:
        return True


class DispatchComponent:
    """The dispatcher, its binding table and its handler lane."""

    name = "dispatch"

    def __init__(self, dispatcher: Dispatcher, table: BindingTable, users: UserTable) -> None:
        self.dispatcher = dispatcher
        self.table = table
        self.users = users
        self._queue_size = dispatcher.queue.maxsize

    async def run(self, started: asyncio.Event) -> None:
        started.set()
        await self.dispatcher.run()

    def metrics(self) -> list[Family]:
        d = self.dispatcher
        return [
            Family(
                "masterchief_dispatch_queue_depth",
                "Event chains waiting",
                "gauge",
                samples={(): d.queue.qsize()},
            ),
            Family(
                "masterchief_dispatch_inflight",
                "Chains running in tasks or the handler lane",
                "gauge",
                samples={(): d.inflight},
            ),
            Family(
                "masterchief_handler_lane",
                "Scripts' plain handlers: threads, blocked threads, work waiting, takeovers",
                "gauge",
                ("what",),
                {(k,): v for k, v in d.lane.stats().items()},
            ),
            Family(
                "masterchief_dispatch_events",
                "Dispatcher counters",
                "counter",
                ("outcome",),
                {(k,): v for k, v in dataclasses.asdict(d.stats).items()},
            ),
            Family(
                "masterchief_bindings",
                "Bindings in the table",
                "gauge",
                samples={(): len(self.table)},
            ),
            Family(
                "masterchief_users", "User records", "gauge", samples={(): len(self.users.all())}
            ),
        ]

    def reconfigure(self, config: Config) -> bool:
        self.dispatcher.handler_timeout_s = config.bot.handler_timeout_s
        return config.bot.queue_size == self._queue_size


class IrcComponent:
    """The IRC connection and its pacer."""

    name = "irc"

    def __init__(self, irc: IrcBot, output: OutputQueue, config: Config) -> None:
        self.irc = irc
        self.output = output
        self._connection = _connection(config)

    async def run(self, started: asyncio.Event) -> None:
        started.set()  # "ready" waits for registration itself
        await self.irc.run()

    def metrics(self) -> list[Family]:
        irc = self.irc
        return [
            Family(
                "masterchief_output_queue_depth",
                "Lines waiting in the output queues",
                "gauge",
                ("queue",),
                {(q,): n for q, n in self.output.depths().items()},
            ),
            Family(
                "masterchief_output_lines",
                "Output queue counters",
                "counter",
                ("outcome",),
                {(k,): v for k, v in self.output.stats().items()},
            ),
            Family(
                "masterchief_irc_connected",
                "1 when registered on IRC",
                "gauge",
                samples={(): float(irc.connected.is_set())},
            ),
            Family(
                "masterchief_irc_connects",
                "Successful IRC registrations",
                "counter",
                samples={(): irc.connects},
            ),
            Family(
                "masterchief_irc_floods",
                "CTCP requests answered/unanswered (bot-wide budget), lines dropped from "
                "ignored users and users warned (command flood limits)",
                "counter",
                ("outcome",),
                {(k,): v for k, v in irc.stats.items()},
            ),
        ]

    def reconfigure(self, config: Config) -> bool:
        out = config.irc.output
        self.output.configure(
            burst=out.burst, rate=out.rate, max_queue=out.max_queue, recvq=out.recvq
        )
        self.irc.configure_flood(config.bot.flood)
        self.irc.transport.private_notice = config.bot.private_replies == "notice"
        return _connection(config) == self._connection


def _connection(config: Config) -> IrcConfig:
    """The ``irc`` section but its pacing: what only a new connection changes
    (a field added to the section later needs a restart until said otherwise)."""
    return config.irc.model_copy(update={"output": OutputConfig()})


class OutboxComponent:
    name = "outbox"

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def run(self, started: asyncio.Event) -> None:
        started.set()
        await self.outbox.run()

    def metrics(self) -> list[Family]:
        return [
            Family(
                "masterchief_outbox",
                "Outbox counters and depths",
                "gauge",
                ("what",),
                {(k,): v for k, v in self.outbox.stats().items()},
            )
        ]

    def reconfigure(self, config: Config) -> bool:
        self.outbox.configure(
            expire_after_s=config.outbox.expire_after_s,
            delayed_after_s=config.outbox.delayed_after_s,
            max_backlog_s=config.irc.output.max_backlog_s,
        )
        return True


class EventLogComponent:
    name = "eventlog"

    def __init__(self, eventlog: EventLog) -> None:
        self.eventlog = eventlog

    async def run(self, started: asyncio.Event) -> None:
        started.set()
        await self.eventlog.run()

    def metrics(self) -> list[Family]:
        return [
            Family(
                "masterchief_eventlog",
                "Event log rows recorded, written, dropped (buffer full), buffered",
                "gauge",
                ("what",),
                {(k,): v for k, v in self.eventlog.counters().items()},
            )
        ]

    def reconfigure(self, config: Config) -> bool:
        self.eventlog.config = config.events  # retention and payload cap apply at once
        return True


class JobsComponent:
    """Deploy jobs and the module catalogue they run."""

    name = "jobs"

    def __init__(self, jobs: JobManager, modules: ModuleLoader) -> None:
        self.jobs = jobs
        self.modules = modules

    async def run(self, started: asyncio.Event) -> None:
        started.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.modules.watch(), name="modules")
            tg.create_task(self.jobs.run(), name="jobs")  # cancels running jobs on stop

    def metrics(self) -> list[Family]:
        return []

    def reconfigure(self, config: Config) -> bool:
        self.jobs.config = config.deploy
        self.modules.paths = list(config.deploy.modules)
        return True


class SourcesComponent:
    """Every input but IRC (see ``sources/runner.py``)."""

    name = "sources"

    def __init__(self, runner: SourceRunner) -> None:
        self.runner = runner
        self.changes: list[str] = []  # what the last reconfigure did

    async def run(self, started: asyncio.Event) -> None:
        await self.runner.run(started)

    def metrics(self) -> list[Family]:
        return self.runner.metrics()

    def reconfigure(self, config: Config) -> bool:
        self.changes = self.runner.reconfigure(config)  # ConfigError: nothing changed
        return True


class WebComponent:
    name = "web"

    def __init__(self, web: WebServer, config: Config) -> None:
        self.web = web
        self._config = config.web

    async def run(self, started: asyncio.Event) -> None:
        task = asyncio.ensure_future(self.web.run())
        try:
            await self.web.started.wait()
            started.set()
            await task
        finally:
            task.cancel()

    def metrics(self) -> list[Family]:
        return []

    def reconfigure(self, config: Config) -> bool:
        return config.web == self._config
