"""What every ``masterchief`` command shares: config options, loading, the store, errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from masterchief.config.engine import ConfigError, load_config, require_environment
from masterchief.config.schema import Config
from masterchief.errors import UserError
from masterchief.identity.users import (
    UserTable,
)
from masterchief.store.api import Store, StoreError
from masterchief.store.sqlite import open_store

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "PASSWORD_ENV",
    "STORE_ONLY",
    "config_options",
    "fail",
    "flags_text",
    "load",
    "plain",
    "print_errors",
    "print_table",
    "with_store",
    "with_users",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

EXIT_ERROR = 1
EXIT_CONFIG = 2
PASSWORD_ENV = "MASTERCHIEF_PASSWORD"  # noqa: S105 (a variable name, not a password)


def config_options(fn: F) -> F:
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


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    for line in message.splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(code)


STORE_ONLY = ("store",)
"""What the offline store commands resolve: user, jobs, events need the store
path and nothing else, so they work without the bot's IRC or webhook secrets."""


def load(
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
        fail(str(exc), EXIT_CONFIG)


def with_users(config: Config, action: Callable[[UserTable], Awaitable[T]]) -> T:
    """Open the bot's store, load the user table, run ``action``, close."""

    async def on_users(store: Store) -> T:
        return await action(await UserTable.load(store))

    return with_store(config, on_users)


def flags_text(flags: str) -> str:
    return f"+{flags}" if flags else "-"


def with_store(config: Config, action: Callable[[Store], Awaitable[T]]) -> T:
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
        fail(str(exc))


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def print_errors(errors: list[str]) -> None:
    for err in errors:
        for line in err.splitlines():
            click.echo(f"error: {line}", err=True)


def plain(value: Any) -> Any:
    """Module config for display: secrets as ``***``."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # Secret prints as ***
