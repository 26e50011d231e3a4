"""Replays: logged Events dispatched again, a source like any other.

How this works.  ``masterchief events replay ID`` writes a
``replay_requests`` row (``eventlog/query.py``); the bot's ``ReplayWorker``
polls for them, claims each (pending -> running) so it runs once, rebuilds
the Event from the log (``eventlog/policy.py``: a new id, ``replay_of`` set
to the original, the stored -- redacted -- payload) and dispatches it; the
new dispatch is logged too.  It waits until the Event's handlers have
finished and marks the request done with the outcome the event log saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from masterchief.bindings.event import Reply, new_ref
from masterchief.eventlog.policy import ReplayError, rebuild
from masterchief.metrics import Family
from masterchief.store.api import LoggedReplayStore, ReplayRequest, StoreError

from .base import EventSink, SourceDeps, SourceStatus

__all__ = ["FAMILY", "ReplayWorker"]

log = logging.getLogger("masterchief.eventlog")


class ReplayWorker:
    """Takes replay requests from the store and dispatches the logged Events again.

    Polls every ``poll_s`` (one small query: the table holds only requests
    younger than the retention); claims a request (pending -> running) so it
    runs once, dispatches the rebuilt Event, waits until its handlers have
    finished and marks the request done with ``replayed as <new id>:
    <outcome>`` (or failed with the reason).  IRC-born Events reply through
    ``sink`` (the bot), to where the original came from.
    """

    family = "replay"
    name = "requests"

    def __init__(
        self,
        store: LoggedReplayStore,
        *,
        outcome: Callable[[str], str | None] | None = None,
        sink: Reply | None = None,
        poll_s: float = 0.5,
        max_inflight: int = 16,
        wait_s: float = 60.0,
    ) -> None:
        self.store = store
        self.outcome = outcome
        self.sink = sink
        self.events: EventSink | None = None
        self.poll_s = poll_s
        self.max_inflight = max_inflight
        self.wait_s = wait_s
        self.replayed = 0
        self.failed = 0
        self._inflight = 0
        self._failing = False

    async def run(self, sink: EventSink, started: asyncio.Event) -> None:
        """Poll until cancelled; replays in flight are cancelled with it."""
        self.events = sink
        started.set()
        async with asyncio.TaskGroup() as tg:
            while True:
                try:
                    await self.poll(tg)
                    self._failing = False
                except StoreError as exc:
                    if not self._failing:
                        log.error("replay worker: cannot read requests: %s", exc)
                    self._failing = True
                await asyncio.sleep(self.poll_s)

    async def poll(self, tg: asyncio.TaskGroup) -> int:
        """Claim and start the pending requests there is room for; how many."""
        room = self.max_inflight - self._inflight
        if room <= 0:
            return 0
        started = 0
        for req in await self.store.replay_pending(limit=room):
            if not await self.store.replay_claim(req.id):
                continue  # cancelled by the CLI, or another bot took it
            self._inflight += 1
            started += 1
            tg.create_task(self._replay(req), name=f"replay:{req.id}")
        return started

    async def _replay(self, req: ReplayRequest) -> None:
        try:
            state, result = await self._dispatch(req)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.store.replay_finish(req.id, "failed", "the bot stopped during the replay")
                )
            raise
        except Exception:
            ref = new_ref()
            log.exception("replay of %s failed (ref %s)", req.event_id, ref)
            state, result = "failed", f"internal error (ref {ref})"
        finally:
            self._inflight -= 1
        if state == "done":
            self.replayed += 1
        else:
            self.failed += 1
        try:
            await self.store.replay_finish(req.id, state, result)
        except StoreError as exc:
            log.error("replay of %s: cannot record the result: %s", req.event_id, exc)

    async def _dispatch(self, req: ReplayRequest) -> tuple[str, str]:
        found = await self.store.event_log_get([req.event_id])
        if not found:
            return "failed", f"event {req.event_id} is not in the event log (pruned?)"
        rec = found[0]
        try:
            ev = rebuild(rec)
        except ReplayError as exc:
            return "failed", str(exc)
        if self.sink is not None and (ev.nick or ev.channel):
            ev = dataclasses.replace(ev, sink=self.sink)  # replies go where the original's did
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def on_done() -> None:
            if not finished.done():
                finished.set_result(None)

        log.info("replaying %s %s %s as %s", rec.type, rec.key, rec.id, ev.id)
        assert self.events is not None
        await self.events.put(ev, on_done=on_done)
        try:
            async with asyncio.timeout(self.wait_s):
                await finished
        except TimeoutError:
            return "failed", f"replayed as {ev.id}, but its handlers did not finish in time"
        outcome = self.outcome(ev.id) if self.outcome is not None else None
        return "done", f"replayed as {ev.id}: {outcome or 'dispatched'}"

    def status(self) -> SourceStatus:
        return SourceStatus(
            self.family,
            self.name,
            "failing" if self._failing else "ok",
            "cannot read replay requests" if self._failing else "replay requests",
            events=self.replayed,
            errors=self.failed,
            pending=self._inflight,
        )

    def metrics(self) -> list[Family]:
        return []


@dataclass(frozen=True, slots=True)
class ReplayEntry:
    name: str
    wait_s: float


class ReplayFamily:
    """``masterchief events replay`` requests, taken from the store."""

    name = "replay"
    section = "events"
    bind_types: tuple[str, ...] = ()  # replays feed the types of what they replay
    entry_model = None  # a built-in section

    def entries(self, config: Any) -> Sequence[ReplayEntry]:
        # a replay waits for its handlers at least as long as they may run
        return [ReplayEntry(ReplayWorker.name, max(60.0, 4 * config.bot.handler_timeout_s))]

    def build(self, entry: ReplayEntry, deps: SourceDeps) -> ReplayWorker:
        return ReplayWorker(
            deps.stored(), outcome=deps.outcome, sink=deps.reply, wait_s=entry.wait_s
        )


FAMILY = ReplayFamily()
