"""The deploy commands: ``!deploy !plan !approve !deny !cancel !jobs !job !modules``.

How this works.  They are ordinary bindings (owner ``builtin:deploy``),
bound ``-|-`` because who may run a module is the module's business: the
manifest's ``flags`` are checked here against the caller's global flags and
their flags on the channel the command came from (a private message counts
global flags only).  Everything is validated before a job exists; every
refusal is one line that says why, addressed to the caller.  Users without
a user record are refused everything but ``!jobs`` (live jobs) and
``!modules``; job records (``!jobs all``, ``!job ID``) need a user record
holding ``deploy.job_flags`` (default ``-|-``: any known user).

A request that waits for approval is kept only while its requester is on
IRC as they were when asking; the ``sign``/``part``/``kick``/``account``
bindings and the ``disconnect-server`` event below tell the job manager
when that ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..bindings.event import ConsoleSession, Event
from ..bindings.flags import FlagMask
from ..deploy import bothost
from ..deploy.job import Person
from ..deploy.jobs import JobManager
from ..deploy.params import parse_args, validate_params
from ..errors import UserError
from ..outputs.targets import Target
from ..store.api import JobRecord
from .core import guarded
from .host import DeployHost
from .paging import private_page, split_page

__all__ = ["OWNER", "bindings"]

OWNER = "builtin:deploy"
BOT_HOST_FLAGS = FlagMask.parse("n")
"""Who may run a module on the bot's own host (with ``allow_bot_host``): a global owner."""


# What each command takes: its usage line and its help text say the same.
_ARGS = {
    "deploy": "MODULE ENV [key=value ...]",
    "plan": "MODULE ENV [key=value ...]",
    "approve": "JOB",
    "deny": "JOB [reason]",
    "cancel": "JOB",
    "job": "JOB [page]",
}


def _usage(name: str) -> UserError:
    return UserError(f"usage: !{name} {_ARGS[name]}")


def _to(ev: Event) -> str:
    return f"{ev.nick}: " if ev.nick and ev.channel else ""


def _who(
    app: DeployHost, ev: Event, *, approving: bool = False, what: str = ""
) -> tuple[Person, Callable[[FlagMask, str | None], bool]]:
    """The caller as a Person, and a check of their flags on a channel.
    ``approving``: also refused when the match may not approve at all
    (a hostmask match the user table does not trust with privileges);
    ``what``: the command refused to an unknown caller, for the refusal."""
    who = app.resolve(ev)
    if who is None:
        head = f"{what} is for known users: no" if what else "no"
        raise UserError(f"{head} user record matches you ({ev.hostmask}); ask an admin for one")
    if approving and (why := who.approval_refusal()) is not None:
        raise UserError(why)

    def allowed(mask: FlagMask, channel: str | None) -> bool:
        chan = who.channel_flags(channel) if channel else ""
        return mask.allows(who.global_flags(), chan)

    peer = ev.peer
    console = Target(peer.transport, peer.session) if isinstance(peer, ConsoleSession) else None
    trusted = who.restricted is None
    return Person(who.handle, ev.nick, ev.account, trusted=trusted, console=console), allowed


def _may_read_jobs(app: DeployHost, jobs: JobManager, ev: Event, what: str) -> None:
    """Job records name people, modules and parameters: known users only."""
    _, allowed = _who(app, ev, what=what)  # one resolve, not a second to word the refusal
    mask = FlagMask.parse(jobs.config.job_flags)
    if not allowed(mask, ev.channel):
        raise UserError(f"you need {mask.describe(ev.channel)} for {what}")


async def _request(app: DeployHost, jobs: JobManager, ev: Event, mode: str) -> None:
    if len(ev.args) < 2:
        raise _usage(mode)
    name, env, *words = ev.args
    module = jobs.module(name)
    person, allowed = _who(app, ev)
    mask = FlagMask.parse(module.manifest.flags)
    if not allowed(mask, ev.channel):
        raise UserError(f"you need {mask.describe(ev.channel)} to {mode} {module.name}")
    params = validate_params(module.manifest, env, parse_args(words))
    owner = allowed(BOT_HOST_FLAGS, None)  # judged now; the module config again at start
    await bothost.check(
        module, env, params, lambda: app.module_config(module.name, env),
        owner=owner, project_dir=app.config.project_dir, extra_env=jobs.passed_env(),
    )  # fmt: skip
    needs_approval = mode == "deploy" and env in module.manifest.approval
    if needs_approval and ev.source == "irc" and ev.nick and not app.irc.shares_channel(ev.nick):
        # Its QUIT would never reach the bot: the request could outlive them.
        raise UserError(
            f"join a channel I am on first: a request waiting for approval is kept "
            f"only while I can see you ({env} needs approval)"
        )
    job = await jobs.request(module, env, "plan" if mode == "plan" else "deploy", params,
                             person, ev.channel, owner=owner)  # fmt: skip
    if job.status == "awaiting_approval":
        return  # announced to the channels already
    if job.status == "refused":
        raise UserError(f"job {job.id} refused: {job.reason}")


def bindings(app: DeployHost, jobs: JobManager) -> None:
    """Bind the deploy commands (owner ``builtin:deploy``); the runtime
    collects them and swaps them in at once (``BindingTable.install``)."""
    table = app.table
    prefix = app.command_prefix

    async def deploy(ev: Event) -> None:
        await _request(app, jobs, ev, "deploy")

    async def plan(ev: Event) -> None:
        await _request(app, jobs, ev, "plan")

    async def approve(ev: Event) -> None:
        if len(ev.args) != 1:
            raise _usage("approve")
        person, allowed = _who(app, ev, approving=True)
        ev.reply(_to(ev) + await jobs.approve(ev.args[0], person, allowed))

    async def deny(ev: Event) -> None:
        if not ev.args:
            raise _usage("deny")
        person, allowed = _who(app, ev)
        ev.reply(_to(ev) + await jobs.deny(ev.args[0], person, allowed, " ".join(ev.args[1:])))

    async def cancel(ev: Event) -> None:
        if len(ev.args) != 1:
            raise _usage("cancel")
        person, allowed = _who(app, ev)
        ev.reply(_to(ev) + await jobs.cancel(ev.args[0], person, allowed))

    async def list_jobs(ev: Event) -> None:
        # Paged (!jobs 2, !jobs all 2): a few lines per request, privately.
        everything = bool(ev.args) and ev.args[0].lower() == "all"
        _, page = split_page(ev.args, 1 if everything else 0)
        if everything:
            _may_read_jobs(app, jobs, ev, "!jobs all")
            rows = await app.store.jobs_list(limit=20)
            if not rows:
                ev.private("no jobs on record")
            private_page(ev, app.command_prefix, [_row_line(r) for r in rows], page, "jobs all")
            return
        live = jobs.live()
        if not live:
            ev.reply(_to(ev) + "no jobs running or waiting (!jobs all for history)")
            return
        private_page(
            ev, app.command_prefix, [_row_line(job.record()) for job in live[:20]], page, "jobs"
        )

    async def show_job(ev: Event) -> None:
        args, page = split_page(ev.args, 1)
        if len(args) != 1:
            raise _usage("job")
        _may_read_jobs(app, jobs, ev, "!job")
        job_id = args[0].lower()
        live = jobs.jobs.get(job_id)
        row = live.record() if live is not None else await app.store.job_get(job_id)
        if row is None:
            raise UserError(f"no job {job_id[:16]!r}")
        approvals = ", ".join(a.handle for a in row.approvals) or "none"
        lines = [_row_line(row), f"approvals: {approvals}; reason: {row.reason or '-'}"]
        lines += [f"| {line}" for line in row.tail[-10:]]
        private_page(ev, app.command_prefix, lines, page, f"job {job_id[:16]}")

    async def modules(ev: Event) -> None:
        current = app.modules.current
        names = [f"{m.name} {m.manifest.version} ({m.kind}: {','.join(m.manifest.environments)})"
                 for m in current.order]  # fmt: skip
        ev.private(f"{len(names)} modules: " + ("; ".join(names) or "none"))
        if current.errors:  # details name files: the console has them, not IRC
            ev.private(f"{len(current.errors)} module files failed to load "
                           "(see the log or `masterchief module validate`)")  # fmt: skip

    commands: tuple[tuple[str, Callable[[Event], Any], str], ...] = (
        ("deploy", deploy, "run a deploy module"),
        ("plan", plan, "dry run of a module"),
        ("approve", approve, "approve a waiting job"),
        ("deny", deny, "refuse a waiting job"),
        ("cancel", cancel, "stop a running or waiting job"),
        ("jobs", list_jobs, "running and waiting jobs (jobs all: history)"),
        ("job", show_job, "a job's status, approvals and last lines"),
        ("modules", modules, "the deploy modules"),
    )
    for name, fn, what in commands:
        doc = f"{what}: {name} {_ARGS[name]}" if name in _ARGS else what
        handler = guarded(fn, fn.__name__, doc, _to)
        table.bind("pub", "-|-", prefix + name, handler, owner=OWNER)
        table.bind("msg", "-|-", name, handler, owner=OWNER)

    def on_account(ev: Event) -> None:
        if ev.nick:
            jobs.account_changed(ev.nick, ev.account, app.irc.same_nick)

    def on_nick(ev: Event) -> None:
        if ev.nick and ev.text:
            jobs.nick_changed(ev.nick, ev.text, app.irc.same_nick)

    def on_sign(ev: Event) -> None:
        if ev.nick:  # one event per shared channel; the first one cancels
            jobs.requester_gone(ev.nick, "the requester quit IRC", app.irc.same_nick)

    def on_leave(ev: Event) -> None:
        gone = ev.nick if ev.type == "part" else (ev.payload or {}).get("target")
        if isinstance(gone, str) and gone and not app.irc.shares_channel(gone):
            why = "the requester left the channels I can see them on"
            jobs.requester_gone(gone, why, app.irc.same_nick)

    def on_disconnect(ev: Event) -> None:
        jobs.connection_lost()

    table.bind("account", "-|-", "*", on_account, owner=OWNER)
    table.bind("nick", "-|-", "*", on_nick, owner=OWNER)
    table.bind("sign", "-|-", "*", on_sign, owner=OWNER)
    table.bind("part", "-|-", "*", on_leave, owner=OWNER)
    table.bind("kick", "-|-", "*", on_leave, owner=OWNER)
    table.bind("evnt", "-", "disconnect-server", on_disconnect, owner=OWNER)


def _row_line(r: JobRecord) -> str:
    when = time.strftime("%m-%d %H:%M", time.gmtime(r.created_at))
    params = " ".join(f"{k}={v}" for k, v in sorted(r.params.items()))
    head = f"{r.id} {r.status:<17} {r.mode} {r.module} {r.env} {params}".rstrip()
    extra = f" by {r.requester} at {when} UTC"
    if r.summary and r.status not in ("running", "awaiting_approval"):
        extra += f" — {r.summary}"
    return head + extra
