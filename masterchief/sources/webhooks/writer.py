"""Delivery writes with group commit: one transaction for every insert (and
done mark) that arrived while the previous transaction was being written.

How this works
--------------
A request handler awaits ``insert(...)``: the row joins ``_pending`` with a
future, and if no flush is running one is started.  The flush takes
everything pending (up to ``max_batch`` rows) plus the done marks collected
so far, writes them with ``DeliveryStore.record_deliveries`` in one transaction and
resolves each future with its id (None for a duplicate) or the store's
exception.  Rows that arrive during a write wait for the next one, so under
load a transaction carries many rows and the per-transaction cost (thread
hops, BEGIN/COMMIT, the WAL append) is shared; when idle the first row is
written at once, never after a timer.

``mark_done(id)`` only queues the id; done marks ride with the next batch.
A failed done mark is logged and left: the delivery stays pending and is
dispatched again after a restart (at-least-once).

The flush task is owned here: ``close()`` waits for it.  After ``close()``
an insert fails (the server answers 503).
"""

from __future__ import annotations

import asyncio
import logging

from masterchief.store.api import DeliveryStore, NewDelivery

__all__ = ["DeliveryWriter", "WriterClosed", "reraise_if_cancelling"]

log = logging.getLogger("masterchief.web")


def reraise_if_cancelling() -> None:
    """Re-raise a cancellation that a store call turned into another error.

    (a store transaction can replace a CancelledError with a StoreError
    when its ROLLBACK fails; a loop that catches Exception would then go on
    as if nobody had asked it to stop.)"""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class WriterClosed(RuntimeError):
    """The writer is closed (the server is shutting down)."""


class DeliveryWriter:
    """Group-commit writer for webhook deliveries over one ``DeliveryStore``."""

    def __init__(self, store: DeliveryStore, *, max_batch: int = 500) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[tuple[NewDelivery, asyncio.Future[int | None]]] = []
        self._done: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._transactions = 0
        self._rows = 0
        self._largest = 0
        self._failed = 0
        self._writing = 0

    async def insert(
        self,
        provider: str,
        dedup_key: str,
        event_key: str,
        body: str,
        meta: str,
        received_at: float,
    ) -> int | None:
        """Store one delivery durably; its id, or None for a duplicate.
        Raises what the store raised (the caller answers 503)."""
        if self._closed:
            raise WriterClosed("delivery writer closed")
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._pending.append(
            (NewDelivery(provider, dedup_key, event_key, body, meta, received_at), fut)
        )
        self._kick()
        return await fut

    def mark_done(self, delivery_id: int) -> None:
        """Queue a done mark (written with the next batch)."""
        self._done.append(delivery_id)
        if not self._closed:
            self._kick()

    @property
    def backlog(self) -> int:
        """Inserts and done marks queued or being written (0: all on disk)."""
        return len(self._pending) + len(self._done) + self._writing

    def stats(self) -> dict[str, int]:
        """Transactions written, rows inserted, the largest batch, failed batches."""
        return {
            "transactions": self._transactions,
            "rows": self._rows,
            "largest_batch": self._largest,
            "failed": self._failed,
        }

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._flush(), name="web-delivery-writer"
            )

    async def _flush(self) -> None:
        batch: list[tuple[NewDelivery, asyncio.Future[int | None]]] = []
        try:
            while self._pending or self._done:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                done, self._done = self._done, []
                self._writing = len(batch) + len(done)
                try:
                    ids = await self.store.record_deliveries([row for row, _ in batch], done)
                except Exception as exc:
                    self._writing = 0
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    reraise_if_cancelling()
                    self._failed += 1
                    if done:
                        log.warning(
                            "webhooks: marking %d delivery(ies) done failed (%s); they are"
                            " dispatched again after a restart",
                            len(done),
                            type(exc).__name__,
                        )
                    batch = []
                    continue
                self._writing = 0
                self._transactions += 1
                self._rows += sum(1 for i in ids if i is not None)
                self._largest = max(self._largest, len(batch))
                for (_, fut), delivery_id in zip(batch, ids, strict=True):
                    if not fut.done():
                        fut.set_result(delivery_id)
                batch = []
        finally:
            # cancelled mid-write: the outcome of ``batch`` is unknown, and
            # nobody may wait forever for the rest
            leftovers = batch + self._pending
            self._pending = []
            self._writing = 0
            for _, fut in leftovers:
                if not fut.done():
                    fut.set_exception(WriterClosed("delivery writer stopped"))

    async def close(self) -> None:
        """Write what is queued (done marks included), then refuse new inserts."""
        self._closed = True
        while self._task is not None and not self._task.done():
            await self._task
        if self._done or self._pending:
            self._task = asyncio.get_running_loop().create_task(self._flush())
            await self._task
