"""Deploy runs: a job started, run, closed and told about; progress ticks.

How this works.  ``start`` takes the (module, environment) lease in the
store -- one run at a time, across processes -- and refuses with the
holder's name when another job has it; a job that waited for approval has
the bot-host rule checked again first.  The run itself is ``runners.run``
(a process group, scrubbed environment, redacted output); every line lands
in the job's tail, may become a ``deploy.progress`` Event (only when a
binding wants it), and the newest line or task boundary is shown in the
channels at most every ``progress_interval_s`` by one ticker for all jobs
(``progress_tick``), so twenty jobs never flood the pacer.  Starts and
final summaries are not said here: ``announce`` emits a ``deploy.announce``
Event (``JobNews``) that the built-in binding in ``announce.py`` turns into
lines in the durable outbox.  A job's process and its ``deploy.started``
event begin only once that Event is done (its lines are in the outbox), its
``deploy.finished`` likewise follows its result, and a progress tick waits
while any announcement is on its way, so nothing about a job overtakes its
start or result.  A dry run's result carries what it would change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from ..bindings.event import Event
from ..config.schema import DeployConfig
from ..config.secrets import REDACTOR
from ..errors import UserError
from ..outputs.targets import Target
from . import bothost, runners
from .catalog import ModuleLoader
from .job import (
    STEP_CHARS,
    TERMINAL,
    DeployStore,
    Job,
    JobNews,
    Progress,
    age,
    clock_time,
    deploy_lease,
    live,
    progress_text,
)
from .manifest import Module

__all__ = ["JobRuns", "Put"]

log = logging.getLogger("masterchief.deploy")

ANNOUNCE = "deploy.announce"


class Put(Protocol):
    """The dispatcher's ``put``: queue an Event, ``on_done`` once handled."""

    def __call__(
        self, *chain: Event, on_done: Callable[[], None] | None = None
    ) -> Awaitable[None]: ...


class JobRuns:
    """Runs the jobs the manager starts, and tells the channels about them."""

    def __init__(
        self,
        config: DeployConfig,
        store: DeployStore,
        modules: ModuleLoader,
        jobs: dict[str, Job],
        *,
        put: Put,
        submit: Callable[[Event], object],
        wants: Callable[[str], bool],
        module_config: Callable[[str, str], Mapping[str, Any]],
        pending: Callable[[], int],
        project_dir: Path,
    ) -> None:
        self.config = config
        self.store = store
        self.modules = modules
        self.jobs = jobs  # the manager's: shared, never copied
        self._submit = submit
        self._wants = wants
        self._module_config = module_config
        self._project_dir = project_dir
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._tasks: set[asyncio.Task[None]] = set()
        self._put = put
        self._announcing = 0  # deploy.announce Events not yet done
        self._quiet = asyncio.Event()  # set while there are none
        self._quiet.set()
        self._pending = pending
        self.stats = {"started": 0, "refused": 0, "lines": 0}

    def targets(self, job: Job) -> list[Target]:
        """Where a job's lines go: its channel and ``deploy.channels``, else the
        requester privately; a requester on a console, who cannot see the
        channels, is told in their session too."""
        out: list[Target] = []
        for t in (job.channel, *self.config.channels):
            if t and t.lower() not in {o.name.lower() for o in out}:
                out.append(Target.irc(t))
        to = job.requester.private_target
        if to is not None and (not out or not to.is_irc):
            out.append(to)
        return out

    async def start(self, job: Job) -> None:
        # Callers just computed (request) or checked (approve) the digest.
        if job.status in TERMINAL or job.status == "running":
            return  # closed meanwhile, or already started: never twice
        module = self.modules.current.get(job.module)
        if module is None:
            await self.close(job, "cancelled", "the module was removed")
            return
        if job.rule is not None:
            why = await self._bot_host_refusal(job, module)
            if job.status in TERMINAL or job.status == "running":
                return  # cancelled or expired while the inventory was read
            if why is not None:
                self.stats["refused"] += 1
                await self.close(job, "refused", why)
                return
        ttl = module.manifest.timeout_s + 2 * self.config.kill_grace_s + 60
        holder = f"job {job.id} ({job.mode} by {job.requester.handle}) on {self.holder}"
        taken = await self.store.lease_acquire(
            deploy_lease(job.module, job.env), holder=job.id, info=holder, ttl_s=ttl
        )
        if taken is not None:
            self.stats["refused"] += 1
            why = f"{job.where} is busy: {taken.info} since {clock_time(taken.acquired_at)}"
            await self.close(job, "refused", why)
            return
        job.status = "running"
        job.started_at = time.time()
        self.stats["started"] += 1
        await self.store.job_update(job.record())

        def begin() -> None:
            # Only now: the event, the process and everything it prints come
            # after the "started" line, which is in the outbox.
            self.event("deploy.started", job)
            self.spawn(self._run(job, module))

        await self.announce(self.news(job, "started"), then=begin)

    async def _bot_host_refusal(self, job: Job, module: Module) -> str | None:
        """The bot-host rule again, for a job that waited for approval: its
        module config (``allow_bot_host``, inventory overrides) or inventory
        may have been edited since the request.  The requester's +n is the
        one recorded then (``job.owner``).  None: it may start."""
        try:
            await bothost.check(
                module, job.env, job.params, lambda: self._module_config(module.name, job.env),
                owner=job.owner, project_dir=self._project_dir, extra_env=self.passed_env(),
            )  # fmt: skip
        except UserError as exc:
            return f"re-checked before starting: {exc}"
        except Exception:
            ref = secrets.token_hex(3)
            log.exception("job %s (%s): bot-host re-check failed (ref %s)", job.id, job.where, ref)
            return f"re-checked before starting: module config unreadable (ref {ref})"
        return None

    async def _spec(self, job: Job, module: Module) -> runners.RunSpec:
        # Module config may call Key Vault: a worker thread keeps the loop free.
        variables = await asyncio.to_thread(self._module_config, module.name, job.env)
        return runners.RunSpec(
            job_id=job.id,
            module=module,
            env=job.env,
            mode=job.mode,
            params=job.params,
            variables=dict(variables),
            work_dir=self.config.work_dir / job.id,
            timeout_s=module.manifest.timeout_s,
            kill_grace_s=self.config.kill_grace_s,
            max_line_bytes=self.config.max_output_line_bytes,
            tail_lines=self.config.tail_lines,
            extra_env=self.passed_env(),
        )

    async def _run(self, job: Job, module: Module) -> None:
        status, summary, code = "failed", "", None
        plan: tuple[tuple[str, ...], int] = ((), 0)
        try:
            # Inside the try: a module config that fails to load (a vault
            # secret gone) still closes the job and releases the lease.
            spec = await self._spec(job, module)
            result = await runners.run(spec, lambda line: self.output(job, line), cancel=job.cancel)
            status, code = result.status, result.exit_code
            summary = result.summary
            plan = (result.changes, result.change_count)
        except Exception:
            ref = secrets.token_hex(3)
            log.exception("job %s (%s) could not run (ref %s)", job.id, job.where, ref)
            summary = f"could not run (ref {ref})"
        finally:
            with contextlib.suppress(Exception):
                await self.store.lease_release(deploy_lease(job.module, job.env), job.id)
        job.exit_code = code
        await self.close(job, status, job.reason, summary=summary, plan=plan)

    def passed_env(self) -> dict[str, str]:
        """``deploy.pass_env``: variables of the bot's own environment that jobs
        get (cloud credentials, KUBECONFIG, SSH_AUTH_SOCK).  Their values are
        treated as secrets: never shown."""
        out = {n: os.environ[n] for n in self.config.pass_env if os.environ.get(n)}
        for value in out.values():
            REDACTOR.register(value)
        return out

    def output(self, job: Job, line: runners.OutputLine) -> None:
        job.tail.append(line.text)
        self.stats["lines"] += 1
        if line.kind in ("task", "step"):
            job.boundary = line.text
            job.latest = ""
            job.passed += 1
            job.passed_names.append(line.text[:STEP_CHARS])
        else:
            job.latest = line.text
        job.fresh = True
        if self._wants("deploy.progress"):
            self._submit(
                Event(
                    type="event",
                    key="deploy.progress",
                    source="deploy",
                    text=line.text,
                    payload={
                        "job": job.id,
                        "module": job.module,
                        "env": job.env,
                        "kind": line.kind,
                        "line": line.text,
                    },
                )
            )

    async def close(
        self,
        job: Job,
        status: str,
        reason: str | None,
        *,
        summary: str | None = None,
        plan: tuple[tuple[str, ...], int] = ((), 0),
    ) -> None:
        """Record the job's end and announce it (a dry run: with what it would
        change); the ``deploy.finished`` event follows the result line."""
        job.status = status
        job.reason = reason
        job.finished_at = time.time()
        if summary is None:
            summary = f"{status}" + (f": {reason}" if reason else "")
        summary = summary.removesuffix(f" (job {job.id})")
        job.summary = REDACTOR.redact(summary)
        await self.store.job_update(job.record())
        cfg = self.config
        changes = tuple(
            REDACTOR.redact(line) for line in plan[0][: max(cfg.plan_lines, cfg.plan_private_lines)]
        )
        news = self.news(
            job,
            "finished",
            plan=changes if job.mode == "plan" else (),
            plan_count=plan[1] if job.mode == "plan" else 0,
        )
        await self.announce(news, then=lambda: self.event("deploy.finished", job))

    def news(
        self, job: Job, what: Literal["approval", "started", "finished"], **extra: Any
    ) -> JobNews:
        """What ``announce`` tells of ``job`` now."""
        took = None
        if job.started_at is not None:
            took = (job.finished_at or time.time()) - job.started_at
        return JobNews(
            what=what,
            job=job.id,
            where=job.where,
            mode=job.mode,
            command=job.command,
            requester=job.requester.handle,
            targets=tuple(self.targets(job)),
            private=job.requester.private_target,
            status=job.status,
            reason=job.reason,
            summary=job.summary,
            took=took,
            **extra,
        )

    async def announce(self, news: JobNews, then: Callable[[], None] | None = None) -> None:
        """Hand ``news`` to the announcement binding (``deploy.announce``);
        ``then`` runs once it is done: its lines are in the outbox."""
        self._announcing += 1
        self._quiet.clear()

        def done() -> None:
            self._announcing -= 1
            if not self._announcing:
                self._quiet.set()
            if then is not None:
                then()

        await self._put(
            Event(type="event", key=ANNOUNCE, source="deploy", payload=news), on_done=done
        )

    def event(self, key: str, job: Job, **extra: Any) -> None:
        payload = job.payload()
        self._submit(Event(type="event", key=key, source="deploy", payload={**payload, **extra}))

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def progress_tick(self, now: float | None = None) -> int:
        """Announce what is new in running jobs (one ``deploy.announce`` Event
        of ``Progress`` items; ``announce.py`` makes the lines, at most one
        per channel and job, or one combined line per channel when more than
        three jobs have news).  Returns how many jobs had news.

        Skipped (the news keeps for the next tick) while a start or result
        is on its way to the outbox: progress goes straight to the
        transports and must not overtake it."""
        now = time.time() if now is None else now
        if self._announcing or self._pending() > 0:
            return 0
        items: list[Progress] = []
        for job in live(self.jobs):
            if job.status != "running" or not job.fresh:
                continue
            job.fresh = False
            what = progress_text(job)
            if what:
                took = age(now - (job.started_at or now))
                items.append(Progress(job.id, job.where, took, what, tuple(self.targets(job))))
        if items:
            self._submit(Event(type="event", key=ANNOUNCE, source="deploy", payload=tuple(items)))
        return len(items)

    async def shutdown(self) -> None:
        """Cancel the running jobs and wait for them (and the outbox lines) to end."""
        for job in live(self.jobs):
            if job.status == "running":
                job.reason = "the bot is stopping"
                job.cancel.set()
        await self._drain(timeout=5)  # a run about to begin begins, cancelled
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.kill_grace_s + 5)
        await self._drain(timeout=5)

    async def _drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every announcement is done."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), timeout)
