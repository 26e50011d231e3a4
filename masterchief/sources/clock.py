"""The clock: one ``time`` and one ``cron`` Event per minute.

The clock remembers the last minute it announced.  Each time it wakes it
announces every minute since then, in order, so a time binding fires once per
matching minute even if the event loop was busy past a minute boundary (up
to ``max_catchup`` minutes; older ones are skipped and logged).  The minute
is given in the configured timezone, as a ``datetime`` in ``payload``; the
key is Eggdrop's ``MM HH DD MM YYYY``.

Minutes are counted in UTC and only then shown in the timezone: wall-clock
arithmetic on an aware ``datetime`` ignores DST, so counting in local time
announced the 60 minutes that do not exist when clocks go forward (02:00 to
02:59 in Paris, all at 03:00) and stayed silent for the hour that repeats
when they go back.  Like Eggdrop (localtime each minute), a repeated hour is
announced twice and a skipped one not at all.

The clock is a source (``family clock``, one entry built from
``bot.timezone``); a minute no ``time`` or ``cron`` binding matches is not
dispatched at all (``sink.wants``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from ..bindings.event import Event
from ..metrics import Family
from .base import EventSink, SourceCounters, SourceDeps, SourceStatus

__all__ = ["FAMILY", "Clock", "minute_events"]

log = logging.getLogger("masterchief.clock")


def minute_events(minute: datetime) -> tuple[Event, Event]:
    key = minute.strftime("%M %H %d %m %Y")
    return (
        Event(type="time", key=key, payload=minute, source="clock"),
        Event(type="cron", key=key, payload=minute, source="clock"),
    )


class Clock:
    """The ``clock`` source: ``time`` and ``cron`` Events, one pair per minute."""

    family = "clock"
    name = "minutes"

    def __init__(
        self,
        tz: tzinfo,
        *,
        now: Callable[[tzinfo], datetime] = datetime.now,
        max_catchup: int = 60,
    ) -> None:
        self.tz = tz
        self.counters = SourceCounters()
        self._now = now
        self.max_catchup = max_catchup
        self.last: datetime | None = None

    def _floor(self, t: datetime) -> datetime:
        return t.replace(second=0, microsecond=0)

    def due(self) -> list[datetime]:
        """The minutes to announce now (and mark them announced)."""
        current = self._floor(self._now(self.tz)).astimezone(UTC)
        if self.last is None:
            self.last = current.astimezone(self.tz)
            return [self.last]
        out: list[datetime] = []
        t = self.last.astimezone(UTC) + timedelta(minutes=1)
        if (current - t) > timedelta(minutes=self.max_catchup):
            skipped = t
            t = current - timedelta(minutes=self.max_catchup)
            log.warning("clock fell behind: skipping minutes %s .. %s", skipped, t)
        while t <= current:
            out.append(t.astimezone(self.tz))
            t += timedelta(minutes=1)
        if out:
            self.last = out[-1]
        return out

    def tick(self, sink: EventSink) -> int:
        """Dispatch the due minutes; how many minutes that was."""
        minutes = self.due()
        for m in minutes:
            for ev in minute_events(m):  # separate chains: both types always fire
                if sink.wants(ev.type, ev.key):
                    self.counters.event(int(sink.submit(ev)))
        return len(minutes)

    async def run(self, sink: EventSink, started: asyncio.Event) -> None:
        started.set()
        while True:
            self.tick(sink)
            now = self._now(self.tz)
            await asyncio.sleep(60.0 - now.second - now.microsecond / 1e6 + 0.01)

    def status(self) -> SourceStatus:
        c = self.counters
        last = self.last.strftime("%H:%M %Z") if self.last else "none yet"
        return SourceStatus(
            self.family,
            self.name,
            "ok",
            f"{self.tz}; last minute {last}",
            events=c.events,
            last_success=c.last_success,
        )

    def metrics(self) -> list[Family]:
        return []


@dataclass(frozen=True, slots=True)
class ClockEntry:
    name: str
    timezone: str


class ClockFamily:
    """One clock, in ``bot.timezone``."""

    name = "clock"
    section = "bot"
    bind_types = ("time", "cron")
    entry_model = None  # a built-in section

    def entries(self, config: Any) -> Sequence[ClockEntry]:
        return [ClockEntry(Clock.name, config.bot.timezone)]

    def build(self, entry: ClockEntry, deps: SourceDeps) -> Clock:
        return Clock(ZoneInfo(entry.timezone))


FAMILY = ClockFamily()
