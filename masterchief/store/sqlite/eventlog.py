"""SQLite ``EventLogStore`` (audit and replay source) and ``ReplayStore``.

How this works.  The event log is append-mostly: ``event_log_append`` is a
group commit (one transaction per batch; an id already logged is skipped),
``seq`` orders rows and pages through them.  Replay requests are the CLI's
mailbox to the running bot: a row moves pending -> running -> done/failed
(or pending -> cancelled) by compare-and-set updates, so two claimers
never both win.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..api import EventLogRecord, ReplayRequest
from .connection import CHUNK, SqliteConnection, marks

__all__ = ["SqliteEventLog", "SqliteReplays"]

_EVENT_COLUMNS = "id, time, type, key, origin, payload, outcome, replay_of, seq"


class SqliteEventLog(SqliteConnection):
    async def event_log_append(self, records: Sequence[EventLogRecord]) -> int:
        """Group commit: insert ``records`` in one transaction; an id already in
        the log is skipped.  Returns how many rows were inserted."""
        if not records:
            return 0
        async with self._transaction() as tx:
            cur = await tx.executemany(
                "INSERT INTO event_log (id, time, type, key, origin, payload, outcome, replay_of)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                [
                    (r.id, r.time, r.type, r.key, r.origin, r.payload, r.outcome, r.replay_of)
                    for r in records
                ],
            )
            return max(cur.rowcount, 0)

    async def event_log_prune(self, older_than: float) -> int:
        """Forget events logged before ``older_than`` (epoch s), and finished
        replay requests made before it."""
        async with self._transaction() as tx:
            cur = await tx.execute("DELETE FROM event_log WHERE time < ?", (older_than,))
            await tx.execute(
                "DELETE FROM replay_requests WHERE requested_at < ? AND state <> 'pending'",
                (older_than,),
            )
            return cur.rowcount

    async def event_log_page(
        self,
        *,
        types: Sequence[str] = (),
        since: float | None = None,
        before_seq: int | None = None,
        limit: int = 500,
    ) -> list[EventLogRecord]:
        """Logged events, newest first: of ``types`` (all when empty), at or
        after ``since``, and below ``before_seq`` (to page on)."""
        where: list[str] = []
        params: list[Any] = []
        if types:
            where.append(f"type IN ({marks(len(types))})")
            params.extend(types)
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetchall(
            f"SELECT {_EVENT_COLUMNS} FROM event_log{clause}"  # noqa: S608 (only "?" marks)
            " ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        )
        return [EventLogRecord(*r) for r in rows]

    async def event_log_get(self, ids: Sequence[str]) -> list[EventLogRecord]:
        """The logged events with these ids, in the order asked (unknown ids left out)."""
        found: dict[str, EventLogRecord] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            rows = await self._fetchall(
                f"SELECT {_EVENT_COLUMNS} FROM event_log WHERE id IN ({marks(len(chunk))})",  # noqa: S608
                chunk,
            )
            found.update((r[0], EventLogRecord(*r)) for r in rows)
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    async def event_log_count(self) -> int:
        rows = await self._fetchall("SELECT COUNT(*) FROM event_log")
        return int(rows[0][0])


class SqliteReplays(SqliteConnection):
    async def replay_enqueue(
        self, event_ids: Sequence[str], *, requested_at: float | None = None
    ) -> list[int]:
        """Ask the running bot to replay these events; the request ids, in order."""
        when = time.time() if requested_at is None else requested_at
        ids: list[int] = []
        async with self._transaction() as tx:
            for event_id in event_ids:
                cur = await tx.execute(
                    "INSERT INTO replay_requests (event_id, requested_at, state) VALUES (?, ?, ?)",
                    (event_id, when, "pending"),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
        return ids

    async def replay_pending(self, limit: int = 50) -> list[ReplayRequest]:
        """Requests nobody has taken yet, oldest first."""
        rows = await self._fetchall(
            "SELECT id, event_id, requested_at, state, result FROM replay_requests"
            " WHERE state = 'pending' ORDER BY id LIMIT ?",
            (limit,),
        )
        return [ReplayRequest(*r) for r in rows]

    async def replay_get(self, ids: Sequence[int]) -> list[ReplayRequest]:
        """These requests as they stand now, in id order."""
        if not ids:
            return []
        rows = await self._fetchall(
            "SELECT id, event_id, requested_at, state, result FROM replay_requests"  # noqa: S608
            f" WHERE id IN ({marks(len(ids))}) ORDER BY id",
            list(ids),
        )
        return [ReplayRequest(*r) for r in rows]

    async def _replay_move(
        self, request_id: int, from_state: str, to_state: str, result: str | None
    ) -> bool:
        async with self._transaction() as tx:
            cur = await tx.execute(
                "UPDATE replay_requests SET state = ?, result = ? WHERE id = ? AND state = ?",
                (to_state, result, request_id, from_state),
            )
            return cur.rowcount == 1

    async def replay_claim(self, request_id: int) -> bool:
        """pending -> running; False when someone else took (or cancelled) it."""
        return await self._replay_move(request_id, "pending", "running", None)

    async def replay_finish(self, request_id: int, state: str, result: str) -> bool:
        """running -> ``state`` (done or failed) with a one-line ``result``."""
        return await self._replay_move(request_id, "running", state, result)

    async def replay_cancel(self, request_id: int, result: str) -> bool:
        """pending -> cancelled; False when the bot took it first."""
        return await self._replay_move(request_id, "pending", "cancelled", result)
