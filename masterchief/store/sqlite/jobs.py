"""SQLite ``JobStore`` (deploy history and audit) and ``LeaseStore``.

How this works.  A job is one row; its parameters, approvals and output
tail are JSON columns, turned back into the typed ``JobRecord`` on read.
The job runner holds the whole job in memory, so an update writes every
column from the record (one writer: the bot that runs the job).

A lease is a named row with a holder and an expiry.  Acquiring reads and
writes inside one ``BEGIN IMMEDIATE`` transaction, so of two racing
acquirers (two coroutines, two processes) exactly one gets it; an expired
lease is taken over, and the same holder acquiring again renews it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ..api import Approval, JobRecord, Lease
from .connection import SqliteConnection, marks

__all__ = ["SqliteJobs", "SqliteLeases"]

_COLUMNS = (
    "id, module, module_version, env, mode, params, digest, requester, requester_account,"
    " requester_nick, channel, status, approvals, reason, created_at, started_at,"
    " finished_at, exit_code, summary, tail"
)
_NAMES = [c.strip() for c in _COLUMNS.split(",")]
_SELECT = f"SELECT {_COLUMNS} FROM jobs"  # noqa: S608 (our column names)
_INSERT = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({marks(len(_NAMES))})"  # noqa: S608
_UPDATE = "UPDATE jobs SET {} WHERE id = ?".format(  # noqa: S608 (every column but id)
    ", ".join(f"{c} = ?" for c in _NAMES[1:])
)


def _values(job: JobRecord) -> tuple[Any, ...]:
    approvals = [
        {"handle": a.handle, "nick": a.nick, "account": a.account, "at": a.at}
        for a in job.approvals
    ]
    return (
        job.module, job.module_version, job.env, job.mode,
        json.dumps(dict(job.params), sort_keys=True), job.digest, job.requester,
        job.requester_account, job.requester_nick, job.channel, job.status,
        json.dumps(approvals, sort_keys=True), job.reason, job.created_at, job.started_at,
        job.finished_at, job.exit_code, job.summary, json.dumps(list(job.tail)),
    )  # fmt: skip


def _approval(a: Mapping[str, Any]) -> Approval:
    at = a.get("at")
    return Approval(a["handle"], 0.0 if at is None else float(at), a.get("nick"), a.get("account"))


def _job(row: Sequence[Any]) -> JobRecord:
    (job_id, module, version, env, mode, params, digest, requester, account, nick, channel,
     status, approvals, reason, created, started, finished, code, summary, tail) = row  # fmt: skip
    return JobRecord(
        id=job_id,
        module=module,
        module_version=version,
        env=env,
        mode=mode,
        params=MappingProxyType({str(k): str(v) for k, v in json.loads(params or "{}").items()}),
        digest=digest,
        requester=requester,
        requester_account=account,
        requester_nick=nick,
        channel=channel,
        status=status,
        approvals=tuple(_approval(a) for a in json.loads(approvals or "[]")),
        reason=reason,
        created_at=created,
        started_at=started,
        finished_at=finished,
        exit_code=code,
        summary=summary,
        tail=tuple(json.loads(tail or "[]")),
    )


class SqliteJobs(SqliteConnection):
    async def job_insert(self, job: JobRecord) -> None:
        """Record a new job (``params`` already redacted by the caller)."""
        async with self._transaction() as tx:
            await tx.execute(_INSERT, (job.id, *_values(job)))

    async def job_update(self, job: JobRecord) -> bool:
        """Write every column of a recorded job; False when there is none."""
        async with self._transaction() as tx:
            cur = await tx.execute(
                _UPDATE,
                (*_values(job), job.id),
            )
            return cur.rowcount == 1

    async def job_get(self, job_id: str) -> JobRecord | None:
        row = await self._fetchone(f"{_SELECT} WHERE id = ?", (job_id,))
        return _job(row) if row is not None else None

    async def jobs_list(
        self, *, limit: int = 50, statuses: Sequence[str] | None = None
    ) -> list[JobRecord]:
        """Jobs, newest first (optionally only those in ``statuses``)."""
        where, params = "", []
        if statuses:
            where = f" WHERE status IN ({marks(len(statuses))})"
            params = list(statuses)
        rows = await self._fetchall(
            f"{_SELECT}{where} ORDER BY created_at DESC LIMIT ?", [*params, limit]
        )
        return [_job(r) for r in rows]

    async def job_last_success(self, module: str, env: str) -> JobRecord | None:
        """The newest succeeded deploy of ``module`` to ``env``."""
        row = await self._fetchone(
            f"{_SELECT} WHERE module = ? AND env = ? AND mode = 'deploy'"
            " AND status = 'succeeded' ORDER BY finished_at DESC LIMIT 1",
            (module, env),
        )
        return _job(row) if row is not None else None


class SqliteLeases(SqliteConnection):
    async def lease_acquire(
        self, name: str, *, holder: str, ttl_s: float, info: str = ""
    ) -> Lease | None:
        """Take lease ``name`` for ``holder``: None when got (or renewed),
        else the current holder's lease.  An expired lease is taken over."""
        now = time.time()
        async with self._transaction() as tx:
            async with tx.execute(
                "SELECT name, holder, info, acquired_at, expires_at FROM leases WHERE name = ?",
                (name,),
            ) as cur:
                row = await cur.fetchone()
            if row is not None and float(row[4]) > now and row[1] != holder:
                return Lease(*row)
            await tx.execute(
                "INSERT INTO leases (name, holder, info, acquired_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " holder = excluded.holder, info = excluded.info,"
                " acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
                (name, holder, info, now, now + ttl_s),
            )
        return None

    async def lease_release(self, name: str, holder: str) -> bool:
        """Give the lease back (only if ``holder`` still holds it)."""
        async with self._transaction() as tx:
            cur = await tx.execute(
                "DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)
            )
            return (cur.rowcount or 0) > 0

    async def leases(self, prefix: str = "") -> list[Lease]:
        """Leases whose name starts with ``prefix``, by name."""
        rows = await self._fetchall(
            "SELECT name, holder, info, acquired_at, expires_at FROM leases"
            " WHERE substr(name, 1, ?) = ? ORDER BY name",
            (len(prefix), prefix),
        )
        return [Lease(*r) for r in rows]
