"""Channel changes — the topc / kick / mode family.

``!lasttopic`` says who changed the topic last; a kick and an op change on a
channel are recorded and ``!modlog`` shows the last five.
"""

from collections import deque

from masterchief import Event, bind

_topics: dict[str, str] = {}
_log: deque[str] = deque(maxlen=5)


@bind("topc", "-|-", "*")
def on_topic(ev: Event) -> None:
    if ev.channel:
        _topics[ev.channel.lower()] = f"{ev.nick} set the topic of {ev.channel} to: {ev.text}"


@bind("kick", "-|-", "*")
def on_kick(ev: Event) -> None:
    _log.append(
        f"{ev.nick} kicked {ev.payload['target']} from {ev.channel}: {ev.payload['reason']}"
    )


@bind("mode", "-|-", "* [+-]o")
def on_op(ev: Event) -> None:
    change = ev.key.split()[-1]
    _log.append(f"{ev.nick} set {change} {ev.text} on {ev.channel}")


@bind("pub", "-|-", "!lasttopic")
def lasttopic(ev: Event) -> None:
    """who changed this channel's topic last"""
    ev.reply(_topics.get((ev.channel or "").lower(), "no topic change seen"))


@bind("pub", "o|o", "!modlog")
def modlog(ev: Event) -> None:
    """the last kicks and op changes (+o)"""
    for line in _log or ["nothing recorded"]:
        ev.reply(line)
