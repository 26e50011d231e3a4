"""Who an Event's origin is: one resolver per origin kind, one answer type.

How this works.  ``Resolver`` is the dispatcher's resolver: called with an
Event, it looks at the origin and asks the resolver for that kind, each of
which returns an ``Identity`` (``principal.py``: the user record and the
flags that match may carry) or None:

* an IRC user (the flat ``nick``/``uhost``/``account``): the user table's
  account and hostmask rules (``UserTable.identify``), with the network's
  casemapping and whether it has services accounts;
* a console session (partyline, web console, a test transport): the handle
  it logged in as -- the transport checked the password, so the record's
  flags count in full;
* a linked bot: its user record, which must be a bot record (+b).  Its word
  carries no privileges yet: Eggdrop trusts a linked bot's users only
  through shared user files, which we do not have, so the match is
  restricted like a weak hostmask (``+v`` and the restricting flags);
* a source (a webhook, the clock): nobody.

The IRC case reads the Event's flat fields without building an ``IrcUser``:
the dispatcher resolves every Event that has bindings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from masterchief.bindings.event import ConsoleSession, Event, IrcUser, LinkedBot, Origin

from .principal import Identity
from .users import UserTable

__all__ = ["Network", "Resolver"]

BOT_FLAG = "b"
LINKED_BOT = "as a linked bot, whose word carries no privileges (no shared user file)"


class Network(Protocol):
    """What the IRC resolver needs to know of the network (the IRC client)."""

    @property
    def accounts_available(self) -> bool: ...

    @property
    def casemapping(self) -> str: ...


class _Offline:
    """No IRC connection (offline commands, tests): no accounts, rfc1459."""

    accounts_available = False
    casemapping = "rfc1459"


class Resolver:
    """The user record an Event's origin matches (see the module doc)."""

    def __init__(
        self,
        users: UserTable,
        network: Network | None = None,
        *,
        hostmask_flags: Callable[[], bool] = lambda: False,
    ) -> None:
        """``hostmask_flags`` reads ``users.hostmask_flags_on_account_networks``
        (a function: rehash may change it)."""
        self.users = users
        self.network: Network = network if network is not None else _Offline()
        self._hostmask_flags = hostmask_flags

    def __call__(self, ev: Event) -> Identity | None:
        peer = ev.peer
        if peer is None:
            if ev.nick is None and ev.account is None:
                return None  # a source
            return self.irc_user(ev.nick, ev.uhost, ev.account)
        if isinstance(peer, ConsoleSession):
            return self.console_session(peer)
        return self.linked_bot(peer)

    def origin(self, origin: Origin | None) -> Identity | None:
        """The same, for an origin on its own."""
        if isinstance(origin, IrcUser):
            return self.irc_user(origin.nick, origin.uhost, origin.account)
        if isinstance(origin, ConsoleSession):
            return self.console_session(origin)
        if isinstance(origin, LinkedBot):
            return self.linked_bot(origin)
        return None

    def irc_user(
        self,
        nick: str | None,
        uhost: str | None,
        account: str | None,
        *,
        accounts_available: bool | None = None,
    ) -> Identity | None:
        """``accounts_available`` overrides the network's: the dry run of a
        logged Event has no network, only the stored origin."""
        net = self.network
        if accounts_available is None:
            accounts_available = net.accounts_available
        return self.users.identify(
            nick,
            uhost,
            account,
            accounts_available=accounts_available,
            casemapping=net.casemapping,
            hostmask_flags=self._hostmask_flags(),
        )

    def console_session(self, session: ConsoleSession) -> Identity | None:
        user = self.users.get(session.handle)
        if user is None:  # removed since the login
            return None
        return Identity(user, "session", self.network.casemapping)

    def linked_bot(self, bot: LinkedBot) -> Identity | None:
        user = self.users.get(bot.bot)
        if user is None or BOT_FLAG not in user.flags:
            return None
        return Identity(user, "bot", self.network.casemapping, restricted=LINKED_BOT)
