"""``masterchief jobs list|show``: deploy job history."""

from __future__ import annotations

import time
from pathlib import Path

import click

__all__ = ["main"]


from .base import main
from .common import STORE_ONLY, config_options, fail, load, with_store


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
@config_options
def jobs_list(config_dir: Path, env: str, statuses: tuple[str, ...], limit: int) -> None:
    """Jobs, newest first: id, status, mode, module, env, requester, times."""
    config = load(config_dir, env, sections=STORE_ONLY)
    rows = with_store(config, lambda st: st.jobs_list(limit=limit, statuses=statuses or None))
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
@config_options
def jobs_show(config_dir: Path, env: str, job_id: str) -> None:
    """Everything recorded about one job (parameters with secrets as ***)."""
    config = load(config_dir, env, sections=STORE_ONLY)
    row = with_store(config, lambda st: st.job_get(job_id.lower()))
    if row is None:
        fail(f"no job {job_id!r}")
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
