"""The event log's writer: buffered, group-committed writes and retention.

How this works.  The dispatcher calls ``EventLog.record(ev, outcome)`` once
per processed Event (its ``recorder`` hook).  ``record`` decides with
``worth_logging`` (policy.py) and appends ``(ev, outcome)`` to a bounded
in-memory buffer -- nothing else happens on the dispatcher's path.
``EventLog.run`` group-commits the buffer (one transaction per 500 rows,
every ~100 ms), each Event made a row by ``to_record``.  A full buffer drops
(and counts) new rows rather than slow the dispatcher; a failed write keeps
the rows for the next try.  Rows older than ``events.retention_days`` are
pruned at start and hourly.

The outcomes of replayed Events are kept (bounded) for the replay source
(``sources/replay.py``), which reports them to whoever asked for the replay.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from masterchief.bindings.event import Event
from masterchief.config.schema import EventsConfig
from masterchief.config.secrets import REDACTOR, Redactor
from masterchief.store.api import EventLogRecord, EventLogStore, StoreError

from .policy import to_record, worth_logging

__all__ = ["EventLog", "EventLogStats"]

log = logging.getLogger("masterchief.eventlog")

# Events turned into rows (JSON, redaction) per turn of the event loop: a
# whole batch of 500 at once held the loop for ~6 ms, the IRC reply p99
# under load (bench/rtt.py); 50 (~0.5 ms) still showed in the 4x4 p99.
_CONVERT_SLICE = 16


@dataclass(slots=True)
class EventLogStats:
    recorded: int = 0  # accepted into the buffer
    written: int = 0  # rows inserted
    dropped: int = 0  # buffer full
    write_errors: int = 0  # failed group commits (rows kept for the next try)
    pruned: int = 0


class EventLog:
    """The dispatcher's recorder; ``run()`` writes what ``record()`` buffered."""

    def __init__(
        self,
        store: EventLogStore,
        config: EventsConfig,
        *,
        redactor: Redactor = REDACTOR,
        max_buffer: int = 100_000,
        batch_rows: int = 500,
        flush_interval_s: float = 0.1,
        prune_interval_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.max_buffer = max_buffer
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.prune_interval_s = prune_interval_s
        self.stats = EventLogStats()
        self._clock = clock
        self._redactor = redactor
        self._buffer: collections.deque[tuple[Event, str]] = collections.deque()
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._dropped_unreported = 0
        self._failing = False
        # Outcomes of replayed Events, for the ReplayWorker (bounded).
        self._replays: collections.OrderedDict[str, str] = collections.OrderedDict()

    # -- the dispatcher's side (synchronous, cheap) -------------------------------

    def record(self, ev: Event, outcome: str) -> None:
        """Buffer ``ev`` if it is worth logging.  Never blocks, never raises."""
        if ev.replay_of is not None:
            self._replays[ev.id] = outcome
            while len(self._replays) > 1000:
                self._replays.popitem(last=False)
        if not self.config.enabled or not worth_logging(ev, outcome):
            return
        if len(self._buffer) >= self.max_buffer:
            self.stats.dropped += 1
            self._dropped_unreported += 1
            return
        self._buffer.append((ev, outcome))
        self.stats.recorded += 1
        if len(self._buffer) >= self.batch_rows:
            self._wake.set()

    def replay_outcome(self, event_id: str) -> str | None:
        """The outcome a replayed Event was recorded with (once; then forgotten)."""
        return self._replays.pop(event_id, None)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def counters(self) -> dict[str, int]:
        """For /metrics: the counters and the buffer depth."""
        return {**dataclasses.asdict(self.stats), "buffered": len(self._buffer)}

    # -- the writer --------------------------------------------------------------

    async def run(self) -> None:
        """Group-commit the buffer until cancelled; prune now and hourly."""
        await self._prune_logged()
        next_prune = time.monotonic() + self.prune_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()
            if time.monotonic() >= next_prune:
                await self._prune_logged()
                next_prune = time.monotonic() + self.prune_interval_s

    async def flush(self) -> int:
        """Write everything buffered now; the number of rows inserted.  Rows
        stay buffered when the write fails (and the failure is logged)."""
        written = 0
        async with self._flushing:
            while self._buffer:
                n = min(self.batch_rows, len(self._buffer))
                batch = [self._buffer[i] for i in range(n)]
                records: list[EventLogRecord] = []
                for start in range(0, n, _CONVERT_SLICE):
                    if start:  # let the loop run between slices (see _CONVERT_SLICE)
                        await asyncio.sleep(0)
                    part = batch[start : start + _CONVERT_SLICE]
                    records.extend(self._to_record(ev, outcome) for ev, outcome in part)
                try:
                    written += await self.store.event_log_append(records)
                except StoreError as exc:
                    self._write_failed(exc)
                    break
                for _ in range(n):
                    self._buffer.popleft()
                if self._failing:
                    log.info("event log: writing again")
                    self._failing = False
        self.stats.written += written
        if self._dropped_unreported:
            log.warning(
                "event log buffer full (%d rows): %d events not logged",
                self.max_buffer,
                self._dropped_unreported,
            )
            self._dropped_unreported = 0
        return written

    def _to_record(self, ev: Event, outcome: str) -> EventLogRecord:
        return to_record(
            ev,
            outcome,
            redactor=self._redactor,
            max_payload_bytes=self.config.max_payload_bytes,
        )

    def _write_failed(self, exc: StoreError) -> None:
        self.stats.write_errors += 1
        if not self._failing:  # once per failing spell, not every 100 ms
            self._failing = True
            log.error("event log: cannot write (%d rows kept): %s", len(self._buffer), exc)

    async def prune(self) -> int:
        """Delete rows older than ``retention_days``; how many went."""
        cutoff = self._clock() - self.config.retention_days * 86400.0
        removed = await self.store.event_log_prune(cutoff)
        self.stats.pruned += removed
        return removed

    async def _prune_logged(self) -> None:
        try:
            removed = await self.prune()
        except StoreError as exc:
            log.error("event log: pruning failed: %s", exc)
            return
        if removed:
            log.info(
                "event log: pruned %d events older than %s days",
                removed,
                self.config.retention_days,
            )
