"""!seen NICK — the join / part / sign / nick family.

Every membership change on a channel the bot is in is remembered (in memory),
and ``!seen alice`` says what alice did last and when.
"""

import time

from masterchief import Event, bind

_last: dict[str, tuple[float, str]] = {}


def _note(nick: str | None, what: str) -> None:
    if nick:
        _last[nick.lower()] = (time.time(), what)


@bind("join", "-|-", "*")
def on_join(ev: Event) -> None:
    _note(ev.nick, f"joining {ev.channel}")


@bind("part", "-|-", "*")
def on_part(ev: Event) -> None:
    _note(ev.nick, f"leaving {ev.channel}" + (f" ({ev.text})" if ev.text else ""))


@bind("sign", "-|-", "*")
def on_sign(ev: Event) -> None:
    _note(ev.nick, "quitting IRC" + (f" ({ev.text})" if ev.text else ""))


@bind("nick", "-|-", "*")
def on_nick(ev: Event) -> None:
    _note(ev.nick, f"changing nick to {ev.text}")
    _note(ev.text, f"changing nick from {ev.nick}")


@bind("pub", "-|-", "!seen")
def seen(ev: Event) -> None:
    """!seen NICK: when a nick was last seen joining, leaving or renaming"""
    if not ev.args:
        ev.reply("usage: !seen NICK")
        return
    who = ev.args[0]
    hit = _last.get(who.lower())
    if hit is None:
        ev.reply(f"I have not seen {who}")
        return
    ago = int(time.time() - hit[0])
    ev.reply(f"{who} was last seen {hit[1]} {ago}s ago")
