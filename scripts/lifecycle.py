"""Bot lifecycle — the evnt (Eggdrop names) / event (MasterChief names) family.

Eggdrop's ``init-server`` fires when the bot is connected and registered;
MasterChief's internal events (``irc.connected``, ``irc.disconnected``,
``rehash``, ``deploy.*`` -- see deploy_alerts.py) are ``event`` bindings with wildcard masks.
"""

import logging

from masterchief import Event, bind

log = logging.getLogger("scripts.lifecycle")


@bind("evnt", "-|-", "init-server")
def connected(ev: Event) -> None:
    log.info("connected to IRC")


# Not "*": that would also ask for a deploy.progress Event per output line.
@bind("event", "-|-", "irc.*")
def irc_state(ev: Event) -> None:
    log.info("internal event %s", ev.key)
