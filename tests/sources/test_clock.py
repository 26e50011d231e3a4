"""The clock: minutes announced in ``bot.timezone``, across DST changes, no waiting.

Instants are UTC; a fake ``now`` shows them in whatever zone the clock asks for,
as ``datetime.now(tz)`` would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from masterchief.bindings.registry import BindingTable
from masterchief.config.engine import build_config
from masterchief.runtime.compose import App
from masterchief.sources.clock import Clock, minute_events
from tests.harness import bot_config_data

PARIS = ZoneInfo("Europe/Paris")
NINE = "0 9 * * *"


class FakeNow:
    """``now(tz)`` for a Clock: a settable UTC instant shown in ``tz``."""

    def __init__(self, instant: datetime) -> None:
        self.instant = instant

    def __call__(self, tz: tzinfo | None = None) -> datetime:
        return self.instant.astimezone(tz)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fired(table: BindingTable, clock: Clock) -> list[str]:
    """Masks of the cron bindings the clock's due minutes fire, in order."""
    out: list[str] = []
    for minute in clock.due():
        _, cron = minute_events(minute)
        out += [b.mask for b in table.snapshot.match(cron)]
    return out


def make_clock(tz: tzinfo, instant: datetime) -> tuple[BindingTable, Clock, FakeNow]:
    table = BindingTable()
    table.bind("cron", "-|-", NINE, lambda ev: None)
    now = FakeNow(instant)
    return table, Clock(tz, now=now), now


# 09:00 in Paris is 08:00 UTC in winter (CET) and 07:00 UTC in summer (CEST);
# 2024-03-31 is the day clocks go forward, 2024-10-27 the day they go back.
@pytest.mark.parametrize(
    ("instant", "fires"),
    [
        (utc(2024, 1, 15, 8, 0), True),  # 09:00 CET
        (utc(2024, 1, 15, 9, 0), False),  # 09:00 UTC is 10:00 in Paris
        (utc(2024, 7, 1, 7, 0), True),  # 09:00 CEST
        (utc(2024, 7, 1, 8, 0), False),  # the winter instant, in summer: 10:00
        (utc(2024, 7, 1, 9, 0), False),  # 09:00 UTC is 11:00 in Paris
        (utc(2024, 3, 30, 8, 0), True),  # the day before the change: still CET
        (utc(2024, 3, 31, 7, 0), True),  # the day of the change: already CEST
        (utc(2024, 3, 31, 8, 0), False),
        (utc(2024, 10, 27, 8, 0), True),  # the day clocks go back: CET again
        (utc(2024, 10, 27, 7, 0), False),
    ],
)
def test_cron_fires_at_nine_in_the_bot_timezone(instant: datetime, fires: bool) -> None:
    table, clock, _ = make_clock(PARIS, instant)
    assert fired(table, clock) == ([NINE] if fires else [])


def test_utc_clock_fires_at_nine_utc() -> None:
    table, clock, _ = make_clock(ZoneInfo("UTC"), utc(2024, 7, 1, 9, 0))
    assert fired(table, clock) == [NINE]
    table, clock, _ = make_clock(ZoneInfo("UTC"), utc(2024, 7, 1, 7, 0))
    assert fired(table, clock) == []


def _walk(clock: Clock, now: FakeNow, start: datetime, minutes: int) -> list[datetime]:
    """Tick once a minute from ``start`` (UTC) and collect what is announced."""
    out: list[datetime] = []
    for i in range(minutes):
        now.instant = start + timedelta(minutes=i)
        out += clock.due()
    return out


def test_spring_forward_announces_no_missing_hour() -> None:
    """01:59 CET is followed by 03:00 CEST: one minute, not the 61 of a
    wall-clock count (02:00..02:59 do not exist that night)."""
    _, clock, now = make_clock(PARIS, utc(2024, 3, 31, 0, 58))
    seen = _walk(clock, now, utc(2024, 3, 31, 0, 58), 4)
    assert [m.strftime("%H:%M%z") for m in seen] == ["01:58+0100", "01:59+0100", "03:00+0200", "03:01+0200"]  # fmt: skip
    # every announced minute is a distinct real minute
    assert len({m.astimezone(UTC) for m in seen}) == len(seen)


def test_fall_back_announces_the_repeated_hour() -> None:
    """02:59 CEST is followed by 02:00 CET (the hour repeats): the clock goes
    on announcing, instead of waiting an hour for 03:00 to come round."""
    _, clock, now = make_clock(PARIS, utc(2024, 10, 27, 0, 58))
    seen = _walk(clock, now, utc(2024, 10, 27, 0, 58), 4)
    assert [m.strftime("%H:%M%z") for m in seen] == ["02:58+0200", "02:59+0200", "02:00+0100", "02:01+0100"]  # fmt: skip


def test_catch_up_across_the_change_counts_real_minutes() -> None:
    """A loop busy from 01:50 CET to 03:05 CEST catches up 15 real minutes."""
    _, clock, now = make_clock(PARIS, utc(2024, 3, 31, 0, 50))
    assert len(clock.due()) == 1
    now.instant = utc(2024, 3, 31, 1, 5)
    late = clock.due()
    assert len(late) == 15
    assert late[0].strftime("%H:%M") == "01:51" and late[-1].strftime("%H:%M") == "03:05"


async def test_app_clock_uses_bot_timezone(tmp_path: Path) -> None:
    """``bot: {timezone: Europe/Paris}`` reaches the App's clock: a cron
    binding in the App's table fires at 09:00 Paris, not 09:00 UTC."""
    data = bot_config_data(tmp_path, "127.0.0.1", 6667, bot={"timezone": "Europe/Paris"})
    app = await App.create(build_config(data, project_dir=tmp_path))
    try:
        app.table.bind("cron", "-|-", NINE, lambda ev: None)
        clock = app.sources.find("clock", "minutes")
        assert isinstance(clock, Clock)
        now = FakeNow(utc(2024, 7, 1, 7, 0))
        clock._now = now
        clock.last = None
        assert fired(app.table, clock) == [NINE]
        clock.last = None
        now.instant = utc(2024, 7, 1, 9, 0)
        assert fired(app.table, clock) == []
    finally:
        await app.store.close()
