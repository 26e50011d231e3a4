"""A deploy job as a record: who asked, what, where, how it stands.

How this works.  A ``Job`` is the live, in-memory state of one request
(its approvals, its output tail, what the next progress tick shows);
``record()`` is what the store keeps and ``payload()`` what the
``deploy.*`` Events carry -- parameters as shown, secret ones as ``***``.
``job_digest`` is what approvals are bound to: module name, version and
folder content, environment, mode and parameters.  ``Person`` is who asked
or approved, and ``same_as`` decides who counts as the same person.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol

from ..config.secrets import MASK, REDACTOR, Secret
from ..outputs.targets import Target
from ..store.api import Approval, JobRecord, JobStore, LeaseStore
from .manifest import ApprovalRule, Module, folder_digest

__all__ = [
    "ACTIVE",
    "PLAN_CHARS",
    "STEPS_SHOWN",
    "STEP_CHARS",
    "TERMINAL",
    "DeployStore",
    "Job",
    "JobNews",
    "Mode",
    "Person",
    "Progress",
    "age",
    "clock_time",
    "content_root",
    "deploy_lease",
    "job_digest",
    "live",
    "progress_text",
    "shown_params",
]

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


def progress_text(job: Job) -> str:
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
    # A requester who asked from a console (partyline, web) rather than IRC:
    # their session, where they are told what the channels are told.
    console: Target | None = None

    @property
    def private_target(self) -> Target | None:
        """Where this person is told privately: the console session, else the
        nick on IRC (which follows nick changes)."""
        if self.console is not None:
            return self.console
        return Target.irc(self.nick) if self.nick else None

    def same_as(self, other: Person) -> bool:
        if not self.trusted:
            return False
        if self.handle.casefold() == other.handle.casefold():
            return True
        return bool(self.account and other.account) and (
            str(self.account).casefold() == str(other.account).casefold()
        )


@dataclass(frozen=True, slots=True)
class JobNews:
    """What a ``deploy.announce`` Event tells of a job (``deploy/announce.py``
    makes the lines).  Texts are as shown: secret parameters as ``***``."""

    what: Literal["approval", "started", "finished"]
    job: str  # its id
    where: str  # module/env
    mode: str
    command: str
    requester: str  # the handle
    targets: tuple[Target, ...]  # its channels (and a console requester's session)
    private: Target | None  # where the requester is told privately
    status: str
    reason: str | None = None
    summary: str = ""
    took: float | None = None  # seconds it ran; None: it never started
    approvers: int = 0  # approvals still needed ("approval")
    approval_flags: str = ""  # who may approve, described
    ttl_s: float = 0.0
    plan: tuple[str, ...] = ()  # a dry run's first changes ("finished")
    plan_count: int = 0  # how many changes in all


@dataclass(frozen=True, slots=True)
class Progress:
    """One running job's news in a progress tick (a ``deploy.announce`` Event
    whose payload is a tuple of these)."""

    job: str
    where: str
    age: str  # how long it has run, as shown
    what: str  # the boundaries passed and the newest line (``progress_text``)
    targets: tuple[Target, ...]


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

    def record(self) -> JobRecord:
        """The job as the store keeps it (parameters as shown: secrets ``***``)."""
        return JobRecord(
            id=self.id,
            module=self.module,
            module_version=self.module_version,
            env=self.env,
            mode=self.mode,
            params=MappingProxyType(dict(self.shown)),
            digest=self.digest,
            requester=self.requester.handle,
            requester_account=self.requester.account,
            requester_nick=self.requester.nick,
            channel=self.channel,
            status=self.status,
            approvals=tuple(Approval(p.handle, at, p.nick, p.account) for p, at in self.approvals),
            reason=self.reason,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            exit_code=self.exit_code,
            summary=self.summary,
            tail=tuple(self.tail),
        )

    def payload(self) -> dict[str, Any]:
        """The ``deploy.*`` Events' payload: the record without the output tail."""
        rec = self.record()
        out = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec) if f.name != "tail"}
        out["params"] = dict(rec.params)
        out["approvals"] = [dataclasses.asdict(a) for a in rec.approvals]
        return out


class DeployStore(JobStore, LeaseStore, Protocol):
    """What deploy needs of the store: job history and the run leases."""


def deploy_lease(module: str, env: str) -> str:
    """The lease one run of ``module`` in ``env`` holds."""
    return f"deploy:{module}/{env}"


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


def shown_params(module: Module, params: Mapping[str, Any]) -> dict[str, str]:
    specs = module.manifest.parameters
    out: dict[str, str] = {}
    for k, v in params.items():
        spec = specs.get(k)
        secret = isinstance(v, Secret) or (spec is not None and spec.secret)
        out[k] = MASK if secret else REDACTOR.redact(str(v))
    return out


def age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 90:
        return f"{s}s"
    if s < 5400:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def clock_time(ts: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(ts))


def live(jobs: Mapping[str, Job], *, include_done: bool = False) -> list[Job]:
    """``jobs`` oldest first; only the active ones unless ``include_done``."""
    ordered = sorted(jobs.values(), key=lambda j: j.created_at)
    return ordered if include_done else [j for j in ordered if j.status in ACTIVE]
