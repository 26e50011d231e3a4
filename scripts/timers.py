"""Scheduled messages — the time / cron family (5-field cron expressions,
evaluated in ``bot.timezone``).

A weekday stand-up reminder and a quarter-hourly heartbeat in the log.
"""

import logging

from masterchief import Event, bind, say

log = logging.getLogger("scripts.timers")


@bind("cron", "-|-", "0 9 * * 1-5")
def standup(ev: Event) -> None:
    say("#ops", "stand-up in 5 minutes")


@bind("time", "-|-", "*/15 * * * *")
def heartbeat(ev: Event) -> None:
    log.info("heartbeat %s", ev.payload.isoformat())
