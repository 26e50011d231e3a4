"""``masterchief user add|list|chattr``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from masterchief.errors import UserError
from masterchief.identity.users import (
    User,
    UserTable,
    WeakHostmask,
    check_hostmask_strength,
    is_weak_hostmask,
    unprivileged,
)

__all__ = ["main"]


from .base import main
from .common import (
    PASSWORD_ENV,
    STORE_ONLY,
    config_options,
    fail,
    flags_text,
    load,
    with_users,
)


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
@config_options
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
    config = load(config_dir, env, sections=STORE_ONLY)
    try:
        for mask in hostmasks:
            if not allow_weak:
                check_hostmask_strength(mask)
    except WeakHostmask as exc:
        fail(f"{exc} (--allow-weak stores it anyway, without flags above +v)")
    except UserError as exc:
        fail(str(exc))
    password: str | None = None
    if ask_password:
        password = os.environ.get(PASSWORD_ENV) or click.prompt(
            "Password", hide_input=True, confirmation_prompt=True
        )

    async def action(users: UserTable) -> User:
        return await users.add_user(
            handle, hostmasks=hostmasks, account=account, flags=flags, password=password
        )

    added = with_users(config, action)
    details = [f"flags {flags_text(added.flags)}"]
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
@config_options
def user_list(config_dir: Path, env: str) -> None:
    """List users with their flags, account, hostmasks and channel flags."""
    config = load(config_dir, env, sections=STORE_ONLY)

    async def action(users: UserTable) -> tuple[User, ...]:
        return users.all()

    everyone = with_users(config, action)
    if not everyone:
        click.echo("no users (add one with: masterchief user add HANDLE ...)")
        return
    rows = [("HANDLE", "FLAGS", "ACCOUNT", "HOSTMASKS", "CHANNEL FLAGS")]
    for u in everyone:
        chans = ",".join(f"{c}:+{f}" for c, f in sorted(u.chanflags.items()))
        rows.append(
            (
                u.handle,
                flags_text(u.flags),
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
@config_options
def user_chattr(handle: str, changes: str, channel: str | None, config_dir: Path, env: str) -> None:
    """Change a user's flags: FLAGS like +mo-v (global, or on --channel)."""
    config = load(config_dir, env, sections=STORE_ONLY)

    async def action(users: UserTable) -> User:
        return await users.chattr(handle, changes, channel=channel)

    changed = with_users(config, action)
    if channel is None:
        click.echo(f"{changed.handle}: global {flags_text(changed.flags)}")
    else:
        click.echo(f"{changed.handle} on {channel}: {flags_text(changed.chan_flags(channel))}")


# --- deploy modules (issue 5) ---------------------------------------------------------
