"""Identity: a user record as matched for one origin, and the flags that
match may carry -- the one place that is decided, and the one principal
adapter (the dispatcher's ``Principal``, what built-ins and deploy check).

A match by services account, or a console session the transport logged in
(``via="session"``), carries the record's flags.  A match by hostmask
carries only unprivileged ones (``+v`` and the restricting ``d k q r``),
and may approve no deploy, when the mask is weak (see
``hostmasks.is_weak_hostmask``) or when the network has accounts and
``users.hostmask_flags_on_account_networks`` is off: there an account is
proof and a hostmask only a claim.  A linked bot (``via="bot"``) is
restricted the same way (``resolve.py`` says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from masterchief.bindings.flags import implied
from masterchief.identity.index import User

__all__ = ["Identity", "Via", "restriction", "unprivileged"]

# What a match that cannot be trusted with privileges keeps: voice, and the
# flags that only take something away (Eggdrop: d deop, k kick, q quiet,
# r dehalfop), so demoting a record never frees it from a restriction.
_UNPRIVILEGED = frozenset("v")
_RESTRICTING = frozenset("dkqr")


def unprivileged(flags: str) -> str:
    """What is left of ``flags`` without privileges: ``+v`` (also when implied,
    ``o`` gives ``v``) and the restricting flags ``d k q r``."""
    kept = (implied(flags) & _UNPRIVILEGED) | (set(flags) & _RESTRICTING)
    return "".join(sorted(kept))


Via = Literal["account", "hostmask", "session", "bot"]


@dataclass(frozen=True, slots=True)
class Identity:
    """A user record as matched for one origin -- the principal whose flags
    the dispatcher, the built-ins and the deploy commands check.

    ``restricted`` says why the match is not trusted with privileges (None:
    it is); then ``global_flags``/``channel_flags`` are ``unprivileged`` and
    ``approval_refusal`` refuses every approval.
    """

    user: User
    via: Via
    casemapping: str = "rfc1459"
    mask: str | None = None  # the hostmask that matched (via "hostmask")
    restricted: str | None = None

    @property
    def handle(self) -> str:
        return self.user.handle

    def global_flags(self) -> str:
        flags = self.user.flags
        return flags if self.restricted is None else unprivileged(flags)

    def channel_flags(self, channel: str) -> str:
        flags = self.user.chan_flags(channel, self.casemapping)
        return flags if self.restricted is None else unprivileged(flags)

    def approval_refusal(self) -> str | None:
        """Why this match may not approve anything, or None."""
        if self.restricted is None:
            return None
        return f"you matched {self.handle} {self.restricted}: that cannot approve deploys"


def restriction(
    via: Via, mask: str | None, weak: bool, accounts_available: bool, hostmask_flags: bool
) -> str | None:
    """Why a match is not trusted with privileges, or None (the rule above).
    ``hostmask_flags`` is ``users.hostmask_flags_on_account_networks``."""
    if via == "account":
        return None
    if weak:
        return f"by the weak hostmask {mask}, whose nick and ident anyone can choose"
    if accounts_available and not hostmask_flags:
        return f"by hostmask {mask} on a network with services accounts"
    return None
