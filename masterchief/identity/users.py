"""The user table: who someone on IRC is, and which flags they hold.

How this works.  ``UserTable`` keeps an immutable index (handles, accounts,
hostmasks) built from the store.  Lookups (``identify``, ``match``, ``get``)
are plain synchronous reads of that index -- the dispatcher calls
``identify`` for every event.  Mutators write through to the store first and
then build a new index and swap the reference, so a reader sees the old
table or the new one, never half of a change, and a failed write changes
nothing.  ``watch`` polls the store's ``users_version`` (bumped by triggers on
every write, from any process) and reloads when it moves, so a user added
with the CLI is seen within a second.

Matching policy (security-relevant):

* ``accounts_available`` (the network tells us services accounts): a record
  that has an account is found ONLY by that account; a nick and host that
  merely look right are not enough.  Records without an account may still
  match by hostmask.
* No accounts on the network: ``nick!user@host`` against every record's
  hostmasks; the nick part is compared under the server's CASEMAPPING.
* Several hostmasks match: strong masks before weak ones, then the most
  specific mask (most literal characters); ties go to the handle that sorts
  first.

Effective flags: ``identify`` returns an ``Identity`` (``identity.py``, the
one place that is decided): a hostmask match carries no privileges when the
mask is weak (``hostmasks.py``) or, unless configured, when the network has
accounts.

Names: handles and accounts compare under rfc1459 case folding (``ERIN{1}``
is ``erin[1]``), the coarsest standard CASEMAPPING, and are unique under it
(a store index), so no server can see two records as one name; an account
found that way must also be equal under the server's own CASEMAPPING.
Channel keys are stored ASCII-lower-cased; ``User.chan_flags`` and
``UserTable.chattr`` take the casemapping and treat equal names as one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from masterchief.bindings.flags import FlagError, apply_changes
from masterchief.bindings.masks import irc_lower, mask_match
from masterchief.errors import UserError
from masterchief.store.sqlite.store import ConflictError, Store, StoreError, UserRecord
from masterchief.text import has_hidden

from .hostmasks import (
    WeakHostmask,
    check_hostmask_strength,
    host_pattern,
    is_weak_hostmask,
    nick_pattern,
    normalize_hostmask,
    specificity,
)
from .principal import Identity, restriction, unprivileged

__all__ = [
    "Identity",
    "User",
    "UserTable",
    "WeakHostmask",
    "check_channel",
    "check_hostmask_strength",
    "hash_password",
    "is_weak_hostmask",
    "name_key",
    "normalize_hostmask",
    "unprivileged",
    "valid_handle",
    "verify_password",
]

log = logging.getLogger(__name__)

_HANDLE = re.compile(r"[A-Za-z0-9_\-\[\]\\^{}|`]{1,32}")
_ACCOUNT = re.compile(r"[^\s,]{1,64}")
_CHANNEL = re.compile(r"[#&+!][^\s,\x07\x00]{1,199}")
_NOT_LOGGED_IN = frozenset({"", "*", "0"})  # account-tag/extended-join "*", WHOX "0"
_EMPTY: Mapping[str, str] = MappingProxyType({})

PASSWORD_MIN = 6
PASSWORD_MAX = 1024


def _ascii_lower(text: str) -> str:
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
        folded = {_ascii_lower(k): v for k, v in self.chanflags.items()}
        if not isinstance(self.chanflags, MappingProxyType) or folded != self.chanflags:
            object.__setattr__(self, "chanflags", MappingProxyType(folded))

    def chan_flags(self, channel: str, casemapping: str = "rfc1459") -> str:
        """The flags held on ``channel`` (names equal under ``casemapping`` count)."""
        key = _ascii_lower(channel)
        direct = self.chanflags.get(key, "")
        if casemapping.lower() == "ascii":
            return direct
        target = irc_lower(channel, casemapping)
        found = set(direct)
        for name, flags in self.chanflags.items():
            if name != key and irc_lower(name, casemapping) == target:
                found.update(flags)
        return "".join(sorted(found))


# --- validation -------------------------------------------------------------------------


def valid_handle(handle: str) -> bool:
    return _HANDLE.fullmatch(handle) is not None


def _check_handle(handle: str) -> str:
    if not valid_handle(handle):
        raise UserError(
            f"invalid handle {handle[:40]!r}: use 1-32 letters, digits or _-[]\\^{{}}|`"
        )
    return handle


def _check_account(account: str | None) -> str | None:
    if account is None:
        return None
    if account in _NOT_LOGGED_IN or not _ACCOUNT.fullmatch(account):
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


# --- passwords ----------------------------------------------------------------------------

_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=dklen,
        maxmem=256 * n * r * p + 2**20,
    )


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt_b64$hash_b64``.  CPU-heavy: use ``asyncio.to_thread``."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, 32)
    b64 = base64.b64encode
    return (
        f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}$"
        f"{b64(salt).decode('ascii')}${b64(digest).decode('ascii')}"
    )


_DUMMY_HASH: list[str] = []  # computed once, for users without a password


def verify_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s, compared in constant time.

    An unknown user or one without a password costs the same work as a real
    check, so timing does not tell which handles exist.  CPU-heavy: from
    async code call it through ``asyncio.to_thread``.
    """
    stored = user.password_hash if user is not None else None
    if not stored:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password("not-a-password"))
        _check(_DUMMY_HASH[0], password)
        return False
    return _check(stored, password)


def _check(stored: str, password: str) -> bool:
    try:
        scheme, n_s, r_s, p_s, salt_s, hash_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt = base64.b64decode(salt_s, validate=True)
        expected = base64.b64decode(hash_s, validate=True)
    except ValueError:
        return False
    if scheme != "scrypt" or not (1 < n <= 2**20 and n & (n - 1) == 0):
        return False
    if not (1 <= r <= 32 and 1 <= p <= 16 and 16 <= len(expected) <= 64):
        return False
    actual = _scrypt(password, salt, n, r, p, len(expected))
    return hmac.compare_digest(actual, expected)


def _check_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise UserError(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


# --- the index ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _MaskEntry:
    user: User
    mask: str
    nick_mask: str  # as written; lowered per casemapping at match time
    rest_mask: str  # already a mask_match pattern
    score: int
    weak: bool


class _Index:
    """An immutable snapshot of the table; built whole, never modified."""

    __slots__ = ("by_account", "by_handle", "masks", "users")

    def __init__(self, users: Iterable[User]) -> None:
        ordered = sorted(users, key=lambda u: _ascii_lower(u.handle))
        self.users: tuple[User, ...] = tuple(ordered)
        self.by_handle: dict[str, User] = {name_key(u.handle): u for u in ordered}
        self.by_account: dict[str, User] = {
            name_key(u.account): u for u in ordered if u.account is not None
        }
        entries: list[_MaskEntry] = []
        for u in ordered:
            for mask in u.hostmasks:
                nick, _, rest = mask.partition("!")
                entries.append(
                    _MaskEntry(
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
        self.masks: tuple[_MaskEntry, ...] = tuple(entries)

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
    ) -> _MaskEntry | None:
        nick_l = irc_lower(nick, casemapping)
        for entry in self.masks:
            if skip_with_account and entry.user.account is not None:
                continue
            if not mask_match(nick_pattern(entry.nick_mask, casemapping), nick_l):
                continue
            if mask_match(entry.rest_mask, uhost):
                return entry
        return None


def _record(user: User) -> UserRecord:
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


def _user(rec: UserRecord) -> User:
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


# --- the table ------------------------------------------------------------------------------


class UserTable:
    """Users indexed in memory, written through to the ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._index = _Index(())
        self._lock = asyncio.Lock()  # one mutation at a time; readers never wait
        self._version: int | None = None  # the store's users_version the index is at
        self._wake = asyncio.Event()  # request_reload(): reload now, version or not

    @classmethod
    async def load(cls, store: Store) -> UserTable:
        table = cls(store)
        await table.reload()
        return table

    async def reload(self) -> None:
        """Re-read every user from the store (after another process changed it)."""
        async with self._lock:
            version, records = await self._store.load_users_versioned()
            self._index = _Index(_user(r) for r in records)
            self._version = version
        _warn_weak(self._index.users)

    async def refresh(self) -> bool:
        """Reload if the store's users changed since the last load; True if it did."""
        if await self._store.users_version() == self._version:
            return False
        await self.reload()
        return True

    def request_reload(self) -> None:
        """Make ``watch`` reload at once, changed or not (``!rehash``, SIGHUP)."""
        self._wake.set()

    async def watch(self, interval_s: float = 0.5) -> None:
        """Poll the store every ``interval_s`` and reload on a change, until
        cancelled.  An error is logged and retried at the next tick: the
        table in use stays as it was."""
        while True:
            try:
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            forced = self._wake.is_set()
            self._wake.clear()
            try:
                if forced:
                    await self.reload()
                elif await self.refresh():
                    log.info("user table reloaded: %d users (changed in the store)", len(self))
            except StoreError as exc:
                log.warning("cannot re-read users (will retry): %s", exc)
            except Exception:  # a stale table beats a bot that stops over it
                log.exception("re-reading users failed (will retry)")

    # --- lookups (synchronous) ---

    def identify(
        self,
        nick: str | None,
        uhost: str | None,
        account: str | None,
        *,
        accounts_available: bool,
        casemapping: str = "rfc1459",
        hostmask_flags: bool = False,
    ) -> Identity | None:
        """Who someone on IRC is, with the flags that match may carry.

        ``hostmask_flags`` is ``users.hostmask_flags_on_account_networks``.
        See the module doc for the policy.
        """
        index = self._index
        if accounts_available and account is not None and account not in _NOT_LOGGED_IN:
            found = index.match_account(account, casemapping)
            if found is not None:
                return Identity(found, "account", casemapping)
        if nick is None or uhost is None:
            return None
        entry = index.match_host(nick, uhost, casemapping, skip_with_account=accounts_available)
        if entry is None:
            return None
        why = restriction("hostmask", entry.mask, entry.weak, accounts_available, hostmask_flags)
        return Identity(entry.user, "hostmask", casemapping, entry.mask, why)

    def match(
        self,
        nick: str | None,
        uhost: str | None,
        account: str | None,
        *,
        accounts_available: bool,
        casemapping: str = "rfc1459",
    ) -> User | None:
        """The user record for someone on IRC, or None (``identify`` without
        the effective flags)."""
        found = self.identify(
            nick, uhost, account, accounts_available=accounts_available, casemapping=casemapping
        )
        return found.user if found is not None else None

    def get(self, handle: str) -> User | None:
        """The record whose handle equals ``handle`` under rfc1459 folding."""
        return self._index.by_handle.get(name_key(handle))

    def all(self) -> tuple[User, ...]:
        """Every user, ordered by handle."""
        return self._index.users

    def __len__(self) -> int:
        return len(self._index.users)

    # --- mutators (write through, then swap the index) ---

    async def add_user(
        self,
        handle: str,
        hostmasks: Iterable[str] = (),
        account: str | None = None,
        flags: str = "",
        password: str | None = None,
        info: str = "",
    ) -> User:
        _check_handle(handle)
        masks = tuple(normalize_hostmask(m) for m in hostmasks)
        account = _check_account(account)
        flags = _flags(apply_changes, "", flags) if flags not in ("-", "*") else ""
        pw_hash = None
        if password is not None:
            pw_hash = await asyncio.to_thread(hash_password, _check_password(password))
        async with self._lock:
            taken = self.get(handle)
            if taken is not None:
                raise UserError(f"handle {handle!r} already exists{_as(handle, taken.handle)}")
            self._check_account_free(account, handle)
            user = User(
                handle=handle,
                hostmasks=masks,
                account=account,
                flags=flags,
                info=info,
                password_hash=pw_hash,
            )
            try:
                rec = await self._store.insert_user(_record(user))
            except ConflictError:
                raise UserError(
                    f"handle {handle!r} or its account is already in the store"
                    " (changed elsewhere? reload the user table)"
                ) from None
            user = replace(user, created_at=rec.created_at)
            self._index = _Index([*self._index.users, user])
            return user

    async def chattr(
        self, handle: str, changes: str, channel: str | None = None, *, casemapping: str = "rfc1459"
    ) -> User:
        """Apply Eggdrop flag changes (``+mo-v``) globally or on ``channel``.

        On a channel, entries whose names are equal under ``casemapping`` are
        merged into one first, so a ``-o`` cannot miss a differently-cased twin.
        """
        async with self._lock:
            user = self._existing(handle)
            if channel is None:
                return await self._save(
                    replace(user, flags=_flags(apply_changes, user.flags, changes))
                )
            check_channel(channel)
            key = _ascii_lower(channel)
            target = irc_lower(channel, casemapping)
            chanflags = dict(user.chanflags)
            current = ""
            for name in [n for n in chanflags if irc_lower(n, casemapping) == target]:
                current += chanflags.pop(name)
            new = _flags(apply_changes, current, changes)
            if new:
                chanflags[key] = new
            return await self._save(replace(user, chanflags=MappingProxyType(chanflags)))

    async def add_hostmask(self, handle: str, mask: str) -> User:
        mask = normalize_hostmask(mask)
        async with self._lock:
            user = self._existing(handle)
            if mask in user.hostmasks:
                raise UserError(f"{user.handle} already has hostmask {mask}")
            return await self._save(replace(user, hostmasks=(*user.hostmasks, mask)))

    async def remove_hostmask(self, handle: str, mask: str) -> User:
        async with self._lock:
            user = self._existing(handle)
            if mask not in user.hostmasks:
                mask = normalize_hostmask(mask)
            if mask not in user.hostmasks:
                raise UserError(f"{user.handle} has no hostmask {mask}")
            kept = tuple(m for m in user.hostmasks if m != mask)
            return await self._save(replace(user, hostmasks=kept))

    async def set_account(self, handle: str, account: str | None) -> User:
        """Tie ``handle`` to a services account (``None`` unties it)."""
        account = _check_account(account)
        async with self._lock:
            user = self._existing(handle)
            self._check_account_free(account, user.handle)
            return await self._save(replace(user, account=account))

    async def set_password(self, handle: str, password: str | None) -> User:
        """Set (``None``: clear) the partyline password."""
        pw_hash = None
        if password is not None:
            pw_hash = await asyncio.to_thread(hash_password, _check_password(password))
        async with self._lock:
            user = self._existing(handle)
            return await self._save(replace(user, password_hash=pw_hash))

    async def set_info(self, handle: str, info: str) -> User:
        async with self._lock:
            return await self._save(replace(self._existing(handle), info=info))

    async def remove_user(self, handle: str) -> None:
        async with self._lock:
            user = self._existing(handle)
            await self._store.delete_user(user.handle)
            self._index = _Index(u for u in self._index.users if u is not user)

    # --- helpers ---

    def _existing(self, handle: str) -> User:
        user = self.get(handle)
        if user is None:
            raise UserError(f"no such user {handle[:40]!r}")
        return user

    def _check_account_free(self, account: str | None, handle: str) -> None:
        if account is None:
            return
        owner = self._index.by_account.get(name_key(account))
        if owner is not None and name_key(owner.handle) != name_key(handle):
            same = _as(account, str(owner.account))
            raise UserError(f"account {account!r} already belongs to {owner.handle}{same}")

    async def _save(self, user: User) -> User:
        try:
            await self._store.save_user(_record(user))
        except ConflictError:
            raise UserError(
                f"cannot save {user.handle}: it conflicts with another user in the store"
            ) from None
        self._index = _Index(
            user if name_key(u.handle) == name_key(user.handle) else u for u in self._index.users
        )
        return user


def _as(wanted: str, existing: str) -> str:
    """For a refusal: why ``wanted`` is taken when it is spelled differently."""
    if wanted == existing:
        return ""
    return f" as {existing!r} (to IRC they are one name: case, and [ ] \\ ~ are {{ }} | ^)"


def _warn_weak(users: Iterable[User]) -> None:
    """Log records whose weak hostmasks would carry privileges if they could."""
    for u in users:
        weak = [m for m in u.hostmasks if is_weak_hostmask(m)]
        held = set(u.flags).union(*u.chanflags.values())
        if weak and unprivileged("".join(held)) != "".join(sorted(held)):
            log.warning(
                "user %s: hostmask %s is weak, so it never carries flags above +v; "
                "replace it with *!ident@host or set an account",
                u.handle,
                ", ".join(weak),
            )


def _flags(fn: Callable[..., str], *args: str) -> str:
    """Run a flags function, turning ``FlagError`` into ``UserError``."""
    try:
        return fn(*args)
    except FlagError as exc:
        raise UserError(str(exc)) from None
