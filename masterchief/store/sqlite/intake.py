"""SQLite ``DeliveryStore`` (durable webhook intake) and ``OutboxStore``.

How this works.  A verified delivery is stored before the HTTP 202 and
marked done once its handlers ran; (provider, dedup_key) is unique, so a
redelivery is recognised.  ``record_deliveries`` is the intake writer's
group commit: many deliveries and done marks in one transaction, as
multi-row statements in chunks of 500 (SQLite's parameter limit), with
``RETURNING`` telling stored rows from duplicates.  The outbox is the queue
of announcements not yet handed to IRC, in id order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..api import DeliveryRecord, NewDelivery, OutboxRecord
from .connection import CHUNK, SqliteConnection, marks

__all__ = ["SqliteIntake", "SqliteOutbox"]


class SqliteIntake(SqliteConnection):
    async def insert_delivery(self, delivery: NewDelivery) -> int | None:
        """Store a verified delivery; its id, or None when (provider, dedup_key)
        was already stored (a duplicate delivery)."""
        return (await self.record_deliveries([delivery]))[0]

    async def delivery_done(self, delivery_id: int) -> None:
        """Mark a delivery dispatched (its handlers have run)."""
        async with self._transaction() as tx:
            await tx.execute("UPDATE deliveries SET done = 1 WHERE id = ?", (delivery_id,))

    async def pending_deliveries(self, limit: int = 1000) -> list[DeliveryRecord]:
        """Stored but not yet dispatched deliveries, oldest first (crash recovery)."""
        rows = await self._fetchall(
            "SELECT id, provider, dedup_key, event_key, received_at, body, meta, done"
            " FROM deliveries WHERE done = 0 ORDER BY id LIMIT ?",
            (limit,),
        )
        return [DeliveryRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows]

    async def prune_deliveries(self, older_than: float) -> int:
        """Forget dispatched deliveries received before ``older_than`` (epoch s)."""
        async with self._transaction() as tx:
            cur = await tx.execute(
                "DELETE FROM deliveries WHERE done = 1 AND received_at < ?", (older_than,)
            )
            return cur.rowcount

    async def record_deliveries(
        self, new: Sequence[NewDelivery], done: Sequence[int] = ()
    ) -> list[int | None]:
        """Group commit for webhook intake (``sources.webhooks.writer``): store
        ``new`` deliveries and mark the ``done`` ids dispatched, in one
        transaction.  Returns each new delivery's id in order, or None for a
        duplicate (already stored, or earlier in ``new``)."""
        # Only "?" placeholders are formatted into these statements (S608).
        ids: list[int | None] = []
        now = time.time()
        async with self._transaction() as tx:
            for start in range(0, len(done), CHUNK):
                chunk = list(done[start : start + CHUNK])
                sql = f"UPDATE deliveries SET done = 1 WHERE id IN ({marks(len(chunk))})"  # noqa: S608
                await tx.execute(sql, chunk)
            for start in range(0, len(new), CHUNK):
                rows = new[start : start + CHUNK]
                values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(rows))
                params = [
                    v
                    for d in rows
                    for v in (
                        d.provider,
                        d.dedup_key,
                        d.event_key,
                        now if d.received_at is None else d.received_at,
                        d.body,
                        d.meta,
                    )
                ]
                sql = (
                    "INSERT INTO deliveries"  # noqa: S608
                    " (provider, dedup_key, event_key, received_at, body, meta)"
                    f" VALUES {values}"
                    " ON CONFLICT (provider, dedup_key) DO NOTHING"
                    " RETURNING id, provider, dedup_key"
                )
                async with tx.execute(sql, params) as cur:
                    stored = {(p, k): int(i) for i, p, k in await cur.fetchall()}
                ids.extend(stored.pop((d.provider, d.dedup_key), None) for d in rows)
        return ids


class SqliteOutbox(SqliteConnection):
    async def outbox_add(
        self,
        target: str,
        text: str,
        *,
        kind: str = "text",
        fold_key: str | None = None,
        meta: str | None = None,
        created_at: float | None = None,
    ) -> int:
        when = time.time() if created_at is None else created_at
        async with self._transaction() as tx:
            cur = await tx.execute(
                "INSERT INTO outbox (target, text, kind, fold_key, meta, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (target, text, kind, fold_key, meta, when),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    async def outbox_pending(self, limit: int = 1000) -> list[OutboxRecord]:
        """Announcements not yet handed to IRC, oldest first."""
        rows = await self._fetchall(
            "SELECT id, target, text, kind, fold_key, meta, created_at"
            " FROM outbox ORDER BY id LIMIT ?",
            (limit,),
        )
        return [OutboxRecord(*row) for row in rows]

    async def outbox_remove(self, ids: Sequence[int]) -> None:
        """Forget announcements that reached IRC (or were folded into a summary)."""
        if not ids:
            return
        async with self._transaction() as tx:
            await tx.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    async def outbox_count(self) -> int:
        rows = await self._fetchall("SELECT COUNT(*) FROM outbox")
        return int(rows[0][0])
