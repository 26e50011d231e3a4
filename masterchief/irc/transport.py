"""The IRC transport: replies to IRC Events, and lines for ``irc:`` targets.

How this works.  A thin adapter over the paced ``OutputQueue``; nothing
here touches the socket or pydle.  As the Events' ``Reply`` (the IRC
client puts it in every Event it makes): ``reply`` answers in the channel
the Event came from, else to the nick; ``private`` only to the nick, by
PRIVMSG (clients show it in a query window) or by NOTICE with
``bot.private_replies: notice``.  Both go in the ``server`` lane, where
targets take turns.  As a ``Transport`` (``outputs/targets.py``):
``deliver(name, text)`` says ``text`` to a channel or nick in the ``alert``
lane (announcements, deploy progress); ``connected`` is the registration
state.  The durable outbox keeps feeding ``irc:`` targets to the pacer
itself, since it confirms lines by the server's echo.
"""

from __future__ import annotations

import asyncio
import logging

from ..bindings.event import Event
from .pacer import OutputQueue

__all__ = ["IrcTransport"]

log = logging.getLogger("masterchief.irc")


class IrcTransport:
    """``Reply`` and ``Transport`` for IRC (see the module doc)."""

    name = "irc"

    def __init__(
        self,
        output: OutputQueue,
        connected: asyncio.Event | None = None,
        *,
        private_notice: bool = False,
    ) -> None:
        self.output = output
        self._connected = connected
        # bot.private_replies == "notice"; rehash may change it.
        self.private_notice = private_notice

    @property
    def connected(self) -> bool:
        return self._connected is None or self._connected.is_set()

    def reply(self, event: Event, text: str) -> None:
        target = event.channel or event.nick
        if not target:
            log.info("reply to %s %s has nowhere to go: %s", event.type, event.key, text)
            return
        self.output.privmsg(target, text)

    def private(self, event: Event, text: str) -> None:
        if not event.nick:
            self.reply(event, text)  # no one to tell apart from where it came from
        elif self.private_notice:
            self.output.notice(event.nick, text)
        else:
            self.output.privmsg(event.nick, text)

    def deliver(self, name: str, text: str) -> int:
        """Say ``text`` to the channel or nick ``name`` in the alert lane; the
        number of wire lines queued."""
        return self.output.privmsg(name, text, "alert")
