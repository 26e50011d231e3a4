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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from masterchief.bot.users import User, UserTable
from masterchief.core.config import Config, ConfigError, load_config
from masterchief.core.errors import UserError
from masterchief.core.store import Store, StoreError

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


def _load(config_dir: Path, env: str) -> Config:
    try:
        return load_config(config_dir, env)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _with_users(config: Config, action: Callable[[UserTable], Awaitable[T]]) -> T:
    """Open the bot's store, load the user table, run ``action``, close."""

    async def go() -> T:
        store = await Store.open(config.store.path)
        try:
            return await action(await UserTable.load(store))
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except (UserError, StoreError) as exc:
        _fail(str(exc))


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
    from masterchief.app import run_bot  # imported late: the CLI's user commands stay light

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

    config = _load(config_dir, env)
    data = config.redacted_dump()
    header = f"# effective configuration: {config.config_dir} --env {config.env}\n"
    click.echo(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@main.group()
def files() -> None:
    """Watched folders and tailed logs: files status."""


@files.command("status")
@_config_options
def files_status(config_dir: Path, env: str) -> None:
    """Each watched folder (pending, processed, quarantined) and tailed log (file, offset)."""
    config = _load(config_dir, env)
    from masterchief.ingestion.status import folder_rows, format_status, log_rows

    async def report() -> list[str]:
        store = await Store.open(config.store.path)
        try:
            return format_status(await folder_rows(config, store), await log_rows(store))
        finally:
            await store.close()

    for line in asyncio.run(report()):
        click.echo(line)


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
@_config_options
def user_add(
    handle: str,
    hostmasks: tuple[str, ...],
    account: str | None,
    flags: str,
    ask_password: bool,
    config_dir: Path,
    env: str,
) -> None:
    """Add a user."""
    config = _load(config_dir, env)
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


@user.command("list")
@_config_options
def user_list(config_dir: Path, env: str) -> None:
    """List users with their flags, account, hostmasks and channel flags."""
    config = _load(config_dir, env)

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
                ",".join(u.hostmasks) or "-",
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
    config = _load(config_dir, env)

    async def action(users: UserTable) -> User:
        return await users.chattr(handle, changes, channel=channel)

    changed = _with_users(config, action)
    if channel is None:
        click.echo(f"{changed.handle}: global {_flags_text(changed.flags)}")
    else:
        click.echo(f"{changed.handle} on {channel}: {_flags_text(changed.chan_flags(channel))}")
