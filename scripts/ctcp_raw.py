"""CTCP and raw server lines — the ctcp / ctcr / raw family.

- ctcp: answer CTCP FINGER (VERSION, PING, TIME are built in).
- ctcr: ``!version NICK`` asks NICK for its CTCP VERSION; the reply (a ctcr
  event) is reported to the channel that asked.
- raw: numeric 433 (nick in use) is logged with the server's text.
"""

import logging

from masterchief import Event, bind, say

log = logging.getLogger("scripts.ctcp_raw")
_asked: dict[str, str] = {}


@bind("ctcp", "-|-", "FINGER")
def finger(ev: Event) -> bool:
    if ev.nick:
        say(ev.nick, "MasterChief: no fingers, only bindings")
    return True


@bind("pub", "-|-", "!version")
def version(ev: Event) -> None:
    """ask a nick for its CTCP VERSION"""
    if not ev.args or not ev.channel:
        ev.reply("usage: !version NICK")
        return
    _asked[ev.args[0].lower()] = ev.channel
    say(ev.args[0], "\x01VERSION\x01")


@bind("ctcr", "-|-", "VERSION")
def version_reply(ev: Event) -> None:
    chan = _asked.pop((ev.nick or "").lower(), None)
    if chan:
        say(chan, f"{ev.nick} runs {ev.text}")


@bind("raw", "-|-", "433")
def nick_in_use(ev: Event) -> None:
    log.info("server says nick in use: %s", ev.text)
