"""User records and the immutable index the user table reads.

How this works.  A ``User`` is one record (handle, hostmasks, account,
flags).  Names: handles and accounts compare under rfc1459 case folding
(``ERIN{1}`` is ``erin[1]``, ``name_key``), the coarsest standard
CASEMAPPING, and are unique under it (a store index), so no server can see
two records as one name.  Channel keys are stored ASCII-lower-cased;
``User.chan_flags`` takes the casemapping and treats equal names as one.

``Index`` is a snapshot of every record, built whole and never modified:
by handle, by account, and the hostmasks best first (strong masks before
weak ones, then the most specific), so a lookup is a plain read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from masterchief.bindings.masks import irc_lower, mask_match
from masterchief.errors import UserError
from masterchief.store.api import UserRecord
from masterchief.text import has_hidden

from .hostmasks import host_pattern, is_weak_hostmask, nick_pattern, specificity

__all__ = [
    "NOT_LOGGED_IN",
    "Index",
    "MaskEntry",
    "User",
    "ascii_lower",
    "check_account",
    "check_channel",
    "check_handle",
    "name_key",
    "to_record",
    "to_user",
    "valid_handle",
]

_HANDLE = re.compile(r"[A-Za-z0-9_\-\[\]\\^{}|`]{1,32}")


_ACCOUNT = re.compile(r"[^\s,]{1,64}")


_CHANNEL = re.compile(r"[#&+!][^\s,\x07\x00]{1,199}")


NOT_LOGGED_IN = frozenset({"", "*", "0"})  # account-tag/extended-join "*", WHOX "0"


_EMPTY: Mapping[str, str] = MappingProxyType({})


def ascii_lower(text: str) -> str:
    return irc_lower(text, "ascii")


def name_key(name: str) -> str:
    """A handle or account folded under rfc1459: equal keys are one name.

    rfc1459 is the coarsest standard CASEMAPPING (it makes ``[]\\~`` the
    upper case of ``{}|^``; strict-rfc1459 and ascii make fewer names equal),
    so names kept apart under it are apart on every server -- the CLI, which
    has no server to ask, can decide alone.  The store's unique indexes use
    the same folding.
    """
    return irc_lower(name, "rfc1459")


@dataclass(frozen=True, slots=True)
class User:
    """A user record.  ``hostmasks`` are sorted; ``chanflags`` is keyed by
    ASCII-lower-cased channel."""

    handle: str
    hostmasks: tuple[str, ...] = ()
    account: str | None = None
    flags: str = ""
    chanflags: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    info: str = ""
    password_hash: str | None = field(default=None, repr=False)
    created_at: str = ""

    def __post_init__(self) -> None:
        # Keep the invariants whoever builds a User (the store returns the
        # same order): sorted unique hostmasks, folded keys, read-only map.
        masks = tuple(sorted(set(self.hostmasks)))
        if masks != self.hostmasks:
            object.__setattr__(self, "hostmasks", masks)
        folded = {ascii_lower(k): v for k, v in self.chanflags.items()}
        if not isinstance(self.chanflags, MappingProxyType) or folded != self.chanflags:
            object.__setattr__(self, "chanflags", MappingProxyType(folded))

    def chan_flags(self, channel: str, casemapping: str = "rfc1459") -> str:
        """The flags held on ``channel`` (names equal under ``casemapping`` count)."""
        key = ascii_lower(channel)
        direct = self.chanflags.get(key, "")
        if casemapping.lower() == "ascii":
            return direct
        target = irc_lower(channel, casemapping)
        found = set(direct)
        for name, flags in self.chanflags.items():
            if name != key and irc_lower(name, casemapping) == target:
                found.update(flags)
        return "".join(sorted(found))


def valid_handle(handle: str) -> bool:
    return _HANDLE.fullmatch(handle) is not None


def check_handle(handle: str) -> str:
    if not valid_handle(handle):
        raise UserError(
            f"invalid handle {handle[:40]!r}: use 1-32 letters, digits or _-[]\\^{{}}|`"
        )
    return handle


def check_account(account: str | None) -> str | None:
    if account is None:
        return None
    if account in NOT_LOGGED_IN or not _ACCOUNT.fullmatch(account):
        raise UserError(f"invalid account name {account[:70]!r}")
    return account


def check_channel(channel: str) -> str:
    """``channel`` if it is a valid channel name, else ``UserError``.

    The one place both ``!chattr`` and the CLI's ``--channel`` are checked.
    """
    if has_hidden(channel):
        raise UserError(f"invalid channel name {channel[:70]!r}: control or invisible characters")
    if not _CHANNEL.fullmatch(channel):
        raise UserError(f"invalid channel name {channel[:70]!r}")
    return channel


@dataclass(frozen=True, slots=True)
class MaskEntry:
    user: User
    mask: str
    nick_mask: str  # as written; lowered per casemapping at match time
    rest_mask: str  # already a mask_match pattern
    score: int
    weak: bool


class Index:
    """An immutable snapshot of the table; built whole, never modified."""

    __slots__ = ("by_account", "by_handle", "masks", "users")

    def __init__(self, users: Iterable[User]) -> None:
        ordered = sorted(users, key=lambda u: ascii_lower(u.handle))
        self.users: tuple[User, ...] = tuple(ordered)
        self.by_handle: dict[str, User] = {name_key(u.handle): u for u in ordered}
        self.by_account: dict[str, User] = {
            name_key(u.account): u for u in ordered if u.account is not None
        }
        entries: list[MaskEntry] = []
        for u in ordered:
            for mask in u.hostmasks:
                nick, _, rest = mask.partition("!")
                entries.append(
                    MaskEntry(
                        u,
                        mask,
                        nick,
                        host_pattern(rest),
                        specificity(mask),
                        is_weak_hostmask(mask),
                    )
                )
        # Best first: strong masks, the most specific, then handle order (sort
        # is stable) -- a weak mask never shadows a strong one that matches.
        entries.sort(key=lambda e: (e.weak, -e.score))
        self.masks: tuple[MaskEntry, ...] = tuple(entries)

    def match_account(self, account: str, casemapping: str) -> User | None:
        found = self.by_account.get(name_key(account))
        if found is None or found.account is None:
            return None
        # Unique under rfc1459; the server's own mapping may tell more apart.
        if irc_lower(found.account, casemapping) != irc_lower(account, casemapping):
            return None
        return found

    def match_host(
        self, nick: str, uhost: str, casemapping: str, *, skip_with_account: bool
    ) -> MaskEntry | None:
        nick_l = irc_lower(nick, casemapping)
        for entry in self.masks:
            if skip_with_account and entry.user.account is not None:
                continue
            if not mask_match(nick_pattern(entry.nick_mask, casemapping), nick_l):
                continue
            if mask_match(entry.rest_mask, uhost):
                return entry
        return None


def to_record(user: User) -> UserRecord:
    return UserRecord(
        handle=user.handle,
        account=user.account,
        flags=user.flags,
        info=user.info,
        password_hash=user.password_hash,
        created_at=user.created_at,
        hostmasks=user.hostmasks,
        chanflags=user.chanflags,
    )


def to_user(rec: UserRecord) -> User:
    return User(
        handle=rec.handle,
        hostmasks=tuple(rec.hostmasks),
        account=rec.account,
        flags=rec.flags,
        chanflags=MappingProxyType(dict(rec.chanflags)),
        info=rec.info,
        password_hash=rec.password_hash,
        created_at=rec.created_at,
    )
