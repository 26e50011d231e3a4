"""Deploy jobs: request, approval, one run per (module, environment), progress.

How this works.  ``JobManager.request`` is given a module, an environment and
already validated parameters (the command layer checked the caller's flags
and the manifest).  It records a ``Job`` (job.py) in the store and either
waits for approvals (when the manifest asks for them in that environment)
or starts it; starting, running and closing is ``JobRuns`` (runs.py), which
the manager owns.  Neither says anything in a channel: a job's news is a
``deploy.announce`` Event that the built-in binding in announce.py turns
into lines (an approval request here; starts and results in runs.py).
``run()`` is the ticker:
progress lines, approval expiry, forgetting old jobs.

Approvals are bound to the job's digest: module name, version and folder
content, environment and parameters.  If the module changes on disk before
the approvals are complete the job is cancelled rather than run with what
nobody approved.  Approvers must hold the rule's flags on the job's channel
and be someone else than the requester (different handle and, where the
network has accounts, a different account).  A job waiting for approval is
cancelled when its TTL passes (an ``!approve`` that arrives later is refused
and closes the job as expired, whatever the ticker's interval), when it is
denied, and when the requester is no longer on IRC as they were when asking:
they quit, leave (or are kicked from) the last channel they share with the
bot, log out of services or switch accounts, or the bot itself loses its
connection and cannot tell.  Nick changes are followed.

Everything a job shows or stores has passed the redactor: secret parameters
are shown as ``***`` and the runner redacts every output line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..bindings.event import Event
from ..bindings.flags import FlagMask
from ..config.schema import DeployConfig
from ..config.secrets import REDACTOR, Secret
from ..errors import UserError
from ..text import without_hidden
from .catalog import ModuleLoader
from .job import (
    ACTIVE,
    TERMINAL,
    DeployStore,
    Job,
    Mode,
    Person,
    age,
    clock_time,
    deploy_lease,
    job_digest,
    live,
    shown_params,
)
from .manifest import ApprovalRule, Module
from .runs import JobRuns, Put

__all__ = ["JobManager"]

log = logging.getLogger("masterchief.deploy")


class JobManager:
    """Owns the live jobs: requests, approvals, cancels.  ``run()`` is the
    ticker task (progress, expiry)."""

    def __init__(
        self,
        config: DeployConfig,
        store: DeployStore,
        modules: ModuleLoader,
        *,
        put: Put,
        submit: Callable[[Event], object],
        wants: Callable[[str], bool] = lambda key: True,
        module_config: Callable[[str, str], Mapping[str, Any]] = lambda name, env: {},
        pending: Callable[[], int] = lambda: 0,
        project_dir: Path = Path(),
    ) -> None:
        """``put`` is the dispatcher's: a job's news goes out as
        ``deploy.announce`` Events (``announce.py`` says them, progress
        ticks too); ``pending`` how many announcements the
        outbox has not yet handed to IRC (progress ticks wait while there
        are any, so they never overtake a job's start).
        ``module_config(name, env)`` loads a module's config for the job's
        environment; ``project_dir`` is where paths in messages are shown from."""
        self.store = store
        self.modules = modules
        self.jobs: dict[str, Job] = {}
        self.runs = JobRuns(
            config,
            store,
            modules,
            self.jobs,
            put=put,
            submit=submit,
            wants=wants,
            module_config=module_config,
            pending=pending,
            project_dir=project_dir,
        )

    @property
    def config(self) -> DeployConfig:
        return self.runs.config

    @config.setter
    def config(self, value: DeployConfig) -> None:  # rehash: applies to the next job
        self.runs.config = value

    def passed_env(self) -> dict[str, str]:
        """``deploy.pass_env``'s variables, as jobs get them (``JobRuns.passed_env``)."""
        return self.runs.passed_env()

    def live(self, *, include_done: bool = False) -> list[Job]:
        return live(self.jobs, include_done=include_done)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id.lower().strip())
        if job is None:
            raise UserError(f"no live job {job_id[:16]!r} (see !jobs all)")
        return job

    def module(self, name: str) -> Module:
        module = self.modules.current.get(name)
        if module is None:
            raise UserError(f"no module {name[:40]!r} (see !modules)")
        return module

    async def request(
        self,
        module: Module,
        env: str,
        mode: Mode,
        params: Mapping[str, Any],
        requester: Person,
        channel: str | None,
        *,
        owner: bool = False,
    ) -> Job:
        """Record a job and start it, or leave it waiting for approvals.  The
        caller has validated ``params`` and checked the requester's flags and
        the bot-host rule (``owner``: the requester holds +n, kept for the
        re-check of the module config when an approved job starts)."""
        if mode == "deploy":
            await self._check_requires(module, env)
        rule = module.manifest.approval.get(env) if mode == "deploy" else None
        specs = module.manifest.parameters
        params = {
            k: Secret(str(v)) if k in specs and specs[k].secret and not isinstance(v, Secret) else v
            for k, v in params.items()
        }
        for value in params.values():
            if isinstance(value, Secret):  # the command's text reaches the event log too
                REDACTOR.register(value)
        job = Job(
            id=self._new_id(),
            module=module.name,
            module_version=module.manifest.version,
            env=env,
            mode=mode,
            params=dict(params),
            shown=shown_params(module, params),
            digest=await job_digest(module, env, mode, params),
            requester=requester,
            channel=channel,
            rule=rule,
            created_at=time.time(),
            owner=owner,
            tail=deque(maxlen=self.config.tail_lines),
        )
        if rule is not None:
            for other in self.live():
                if (
                    other.status == "awaiting_approval"
                    and (other.module, other.env, other.mode) == (job.module, env, mode)
                    and other.digest == job.digest
                    and other.requester.same_as(requester)
                ):
                    raise UserError(
                        f"job {other.id} ({other.command}) is already waiting for approval"
                    )
        self.jobs[job.id] = job
        if rule is not None:
            job.status = "awaiting_approval"
            job.expires_at = job.created_at + rule.ttl_s
            await self.store.job_insert(job.record())
            self.runs.event("deploy.requested", job)
            flags = FlagMask.parse(rule.flags).describe(channel)
            news = self.runs.news(
                job, "approval", approvers=rule.approvers, approval_flags=flags, ttl_s=rule.ttl_s
            )
            await self.runs.announce(news)
            return job
        await self.store.job_insert(job.record())
        self.runs.event("deploy.requested", job)
        await self.runs.start(job)
        return job

    async def _check_requires(self, module: Module, env: str) -> None:
        for dep in module.manifest.requires:
            if await self.store.job_last_success(dep, env) is None:
                raise UserError(
                    f"{module.name} requires {dep} deployed to {env} first "
                    f"(no successful !deploy {dep} {env} on record)"
                )

    def _new_id(self) -> str:
        while True:
            job_id = secrets.token_hex(3)
            if job_id not in self.jobs:
                return job_id

    async def approve(
        self, job_id: str, approver: Person, allowed: Callable[[FlagMask, str | None], bool]
    ) -> str:
        job = self.get(job_id)
        await self._refuse_if_expired(job)
        self._may_approve(job, approver, allowed)
        current = self.modules.current.get(job.module)
        changed = (
            current is None
            or await job_digest(current, job.env, job.mode, job.params) != job.digest
        )
        # Hashing awaited: another !approve, a !cancel or an expiry may have
        # run meanwhile, and the TTL may have passed. Check again, then decide
        # with no await in between (an unexpired job's check does not suspend),
        # so a double-sent !approve can neither count twice nor start twice.
        await self._refuse_if_expired(job)
        rule = self._may_approve(job, approver, allowed)
        if changed:
            await self.runs.close(job, "cancelled", "the module changed since the request")
            raise UserError(
                f"job {job.id} cancelled: {job.module} changed since it was requested; "
                "request it again"
            )
        job.approvals.append((approver, time.time()))
        left = rule.approvers - len(job.approvals)
        if left <= 0:
            job.status = "starting"
        # Stored as still awaiting approval: "starting" is never stored (the
        # status says so only in memory, so a second !approve cannot start it).
        await self.store.job_update(dataclasses.replace(job.record(), status="awaiting_approval"))
        self.runs.event("deploy.approved", job, approver=approver.handle)
        if left > 0:
            return f"job {job.id}: approved by {approver.handle}, {left} more needed"
        await self.runs.start(job)
        return f"job {job.id}: approved by {approver.handle}"

    async def _refuse_if_expired(self, job: Job) -> None:
        """An approval or denial that arrives after the TTL finds the job
        expired: it is closed now (the ticker may not have run yet) and the
        caller is told so."""
        if job.status != "awaiting_approval" or job.expires_at is None:
            return
        if time.time() < job.expires_at:
            return
        await self.runs.close(job, "expired", "no approval in time")
        raise UserError(
            f"job {job.id} expired at {clock_time(job.expires_at)} (approvals are taken for "
            f"{age(job.rule.ttl_s if job.rule else 0)}); request it again"
        )

    @staticmethod
    def _may_approve(
        job: Job, approver: Person, allowed: Callable[[FlagMask, str | None], bool]
    ) -> ApprovalRule:
        """The job's approval rule if ``approver`` may approve it now; else UserError."""
        if job.status != "awaiting_approval" or job.rule is None:
            raise UserError(f"job {job.id} is not waiting for approval ({job.status})")
        if approver.same_as(job.requester):
            raise UserError(f"you requested job {job.id}; someone else must approve it")
        mask = FlagMask.parse(job.rule.flags)
        if not allowed(mask, job.channel):
            raise UserError(f"you need {mask.describe(job.channel)} to approve job {job.id}")
        if any(p.same_as(approver) for p, _ in job.approvals):
            raise UserError(f"you already approved job {job.id}")
        return job.rule

    async def deny(
        self,
        job_id: str,
        who: Person,
        allowed: Callable[[FlagMask, str | None], bool],
        reason: str,
    ) -> str:
        job = self.get(job_id)
        await self._refuse_if_expired(job)
        if job.status != "awaiting_approval" or job.rule is None:
            raise UserError(f"job {job.id} is not waiting for approval ({job.status})")
        mask = FlagMask.parse(job.rule.flags)
        if not who.same_as(job.requester) and not allowed(mask, job.channel):
            raise UserError(f"you need {mask.describe(job.channel)} to deny job {job.id}")
        reason = without_hidden(reason)
        why = f"denied by {who.handle}" + (f": {REDACTOR.redact(reason)[:200]}" if reason else "")
        await self.runs.close(job, "denied", why)
        return f"job {job.id} ({job.command}) {why}"

    async def cancel(
        self, job_id: str, who: Person, allowed: Callable[[FlagMask, str | None], bool]
    ) -> str:
        job = self.get(job_id)
        if job.status not in ACTIVE:
            raise UserError(f"job {job.id} is already {job.status}")
        module = self.modules.current.get(job.module)
        mask = FlagMask.parse(module.manifest.flags if module else "m|m")
        if not who.same_as(job.requester) and not allowed(mask, job.channel):
            raise UserError(f"you need {mask.describe(job.channel)} to cancel job {job.id}")
        if job.status == "awaiting_approval":
            await self.runs.close(job, "cancelled", f"cancelled by {who.handle}")
            return f"job {job.id} cancelled"
        # starting or running: the runner stops at once (before or after exec)
        job.reason = f"cancelled by {who.handle}"
        job.cancel.set()
        return f"job {job.id}: cancelling (the process group gets SIGTERM, then SIGKILL)"

    def account_changed(
        self, nick: str, account: str | None, same_nick: Callable[[str, str], bool]
    ) -> None:
        """The network says ``nick`` is now logged in as ``account`` (None: out).
        A waiting job whose requester lost the account it asked with is cancelled."""
        for job in self._waiting_for(nick, same_nick):
            r = job.requester
            if r.account and (account or "").casefold() != r.account.casefold():
                self._drop_waiting(job, "the requester lost their account")

    def requester_gone(self, nick: str, why: str, same_nick: Callable[[str, str], bool]) -> None:
        """``nick`` quit IRC or left the last channel the bot shares with them:
        the jobs they are waiting on are cancelled (``why`` says which)."""
        for job in self._waiting_for(nick, same_nick):
            self._drop_waiting(job, why)

    def connection_lost(self) -> None:
        """The bot's own IRC connection ended: it can no longer tell whether a
        requester is still there, so every waiting job is cancelled."""
        for job in self.live():
            if job.status == "awaiting_approval":
                self._drop_waiting(job, "the bot lost its IRC connection; request it again")

    def _waiting_for(self, nick: str, same_nick: Callable[[str, str], bool]) -> list[Job]:
        return [
            job
            for job in self.live()
            if job.status == "awaiting_approval"
            and job.requester.nick
            and same_nick(job.requester.nick, nick)
        ]

    def _drop_waiting(self, job: Job, reason: str) -> None:
        # The status changes now, so that a second signal for the same
        # requester (a QUIT seen on two channels) does not close it twice.
        job.status = "cancelled"
        self.runs.spawn(self.runs.close(job, "cancelled", reason))

    def nick_changed(self, old: str, new: str, same_nick: Callable[[str, str], bool]) -> None:
        for job in self.live():
            r = job.requester
            if r.nick and same_nick(r.nick, old):
                job.requester = dataclasses.replace(r, nick=new)

    async def expire(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for job in self.live():
            if job.status == "awaiting_approval" and job.expires_at and now >= job.expires_at:
                await self.runs.close(job, "expired", "no approval in time")

    def forget_finished(self, keep_s: float = 3600.0) -> None:
        cutoff = time.time() - keep_s
        for job_id, job in list(self.jobs.items()):
            if job.status in TERMINAL and (job.finished_at or 0) < cutoff:
                del self.jobs[job_id]

    async def recover(self) -> int:
        """At start: jobs a previous process left active are interrupted and
        their leases released (one bot owns the store)."""
        stale = await self.store.jobs_list(limit=1000, statuses=list(ACTIVE))
        for row in stale:
            await self.store.job_update(
                dataclasses.replace(
                    row,
                    status="interrupted",
                    reason="the bot stopped while the job was active",
                    finished_at=time.time(),
                )
            )
            await self.store.lease_release(deploy_lease(row.module, row.env), row.id)
        return len(stale)

    async def run(self) -> None:
        """The ticker: progress lines, approval expiry, forgetting old jobs."""
        await self.recover()
        try:
            while True:
                await asyncio.sleep(self.config.progress_interval_s)
                self.runs.progress_tick()
                await self.expire()
                self.forget_finished()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        await self.runs.shutdown()
