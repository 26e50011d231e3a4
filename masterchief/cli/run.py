"""``masterchief run`` and ``masterchief config show``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from masterchief.config.engine import ConfigError

__all__ = ["main"]


from .base import main
from .common import config_options, load


@main.command()
@config_options
def run(config_dir: Path, env: str) -> None:
    """Connect to IRC and run the bot until SIGINT/SIGTERM."""
    config = load(config_dir, env)
    # imported late: the CLI's user commands stay light
    from masterchief.runtime.main import run_bot

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
@config_options
def config_show(config_dir: Path, env: str) -> None:
    """Print the effective configuration (global, then ENV merged over it) as
    YAML, with every secret as ***."""
    import yaml

    config = load(config_dir, env, lenient=True)
    data = config.redacted_dump()
    header = f"# effective configuration: {config.config_dir} --env {config.env}\n"
    click.echo(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
