"""``masterchief sources status`` and ``masterchief files status``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from masterchief.store.sqlite import open_store

__all__ = ["main"]


from .base import main
from .common import config_options, load, with_store


@main.group()
def sources() -> None:
    """Input sources (REST pollers, watched folders, tailed logs, webhook
    intake, the clock, replays): sources status."""


@sources.command("status")
@config_options
def sources_status(config_dir: Path, env: str) -> None:
    """Every configured source as the running bot last stored it (state,
    events, errors, pending, last success, and when); the bot writes them
    every few seconds while it runs."""
    config = load(config_dir, env, lenient=True)
    from masterchief.sources.families import FAMILIES
    from masterchief.sources.runner import STATUS_PREFIX
    from masterchief.sources.status import stored_sources

    configured = [
        (fam.name, str(getattr(entry, "name", "")))
        for fam in FAMILIES
        for entry in fam.entries(config)
    ]
    stored = with_store(config, lambda st: st.checkpoints(STATUS_PREFIX))
    for line in stored_sources(configured, stored, time.time()):
        click.echo(line)


@main.group()
def files() -> None:
    """Watched folders and tailed logs: files status."""


@files.command("status")
@config_options
def files_status(config_dir: Path, env: str) -> None:
    """Each watched folder (pending, processed, quarantined) and tailed log (file, offset,
    lines/s as stored by the bot, with when it was measured)."""
    config = load(config_dir, env, sections=("store", "files"))
    from masterchief.sources.status import folder_rows, format_status, log_rows

    async def report() -> list[str]:
        store = await open_store(config.store.path)
        try:
            return format_status(await folder_rows(config, store), await log_rows(store))
        finally:
            await store.close()

    for line in asyncio.run(report()):
        click.echo(line)
