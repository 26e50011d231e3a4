"""Deploy jobs: request, approval, one run per (module, environment), progress.

How this works.  ``JobManager.request`` is given a module, an environment and
already validated parameters (the command layer checked the caller's flags
and the manifest).  It records a ``Job`` in the store and either waits for
approvals (when the manifest asks for them in that environment) or starts
it.  Starting takes the (module, environment) lease in the store -- one run
at a time, across processes -- and refuses with the holder's name when
another job has it.  The run itself is ``runners.run`` (a process group,
scrubbed environment, redacted output); every line lands in the job's tail,
may become a ``deploy.progress`` Event (only when a binding wants it), and
the newest line or task boundary is shown in the channels at most every
``progress_interval_s`` by one ticker for all jobs, so twenty jobs never
flood the pacer.  Starts and final summaries go through the durable outbox,
in order (``telling``): a job's process and its events begin only once its
"started" line is in the outbox, and a progress tick waits while anything
is on its way there, so nothing about a job overtakes its start or result.
A dry run's result is followed by what it would change (``plan_lines`` in
the channels; a longer plan goes to the requester privately).

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
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..bindings.event import Event
from ..bindings.flags import FlagMask
from ..config.schema import DeployConfig
from ..config.secrets import MASK, REDACTOR, Secret
from ..errors import UserError
from ..store.sqlite.store import Store
from ..text import without_hidden
from . import bothost, runners
from .catalog import ModuleLoader
from .manifest import ApprovalRule, Module, folder_digest
from .telling import Teller

__all__ = ["TERMINAL", "Job", "JobManager", "Person"]

log = logging.getLogger("masterchief.deploy")

Mode = Literal["deploy", "plan"]

TERMINAL = frozenset(
    {"succeeded", "failed", "timed_out", "cancelled", "denied", "expired", "interrupted", "refused"}
)
# "starting": approved, lease and process on their way (never stored)
ACTIVE = ("awaiting_approval", "starting", "running")


# A tick shows the task/step boundaries passed since the previous one, the
# last STEPS_SHOWN of them (each cut to STEP_CHARS) and how many more.
STEPS_SHOWN = 4
STEP_CHARS = 60
PLAN_CHARS = 300  # a plan line is cut here: one IRC line each


def _progress_text(job: Job) -> str:
    """What a progress tick says of one job: the boundaries it passed since
    the last tick (or the one it is in), then its newest output line."""
    steps = job.boundary
    if job.passed > 1:
        more = job.passed - len(job.passed_names)
        steps = (f"(+{more}) " if more > 0 else "") + " > ".join(job.passed_names)
    job.passed = 0
    job.passed_names.clear()
    if steps and job.latest:
        return f"{steps} | {job.latest}"
    return steps or job.latest


@dataclass(frozen=True, slots=True)
class Person:
    """Who asked or approved: the user record's handle, and how they were seen."""

    handle: str
    nick: str | None = None
    account: str | None = None
    # False for a match the user table does not trust with privileges (a weak
    # or untrusted hostmask): such a caller is nobody's "self", so acting on a
    # job as its requester needs the module's flags like anyone else.
    trusted: bool = True

    def same_as(self, other: Person) -> bool:
        if not self.trusted:
            return False
        if self.handle.casefold() == other.handle.casefold():
            return True
        return bool(self.account and other.account) and (
            str(self.account).casefold() == str(other.account).casefold()
        )

    def as_dict(self) -> dict[str, Any]:
        return {"handle": self.handle, "nick": self.nick, "account": self.account}


@dataclass(eq=False, slots=True)
class Job:
    id: str
    module: str
    module_version: str
    env: str
    mode: Mode
    params: dict[str, Any]
    shown: dict[str, str]  # parameters as shown: secret ones as ***
    digest: str
    requester: Person
    channel: str | None
    rule: ApprovalRule | None
    created_at: float
    # The requester held +n when asking: the bot-host rule's "who" part,
    # judged at request time only (an approved job is not re-judged on it).
    owner: bool = False
    status: str = "pending"
    approvals: list[tuple[Person, float]] = field(default_factory=list)
    expires_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    summary: str = ""
    reason: str | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=50))
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    latest: str = ""
    boundary: str = ""
    fresh: bool = False  # something new to show since the last progress tick
    # task/step boundaries passed since the last tick: how many, and the last few
    passed: int = 0
    passed_names: deque[str] = field(default_factory=lambda: deque(maxlen=STEPS_SHOWN))

    @property
    def command(self) -> str:
        words = [f"!{self.mode}", self.module, self.env]
        words += [f"{k}={v}" for k, v in sorted(self.shown.items())]
        return " ".join(words)

    @property
    def where(self) -> str:
        return f"{self.module}/{self.env}"

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "module": self.module,
            "module_version": self.module_version,
            "env": self.env,
            "mode": self.mode,
            "params": self.shown,
            "digest": self.digest,
            "requester": self.requester.handle,
            "requester_account": self.requester.account,
            "requester_nick": self.requester.nick,
            "channel": self.channel,
            "status": self.status,
            "approvals": [{**p.as_dict(), "at": at} for p, at in self.approvals],
            "reason": self.reason,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "tail": list(self.tail),
        }


def content_root(module: Module) -> Path:
    """The folder whose content a run uses: the module's, or the common parent
    of it and an entry outside it (``entry: ../playbooks/site.yml`` with roles)."""
    entry = module.entry if module.entry.is_dir() else module.entry.parent
    return Path(os.path.commonpath([module.dir, entry]))


async def job_digest(module: Module, env: str, mode: str, params: Mapping[str, Any]) -> str:
    """What an approval is bound to: module, its content as on disk now,
    environment, mode and parameters."""
    content = await asyncio.to_thread(folder_digest, content_root(module))
    plain = {k: v.reveal() if isinstance(v, Secret) else v for k, v in params.items()}
    body = json.dumps(
        [module.name, module.manifest.version, content, env, mode, plain],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _shown(module: Module, params: Mapping[str, Any]) -> dict[str, str]:
    specs = module.manifest.parameters
    out: dict[str, str] = {}
    for k, v in params.items():
        spec = specs.get(k)
        secret = isinstance(v, Secret) or (spec is not None and spec.secret)
        out[k] = MASK if secret else REDACTOR.redact(str(v))
    return out


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 90:
        return f"{s}s"
    if s < 5400:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(ts))


class JobManager:
    """Owns the live jobs.  ``run()`` is the ticker task (progress, expiry)."""

    def __init__(
        self,
        config: DeployConfig,
        store: Store,
        modules: ModuleLoader,
        *,
        announce: Callable[[str, str], Awaitable[None]],
        say: Callable[[str, str], object],
        submit: Callable[[Event], object],
        wants: Callable[[str], bool] = lambda key: True,
        module_config: Callable[[str, str], Mapping[str, Any]] = lambda name, env: {},
        pending: Callable[[], int] = lambda: 0,
        project_dir: Path = Path(),
    ) -> None:
        """``announce`` is the durable outbox's; ``pending`` how many
        announcements it has not yet handed to IRC (progress ticks wait
        while there are any, so they never overtake a job's start).
        ``module_config(name, env)`` loads a module's config for the job's
        environment; ``project_dir`` is where paths in messages are shown from."""
        self.config = config
        self.store = store
        self.modules = modules
        self._say = say
        self._submit = submit
        self._wants = wants
        self._module_config = module_config
        self._project_dir = project_dir
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._teller = Teller(announce)
        self._pending = pending
        self.stats = {"started": 0, "refused": 0, "lines": 0, "progress_lines": 0}

    # -- lookups ------------------------------------------------------------------

    def live(self, *, include_done: bool = False) -> list[Job]:
        jobs = sorted(self.jobs.values(), key=lambda j: j.created_at)
        return jobs if include_done else [j for j in jobs if j.status in ACTIVE]

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

    def targets(self, job: Job) -> list[str]:
        out: list[str] = []
        for t in (job.channel, *self.config.channels):
            if t and t.lower() not in {o.lower() for o in out}:
                out.append(t)
        if not out and job.requester.nick:
            out.append(job.requester.nick)
        return out

    # -- requests --------------------------------------------------------------

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
            shown=_shown(module, params),
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
            self._event("deploy.requested", job)
            need = f"{rule.approvers} approval{'s' if rule.approvers > 1 else ''}"
            flags = FlagMask.parse(rule.flags).describe(channel)
            await self._tell_all(
                job,
                f"job {job.id} ({job.command}, by {requester.handle}) needs {need} "
                f"from someone else with {flags}: !approve {job.id} "
                f"(expires in {_age(rule.ttl_s)})",
            )
            return job
        await self.store.job_insert(job.record())
        self._event("deploy.requested", job)
        await self._start(job)
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

    # -- approvals -------------------------------------------------------------

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
            await self._close(job, "cancelled", "the module changed since the request")
            raise UserError(
                f"job {job.id} cancelled: {job.module} changed since it was requested; "
                "request it again"
            )
        job.approvals.append((approver, time.time()))
        left = rule.approvers - len(job.approvals)
        if left <= 0:
            job.status = "starting"
        await self.store.job_update(job.id, approvals=job.record()["approvals"])
        self._event("deploy.approved", job, approver=approver.handle)
        if left > 0:
            return f"job {job.id}: approved by {approver.handle}, {left} more needed"
        await self._start(job)
        return f"job {job.id}: approved by {approver.handle}"

    async def _refuse_if_expired(self, job: Job) -> None:
        """An approval or denial that arrives after the TTL finds the job
        expired: it is closed now (the ticker may not have run yet) and the
        caller is told so."""
        if job.status != "awaiting_approval" or job.expires_at is None:
            return
        if time.time() < job.expires_at:
            return
        await self._close(job, "expired", "no approval in time")
        raise UserError(
            f"job {job.id} expired at {_clock(job.expires_at)} (approvals are taken for "
            f"{_age(job.rule.ttl_s if job.rule else 0)}); request it again"
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
        await self._close(job, "denied", why)
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
            await self._close(job, "cancelled", f"cancelled by {who.handle}")
            return f"job {job.id} cancelled"
        # starting or running: the runner stops at once (before or after exec)
        job.reason = f"cancelled by {who.handle}"
        job.cancel.set()
        return f"job {job.id}: cancelling (the process group gets SIGTERM, then SIGKILL)"

    # A request waiting for approval lives only while its requester is on IRC
    # as they were when asking (see the module doc): these are the ways the
    # bot learns that they no longer are.

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
        self._spawn(self._close(job, "cancelled", reason))

    def nick_changed(self, old: str, new: str, same_nick: Callable[[str, str], bool]) -> None:
        for job in self.live():
            r = job.requester
            if r.nick and same_nick(r.nick, old):
                job.requester = dataclasses.replace(r, nick=new)

    # -- running ---------------------------------------------------------------

    async def _start(self, job: Job) -> None:
        # Callers just computed (request) or checked (approve) the digest.
        if job.status in TERMINAL or job.status == "running":
            return  # closed meanwhile, or already started: never twice
        module = self.modules.current.get(job.module)
        if module is None:
            await self._close(job, "cancelled", "the module was removed")
            return
        if job.rule is not None:
            why = await self._bot_host_refusal(job, module)
            if job.status in TERMINAL or job.status == "running":
                return  # cancelled or expired while the inventory was read
            if why is not None:
                self.stats["refused"] += 1
                await self._close(job, "refused", why)
                return
        ttl = module.manifest.timeout_s + 2 * self.config.kill_grace_s + 60
        holder = f"job {job.id} ({job.mode} by {job.requester.handle}) on {self.holder}"
        taken = await self.store.lease_acquire(
            job.module, job.env, job_id=job.id, holder=holder, ttl_s=ttl
        )
        if taken is not None:
            self.stats["refused"] += 1
            why = f"{job.where} is busy: {taken['holder']} since {_clock(taken['acquired_at'])}"
            await self._close(job, "refused", why)
            return
        job.status = "running"
        job.started_at = time.time()
        self.stats["started"] += 1
        await self.store.job_update(job.id, status="running", started_at=job.started_at)
        await self._tell_all(job, f"job {job.id} started: {job.command} by {job.requester.handle}")

        def begin() -> None:
            # Only now: the event, the process and everything it prints come
            # after the "started" line, which is in the outbox.
            self._event("deploy.started", job)
            self._spawn(self._run(job, module))

        self._teller.after(begin)

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
            result = await runners.run(
                spec, lambda line: self._output(job, line), cancel=job.cancel
            )
            status, code = result.status, result.exit_code
            summary = result.summary
            plan = (result.changes, result.change_count)
        except Exception:
            ref = secrets.token_hex(3)
            log.exception("job %s (%s) could not run (ref %s)", job.id, job.where, ref)
            summary = f"could not run (ref {ref})"
        finally:
            with contextlib.suppress(Exception):
                await self.store.lease_release(job.module, job.env, job.id)
        job.exit_code = code
        await self._close(job, status, job.reason, summary=summary, plan=plan)

    def passed_env(self) -> dict[str, str]:
        """``deploy.pass_env``: variables of the bot's own environment that jobs
        get (cloud credentials, KUBECONFIG, SSH_AUTH_SOCK).  Their values are
        treated as secrets: never shown."""
        out = {n: os.environ[n] for n in self.config.pass_env if os.environ.get(n)}
        for value in out.values():
            REDACTOR.register(value)
        return out

    def _output(self, job: Job, line: runners.OutputLine) -> None:
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

    async def _close(
        self,
        job: Job,
        status: str,
        reason: str | None,
        *,
        summary: str | None = None,
        plan: tuple[tuple[str, ...], int] = ((), 0),
    ) -> None:
        """Record the job's end and tell the channels (a dry run: with what it
        would change); the ``deploy.finished`` event follows the result line."""
        job.status = status
        job.reason = reason
        job.finished_at = time.time()
        took = job.finished_at - (job.started_at or job.created_at)
        if summary is None:
            summary = f"{status}" + (f": {reason}" if reason else "")
        summary = summary.removesuffix(f" (job {job.id})")
        job.summary = REDACTOR.redact(summary)
        await self.store.job_update(
            job.id,
            status=status,
            reason=job.reason,
            finished_at=job.finished_at,
            exit_code=job.exit_code,
            summary=job.summary,
            tail=list(job.tail),
        )
        text = f"job {job.id} {job.where} {job.mode} "
        if job.started_at is None:
            text += f"{status}: {reason}" if reason else status
        else:
            text += f"{job.summary}" if job.summary else f"{status} in {took:.1f}s"
            if reason and reason not in text:
                text += f" ({reason})"
        await self._tell_all(job, text)
        if job.mode == "plan" and plan[1]:
            self._tell_plan(job, text, *plan)
        self._teller.after(lambda: self._event("deploy.finished", job))

    # -- telling people -------------------------------------------------------------

    async def _tell_all(self, job: Job, text: str) -> None:
        """Starts, summaries, approvals: durable, gathered and in order (``telling``)."""
        text = REDACTOR.redact(text)
        for target in self.targets(job):
            self._teller.tell(target, text)

    def _tell_plan(self, job: Job, result: str, lines: tuple[str, ...], count: int) -> None:
        """A dry run's first lines of what would change: in the channels when
        they are few (``plan_lines``), else to the requester privately (up to
        ``plan_private_lines``) and a pointer in the channels."""
        cfg = self.config
        targets = self.targets(job)
        nick = job.requester.nick
        private = nick is not None and not any(self._same_target(nick, t) for t in targets)
        if count <= cfg.plan_lines or not private or not cfg.plan_private_lines:
            shown = cfg.plan_private_lines if not private else cfg.plan_lines
            plan = self._plan_texts(job, lines, count, shown)
            for target in targets:
                for text in plan:
                    self._teller.tell(target, text, packable=False)
            return
        assert nick is not None
        for target in targets:
            pointer = f"[{job.id}] {count} changes: the plan went to {nick} privately"
            self._teller.tell(target, pointer, packable=False)
        self._teller.tell(nick, REDACTOR.redact(result), packable=False)
        for text in self._plan_texts(job, lines, count, cfg.plan_private_lines):
            self._teller.tell(nick, text, packable=False)

    @staticmethod
    def _plan_texts(job: Job, lines: tuple[str, ...], count: int, shown: int) -> list[str]:
        texts = [REDACTOR.redact(f"[{job.id}] {line}")[:PLAN_CHARS] for line in lines[:shown]]
        if count > len(texts):
            more = count - len(texts)
            texts.append(f"[{job.id}] ... {more} more (the job's last lines: !job {job.id})")
        return texts

    @staticmethod
    def _same_target(a: str, b: str) -> bool:
        return a.casefold() == b.casefold()

    def _event(self, key: str, job: Job, **extra: Any) -> None:
        payload = {k: v for k, v in job.record().items() if k != "tail"}
        self._submit(Event(type="event", key=key, source="deploy", payload={**payload, **extra}))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def progress_tick(self, now: float | None = None) -> int:
        """Show what is new in running jobs: one line per job, or one combined
        line per channel when more than three jobs have news.  Returns lines sent.

        Skipped (the news keeps for the next tick) while a start or result
        is on its way to IRC: progress goes straight to the pacer and must
        not overtake it."""
        now = time.time() if now is None else now
        if self._teller.busy or self._pending() > 0:
            return 0
        news: dict[str, list[tuple[Job, str]]] = {}
        for job in self.live():
            if job.status != "running" or not job.fresh:
                continue
            job.fresh = False
            what = _progress_text(job)
            if not what:
                continue
            for target in self.targets(job):
                news.setdefault(target, []).append((job, what))
        sent = 0
        for target, items in news.items():
            if len(items) <= 3:
                for job, what in items:
                    self._say(
                        target,
                        f"[{job.id} {job.where} {_age(now - (job.started_at or now))}] {what}",
                    )
                    sent += 1
            else:
                parts = [f"{job.id} {job.where}: {what[:60]}" for job, what in items]
                self._say(target, f"{len(items)} jobs running — " + "; ".join(parts))
                sent += 1
        self.stats["progress_lines"] += sent
        return sent

    async def expire(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for job in self.live():
            if job.status == "awaiting_approval" and job.expires_at and now >= job.expires_at:
                await self._close(job, "expired", "no approval in time")

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
                row["id"],
                status="interrupted",
                reason="the bot stopped while the job was active",
                finished_at=time.time(),
            )
            await self.store.lease_release(row["module"], row["env"], row["id"])
        return len(stale)

    async def run(self) -> None:
        """The ticker: progress lines, approval expiry, forgetting old jobs."""
        await self.recover()
        try:
            while True:
                await asyncio.sleep(self.config.progress_interval_s)
                self.progress_tick()
                await self.expire()
                self.forget_finished()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        for job in self.live():
            if job.status == "running":
                job.reason = "the bot is stopping"
                job.cancel.set()
        await self._teller.drain(timeout=5)  # a run about to begin begins, cancelled
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.kill_grace_s + 5)
        await self._teller.drain(timeout=5)
