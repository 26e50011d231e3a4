"""``masterchief events list|replay``: the event log."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from masterchief.config.schema import Config
from masterchief.errors import UserError
from masterchief.identity.users import (
    UserTable,
)
from masterchief.store.api import EventLogRecord, ReplayRequest, Store

__all__ = ["main"]


from .base import main
from .common import EXIT_ERROR, STORE_ONLY, config_options, fail, load, with_store


@main.group()
def events() -> None:
    """The event log: events list | events replay."""


@events.command("list")
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only this bind type.")
@click.option("--since", metavar="WHEN", help="Only since 30m, 1h, 2d ago or an ISO time (UTC).")
@click.option("--key", "key_mask", metavar="MASK", help="Only keys matching MASK (* and ?).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@config_options
def events_list(
    types: tuple[str, ...],
    since: str | None,
    key_mask: str | None,
    limit: int,
    config_dir: Path,
    env: str,
) -> None:
    """Logged events, newest first: time, id, type, key, origin, outcome, replay-of."""
    config = load(config_dir, env, sections=STORE_ONLY)
    from masterchief.eventlog import query as eventlog

    try:
        after = eventlog.parse_since(since) if since else None
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None

    async def action(store: Store) -> list[EventLogRecord]:
        return await eventlog.list_events(
            store, types=types, since=after, key_mask=key_mask, limit=limit
        )

    found = with_store(config, action)
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
@config_options
def events_replay(
    event_ids: tuple[str, ...], dry_run: bool, timeout: float, config_dir: Path, env: str
) -> None:
    """Dispatch logged events again in the running bot, marked as replays.

    A replay uses the payload as logged, which is redacted (secrets are ***).
    Requests the bot has not taken within --timeout are cancelled."""
    # a dry run builds the App (scripts and bindings): the whole configuration
    config = load(config_dir, env, sections=None if dry_run else STORE_ONLY)
    from masterchief.eventlog import query as eventlog

    event_ids = tuple(dict.fromkeys(event_ids))  # an id given twice is replayed once
    if dry_run:
        _replay_dry_run(config, event_ids)
        return

    async def action(store: Store) -> list[ReplayRequest]:
        return await eventlog.request_replays(store, event_ids, timeout=timeout)

    failed = False
    for req in with_store(config, action):
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
    scripts.  Only the binding table is built (``offline_bindings``); scripts
    load outside any event loop, so loading them cannot start a task, and
    nothing is sent."""
    from masterchief.eventlog import query as eventlog
    from masterchief.runtime.compose import offline_bindings

    async def action(store: Store) -> tuple[list[EventLogRecord], UserTable]:
        return await store.event_log_get(event_ids), await UserTable.load(store)

    found, users = with_store(config, action)  # the store is closed again here
    table, loaded = offline_bindings(config)
    for result in loaded:
        if not result.ok:
            click.echo(f"note: {result} (its bindings are not shown)", err=True)
    resolve = eventlog.offline_resolver(
        users, hostmask_flags=config.users.hostmask_flags_on_account_networks
    )
    for rec in found:
        for line in eventlog.explain(rec, table.snapshot, resolve):
            click.echo(line)
    missing = sorted(set(event_ids) - {r.id for r in found})
    if missing:
        fail(f"not in the event log: {', '.join(missing)}")
