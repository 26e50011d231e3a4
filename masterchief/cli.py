"""The ``masterchief`` command: run the bot, manage its users.

Every subcommand takes ``--config-dir`` and ``--env`` (or the environment
variables ``MASTERCHIEF_CONFIG_DIR`` / ``MASTERCHIEF_ENV``) and works on the
store that configuration names -- the same file the running bot uses.
Errors are one ``error: ...`` line on stderr and a nonzero exit: 2 for bad
configuration, 1 for anything else.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from masterchief.config.engine import ConfigError, load_config, require_environment
from masterchief.config.schema import Config
from masterchief.errors import UserError
from masterchief.identity.users import (
    User,
    UserTable,
    WeakHostmask,
    check_hostmask_strength,
    is_weak_hostmask,
    unprivileged,
)
from masterchief.store.api import EventLogRecord, ReplayRequest, Store, StoreError
from masterchief.store.sqlite import open_store

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

EXIT_ERROR = 1
EXIT_CONFIG = 2
PASSWORD_ENV = "MASTERCHIEF_PASSWORD"  # noqa: S105 (a variable name, not a password)


def _config_options(fn: F) -> F:
    fn = click.option(
        "--env",
        "env",
        default="dev",
        show_default=True,
        envvar="MASTERCHIEF_ENV",
        help="Environment: merges CONFIG_DIR/environments/ENV.yaml over the global config.",
    )(fn)
    fn = click.option(
        "--config-dir",
        "config_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("config"),
        show_default=True,
        envvar="MASTERCHIEF_CONFIG_DIR",
        help="Configuration directory (holds global/config.yaml).",
    )(fn)
    return fn


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    for line in message.splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(code)


STORE_ONLY = ("store",)
"""What the offline store commands resolve: user, jobs, events need the store
path and nothing else, so they work without the bot's IRC or webhook secrets."""


def _load(
    config_dir: Path, env: str, *, sections: Sequence[str] | None = None, lenient: bool = False
) -> Config:
    """The configuration; ``sections``: resolve references only there (see
    ``load_config``), ``lenient``: keep an unresolvable one as unresolved.
    An environment named by ``--env`` or ``MASTERCHIEF_ENV`` must have its
    file; the default (dev) may have none."""
    ctx = click.get_current_context(silent=True)
    named = ctx is not None and ctx.get_parameter_source("env") not in (
        None,
        click.core.ParameterSource.DEFAULT,
    )
    try:
        if named:
            require_environment(config_dir, env)
        return load_config(config_dir, env, sections=sections, lenient=lenient)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _with_users(config: Config, action: Callable[[UserTable], Awaitable[T]]) -> T:
    """Open the bot's store, load the user table, run ``action``, close."""

    async def on_users(store: Store) -> T:
        return await action(await UserTable.load(store))

    return _with_store(config, on_users)


def _flags_text(flags: str) -> str:
    return f"+{flags}" if flags else "-"


@click.group()
@click.version_option(package_name="masterchief")
def main() -> None:
    """MasterChief: an Eggdrop-style ChatOps bot."""


@main.command()
@_config_options
def run(config_dir: Path, env: str) -> None:
    """Connect to IRC and run the bot until SIGINT/SIGTERM."""
    config = _load(config_dir, env)
    from masterchief.runtime.app import run_bot  # imported late: the CLI's user commands stay light

    try:
        code = asyncio.run(run_bot(config))
    except KeyboardInterrupt:
        code = 130
    except ConfigError as exc:  # checks that need the running parts (e.g. REST select)
        click.echo(f"error: {exc}", err=True)
        code = 2
    sys.exit(code)


@main.group("config")
def config_group() -> None:
    """The effective configuration: config show."""


@config_group.command("show")
@_config_options
def config_show(config_dir: Path, env: str) -> None:
    """Print the effective configuration (global, then ENV merged over it) as
    YAML, with every secret as ***."""
    import yaml

    config = _load(config_dir, env, lenient=True)
    data = config.redacted_dump()
    header = f"# effective configuration: {config.config_dir} --env {config.env}\n"
    click.echo(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@main.group()
def sources() -> None:
    """Input sources (REST pollers, watched folders, tailed logs, webhook
    intake, the clock, replays): sources status."""


@sources.command("status")
@_config_options
def sources_status(config_dir: Path, env: str) -> None:
    """Every configured source as the running bot last stored it (state,
    events, errors, pending, last success, and when); the bot writes them
    every few seconds while it runs."""
    config = _load(config_dir, env, lenient=True)
    from masterchief.sources.families import FAMILIES
    from masterchief.sources.runner import STATUS_PREFIX
    from masterchief.sources.status import stored_sources

    configured = [
        (fam.name, str(getattr(entry, "name", "")))
        for fam in FAMILIES
        for entry in fam.entries(config)
    ]
    stored = _with_store(config, lambda st: st.checkpoints(STATUS_PREFIX))
    for line in stored_sources(configured, stored, time.time()):
        click.echo(line)


@main.group()
def files() -> None:
    """Watched folders and tailed logs: files status."""


@files.command("status")
@_config_options
def files_status(config_dir: Path, env: str) -> None:
    """Each watched folder (pending, processed, quarantined) and tailed log (file, offset,
    lines/s as stored by the bot, with when it was measured)."""
    config = _load(config_dir, env, sections=("store", "files"))
    from masterchief.sources.status import folder_rows, format_status, log_rows

    async def report() -> list[str]:
        store = await open_store(config.store.path)
        try:
            return format_status(await folder_rows(config, store), await log_rows(store))
        finally:
            await store.close()

    for line in asyncio.run(report()):
        click.echo(line)


def _with_store(config: Config, action: Callable[[Store], Awaitable[T]]) -> T:
    """Open the bot's store, run ``action``, close."""

    async def go() -> T:
        store = await open_store(config.store.path)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except (UserError, StoreError) as exc:
        _fail(str(exc))


@main.group()
def jobs() -> None:
    """Deploy job history: jobs list | jobs show JOB."""


_JOB_STATUSES = (
    "awaiting_approval",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "denied",
    "expired",
    "interrupted",
    "refused",
)


def _utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@jobs.command("list")
@click.option("--status", "statuses", multiple=True, type=click.Choice(_JOB_STATUSES))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@_config_options
def jobs_list(config_dir: Path, env: str, statuses: tuple[str, ...], limit: int) -> None:
    """Jobs, newest first: id, status, mode, module, env, requester, times."""
    config = _load(config_dir, env, sections=STORE_ONLY)
    rows = _with_store(config, lambda st: st.jobs_list(limit=limit, statuses=statuses or None))
    if not rows:
        click.echo("no jobs")
        return
    for r in rows:
        took = f"{r.finished_at - r.started_at:.1f}s" if r.finished_at and r.started_at else "-"
        click.echo(
            f"{r.id}  {r.status:<17} {r.mode:<6} {r.module:<20} {r.env:<10} "
            f"{r.requester:<12} {_utc(r.created_at)}  {took:>8}  exit {r.exit_code}"
        )


@jobs.command("show")
@click.argument("job_id")
@_config_options
def jobs_show(config_dir: Path, env: str, job_id: str) -> None:
    """Everything recorded about one job (parameters with secrets as ***)."""
    config = _load(config_dir, env, sections=STORE_ONLY)
    row = _with_store(config, lambda st: st.job_get(job_id.lower()))
    if row is None:
        _fail(f"no job {job_id!r}")
    params = " ".join(f"{k}={v}" for k, v in sorted(row.params.items())) or "-"
    requester = row.requester + (
        f" (account {row.requester_account})" if row.requester_account else ""
    )
    approvals = ", ".join(f"{a.handle} at {_utc(a.at)}" for a in row.approvals) or "none"
    for label, value in (
        ("job", row.id),
        ("module", f"{row.module} {row.module_version}"),
        ("environment", row.env),
        ("mode", row.mode),
        ("parameters", params),
        ("requested by", f"{requester} in {row.channel or 'a private message'}"),
        ("approvals", approvals),
        ("status", row.status),
        ("reason", row.reason or "-"),
        ("created", _utc(row.created_at)),
        ("started", _utc(row.started_at)),
        ("finished", _utc(row.finished_at)),
        ("exit code", row.exit_code),
        ("summary", row.summary or "-"),
        ("digest", row.digest),
    ):
        click.echo(f"{label + ':':<14}{value}")
    click.echo(f"output (last {len(row.tail)} lines):")
    for line in row.tail:
        click.echo(f"  | {line}")


@main.group()
def events() -> None:
    """The event log: events list | events replay."""


@events.command("list")
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only this bind type.")
@click.option("--since", metavar="WHEN", help="Only since 30m, 1h, 2d ago or an ISO time (UTC).")
@click.option("--key", "key_mask", metavar="MASK", help="Only keys matching MASK (* and ?).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@_config_options
def events_list(
    types: tuple[str, ...],
    since: str | None,
    key_mask: str | None,
    limit: int,
    config_dir: Path,
    env: str,
) -> None:
    """Logged events, newest first: time, id, type, key, origin, outcome, replay-of."""
    config = _load(config_dir, env, sections=STORE_ONLY)
    from masterchief.eventlog import query as eventlog

    try:
        after = eventlog.parse_since(since) if since else None
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None

    async def action(store: Store) -> list[EventLogRecord]:
        return await eventlog.list_events(
            store, types=types, since=after, key_mask=key_mask, limit=limit
        )

    found = _with_store(config, action)
    if not found:
        click.echo("no events")
    for rec in found:
        click.echo(eventlog.format_record(rec))


@events.command("replay")
@click.argument("event_ids", nargs=-1, required=True, metavar="ID...")
@click.option("--dry-run", is_flag=True, help="Show which bindings would fire now; change nothing.")
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait for the running bot to replay them.",
)
@_config_options
def events_replay(
    event_ids: tuple[str, ...], dry_run: bool, timeout: float, config_dir: Path, env: str
) -> None:
    """Dispatch logged events again in the running bot, marked as replays.

    A replay uses the payload as logged, which is redacted (secrets are ***).
    Requests the bot has not taken within --timeout are cancelled."""
    # a dry run builds the App (scripts and bindings): the whole configuration
    config = _load(config_dir, env, sections=None if dry_run else STORE_ONLY)
    from masterchief.eventlog import query as eventlog

    event_ids = tuple(dict.fromkeys(event_ids))  # an id given twice is replayed once
    if dry_run:
        _replay_dry_run(config, event_ids)
        return

    async def action(store: Store) -> list[ReplayRequest]:
        return await eventlog.request_replays(store, event_ids, timeout=timeout)

    failed = False
    for req in _with_store(config, action):
        if req.state == "done":
            click.echo(f"{req.event_id}: {req.result}")
            continue
        failed = True
        click.echo(f"error: {req.event_id}: {req.state}: {req.result or 'no result'}", err=True)
        if req.state == "cancelled":
            click.echo("error: is the bot running (masterchief run) on this store?", err=True)
    if failed:
        sys.exit(EXIT_ERROR)


def _replay_dry_run(config: Config, event_ids: Sequence[str]) -> None:
    """Which bindings would fire for each event under the current config and
    scripts.  The App is built but never run; scripts load outside any event
    loop, so loading them cannot start a task, and nothing is sent."""
    from masterchief.eventlog import query as eventlog
    from masterchief.runtime.app import App

    async def action(store: Store) -> tuple[Store, list[EventLogRecord], UserTable]:
        return store, await store.event_log_get(event_ids), await UserTable.load(store)

    store, found, users = _with_store(config, action)  # the store is closed again here
    app = App(config, store, users)
    app.install_bindings()
    for result in app.scripts.load_all():
        if not result.ok:
            click.echo(f"note: {result} (its bindings are not shown)", err=True)
    resolve = eventlog.offline_resolver(
        users, hostmask_flags=config.users.hostmask_flags_on_account_networks
    )
    for rec in found:
        for line in eventlog.explain(rec, app.table.snapshot, resolve):
            click.echo(line)
    missing = sorted(set(event_ids) - {r.id for r in found})
    if missing:
        _fail(f"not in the event log: {', '.join(missing)}")


@main.group()
def user() -> None:
    """Manage users: user add | user list | user chattr."""


@user.command("add")
@click.argument("handle")
@click.option(
    "--hostmask", "hostmasks", multiple=True, metavar="MASK", help="nick!user@host (repeatable)."
)
@click.option("--account", metavar="NAME", help="Services account that identifies the user.")
@click.option("--flags", default="", metavar="FLAGS", help="Global flags, e.g. 'n' or '+mo'.")
@click.option(
    "--password",
    "ask_password",
    is_flag=True,
    help=f"Set a partyline password (prompted; or taken from ${PASSWORD_ENV}).",
)
@click.option(
    "--allow-weak",
    is_flag=True,
    help="Store a weak hostmask (e.g. *!carol@*) anyway; it never carries flags above +v.",
)
@_config_options
def user_add(
    handle: str,
    hostmasks: tuple[str, ...],
    account: str | None,
    flags: str,
    ask_password: bool,
    allow_weak: bool,
    config_dir: Path,
    env: str,
) -> None:
    """Add a user.

    Handles and accounts are compared the way IRC servers compare nicks under
    rfc1459 (the loosest common rule: ERIN{1} is erin[1]), so two such names
    cannot both exist whatever the server's CASEMAPPING.  A hostmask must pin
    the host (*!ident@host.example): nick and ident are anyone's to choose.
    """
    config = _load(config_dir, env, sections=STORE_ONLY)
    try:
        for mask in hostmasks:
            if not allow_weak:
                check_hostmask_strength(mask)
    except WeakHostmask as exc:
        _fail(f"{exc} (--allow-weak stores it anyway, without flags above +v)")
    except UserError as exc:
        _fail(str(exc))
    password: str | None = None
    if ask_password:
        password = os.environ.get(PASSWORD_ENV) or click.prompt(
            "Password", hide_input=True, confirmation_prompt=True
        )

    async def action(users: UserTable) -> User:
        return await users.add_user(
            handle, hostmasks=hostmasks, account=account, flags=flags, password=password
        )

    added = _with_users(config, action)
    details = [f"flags {_flags_text(added.flags)}"]
    if added.account:
        details.append(f"account {added.account}")
    if added.hostmasks:
        details.append("hostmasks " + ", ".join(added.hostmasks))
    if added.password_hash:
        details.append("password set")
    click.echo(f"added {added.handle}: " + "; ".join(details))
    if added.hostmasks and not added.account and unprivileged(added.flags) != added.flags:
        click.echo(
            "note: where the network has services accounts, a record without one carries no "
            "flags above +v unless users.hostmask_flags_on_account_networks is true "
            "(add --account NAME)"
        )


@user.command("list")
@_config_options
def user_list(config_dir: Path, env: str) -> None:
    """List users with their flags, account, hostmasks and channel flags."""
    config = _load(config_dir, env, sections=STORE_ONLY)

    async def action(users: UserTable) -> tuple[User, ...]:
        return users.all()

    everyone = _with_users(config, action)
    if not everyone:
        click.echo("no users (add one with: masterchief user add HANDLE ...)")
        return
    rows = [("HANDLE", "FLAGS", "ACCOUNT", "HOSTMASKS", "CHANNEL FLAGS")]
    for u in everyone:
        chans = ",".join(f"{c}:+{f}" for c, f in sorted(u.chanflags.items()))
        rows.append(
            (
                u.handle,
                _flags_text(u.flags),
                u.account or "-",
                ",".join(m + (" (weak)" if is_weak_hostmask(m) else "") for m in u.hostmasks)
                or "-",
                chans or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


@user.command("chattr", context_settings={"ignore_unknown_options": True})
@click.argument("handle")
@click.argument("changes", metavar="FLAGS")
@click.option("--channel", metavar="CHAN", help="Change flags on this channel instead.")
@_config_options
def user_chattr(handle: str, changes: str, channel: str | None, config_dir: Path, env: str) -> None:
    """Change a user's flags: FLAGS like +mo-v (global, or on --channel)."""
    config = _load(config_dir, env, sections=STORE_ONLY)

    async def action(users: UserTable) -> User:
        return await users.chattr(handle, changes, channel=channel)

    changed = _with_users(config, action)
    if channel is None:
        click.echo(f"{changed.handle}: global {_flags_text(changed.flags)}")
    else:
        click.echo(f"{changed.handle} on {channel}: {_flags_text(changed.chan_flags(channel))}")


# --- deploy modules (issue 5) ---------------------------------------------------------


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def _print_errors(errors: list[str]) -> None:
    for err in errors:
        for line in err.splitlines():
            click.echo(f"error: {line}", err=True)


def _plain(value: Any) -> Any:
    """Module config for display: secrets as ``***``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # Secret prints as ***


@main.group()
def module() -> None:
    """Deploy modules: module list | show | validate | add | remove."""


@module.command("list")
@_config_options
def module_list(config_dir: Path, env: str) -> None:
    """List deploy modules; those that fail to load are listed after (exit 1)."""
    config = _load(config_dir, env, sections=("deploy",))
    from masterchief.deploy.catalog import load_modules

    found = load_modules(config.deploy.modules)
    if not found.modules and not found.errors:
        click.echo("no modules (add one with: masterchief module add PATH)")
        return
    rows = [("NAME", "VERSION", "KIND", "ENVIRONMENTS", "FLAGS", "APPROVAL", "REQUIRES")]
    for name in found.names:
        m = found.modules[name].manifest
        rows.append(
            (
                m.name,
                m.version,
                m.kind,
                ",".join(m.environments),
                m.flags,
                ",".join(m.approval) or "-",
                ",".join(m.requires) or "-",
            )
        )
    if found.modules:
        _table(rows)
    if found.errors:
        _print_errors([str(e) for e in found.errors])
        sys.exit(EXIT_ERROR)


@module.command("show")
@click.argument("name")
@_config_options
def module_show(name: str, config_dir: Path, env: str) -> None:
    """A module's manifest, parameters, entry, digest and its config for --env."""
    config = _load(config_dir, env, sections=("deploy", "vault"))
    import yaml

    from masterchief.deploy.catalog import load_modules
    from masterchief.deploy.module_config import load_module_config

    found = load_modules(config.deploy.modules)
    mod = found.get(name)
    if mod is None:
        _fail(f"unknown module {name!r} (masterchief module validate lists the broken ones)")
    try:
        settings = load_module_config(config, name)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    m = mod.manifest
    approval = [
        f"{e}: {r.approvers} approver(s) with {r.flags}, valid {r.ttl_s:g}s"
        for e, r in m.approval.items()
    ]
    fields = [
        ("name", m.name),
        ("version", m.version),
        ("kind", m.kind),
        ("description", m.description or "-"),
        ("file", str(mod.file)),
        ("entry", str(mod.entry)),
        ("digest", mod.digest),
        ("environments", ", ".join(m.environments)),
        ("flags", m.flags),
        ("approval", "; ".join(approval) or "-"),
        ("timeout", f"{m.timeout_s:g}s"),
        ("requires", ", ".join(m.requires) or "-"),
        ("deploy order", " -> ".join(x.name for x in found.closure(name))),
        ("options", ", ".join(f"{k}={v}" for k, v in mod.options.items()) or "-"),
    ]
    for label, value in fields:
        click.echo(f"{label + ':':<14}{value}")
    if m.parameters:
        click.echo("parameters:")
        rows = [("  NAME", "TYPE", "REQUIRED", "DEFAULT", "CONSTRAINTS", "DESCRIPTION")]
        for pname, p in m.parameters.items():
            limits = []
            if p.pattern is not None:
                limits.append(f"pattern {p.pattern}")
            if p.enum is not None:
                limits.append("one of " + "|".join(str(v) for v in p.enum))
            if p.minimum is not None:
                limits.append(f">= {p.minimum}")
            if p.maximum is not None:
                limits.append(f"<= {p.maximum}")
            if p.secret:
                limits.append("secret")
            default = "-" if p.default is None else ("***" if p.secret else str(p.default))
            rows.append(
                (
                    f"  {pname}",
                    p.type,
                    "yes" if p.required else "no",
                    default,
                    "; ".join(limits) or "-",
                    p.description or "-",
                )
            )
        _table(rows)
    else:
        click.echo("parameters:   none")
    if settings:
        click.echo(f"config ({config.env}):")
        text = yaml.safe_dump(_plain(settings), default_flow_style=False, sort_keys=False)
        for line in text.splitlines():
            click.echo(f"  {line}")
    else:
        click.echo(f"config ({config.env}): none")


@module.command("validate")
@_config_options
def module_validate(config_dir: Path, env: str) -> None:
    """Validate every module and its config for --env; exit 1 on any error."""
    config = _load(config_dir, env, sections=("deploy", "vault"))
    from masterchief.deploy.catalog import load_modules
    from masterchief.deploy.module_config import load_module_config, module_resolvers

    found = load_modules(config.deploy.modules)
    problems = [str(e) for e in found.errors]
    good = 0
    resolvers = module_resolvers(config)  # one vault client for every module
    for mod in found.order:
        try:
            load_module_config(config, mod.name, resolvers=resolvers)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        good += 1
        click.echo(f"ok  {mod.name} {mod.version} ({mod.kind})")
    if problems:
        _print_errors(problems)
        sys.exit(EXIT_ERROR)
    click.echo(f"{good} module(s) valid")


@module.command("add")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@_config_options
def module_add(path: Path, config_dir: Path, env: str) -> None:
    """Validate the module folder PATH and copy it into the first modules folder."""
    config = _load(config_dir, env, sections=("deploy",))
    from masterchief.deploy.catalog import add_module
    from masterchief.deploy.manifest import ModuleError

    roots = config.deploy.modules
    if not roots:
        _fail("deploy.modules is empty: configure a modules folder to add into")
    try:
        added = add_module(path, roots[0], roots=roots)
    except (ModuleError, OSError, ValueError) as exc:  # ValueError: a NUL in the path
        _fail(str(exc))
    click.echo(f"added {added.name} {added.version} ({added.kind}) in {added.dir}")


@module.command("remove")
@click.argument("name")
@_config_options
def module_remove(name: str, config_dir: Path, env: str) -> None:
    """Move module NAME's folder to .removed/ (nothing is deleted)."""
    config = _load(config_dir, env, sections=("deploy",))
    from masterchief.deploy.catalog import remove_module
    from masterchief.deploy.manifest import ModuleError

    try:
        moved = remove_module(name, config.deploy.modules)
    except (ModuleError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"removed {name}: moved to {moved}")
