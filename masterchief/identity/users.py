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

Effective flags: ``identify`` returns an ``Identity`` (``principal.py``, the
one place that is decided): a hostmask match carries no privileges when the
mask is weak (``hostmasks.py``) or, unless configured, when the network has
accounts.

Records, names and the index are ``index.py``; password hashing is
``passwords.py``.  An account found by its rfc1459 key must also be equal
under the server's own CASEMAPPING; ``UserTable.chattr`` takes the
casemapping and treats equal channel names as one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import replace
from types import MappingProxyType

from masterchief.bindings.flags import FlagError, apply_changes
from masterchief.bindings.masks import irc_lower
from masterchief.errors import UserError
from masterchief.store.api import ConflictError, StoreError, UserStore

from .hostmasks import (
    WeakHostmask,
    check_hostmask_strength,
    is_weak_hostmask,
    normalize_hostmask,
)
from .index import (
    NOT_LOGGED_IN,
    Index,
    User,
    ascii_lower,
    check_account,
    check_channel,
    check_handle,
    name_key,
    to_record,
    to_user,
    valid_handle,
)
from .passwords import check_password, hash_password, verify_password
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


class UserTable:
    """Users indexed in memory, written through to the ``UserStore``."""

    def __init__(self, store: UserStore) -> None:
        self._store = store
        self._index = Index(())
        self._lock = asyncio.Lock()  # one mutation at a time; readers never wait
        self._version: int | None = None  # the store's users_version the index is at
        self._wake = asyncio.Event()  # request_reload(): reload now, version or not

    @classmethod
    async def load(cls, store: UserStore) -> UserTable:
        table = cls(store)
        await table.reload()
        return table

    async def reload(self) -> None:
        """Re-read every user from the store (after another process changed it)."""
        async with self._lock:
            version, records = await self._store.load_users_versioned()
            self._index = Index(to_user(r) for r in records)
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
        if accounts_available and account is not None and account not in NOT_LOGGED_IN:
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
        check_handle(handle)
        masks = tuple(normalize_hostmask(m) for m in hostmasks)
        account = check_account(account)
        flags = _apply_flags("", flags) if flags not in ("-", "*") else ""
        pw_hash = None
        if password is not None:
            pw_hash = await asyncio.to_thread(hash_password, check_password(password))
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
                rec = await self._store.insert_user(to_record(user))
            except ConflictError:
                raise UserError(
                    f"handle {handle!r} or its account is already in the store"
                    " (changed elsewhere? reload the user table)"
                ) from None
            user = replace(user, created_at=rec.created_at)
            self._index = Index([*self._index.users, user])
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
                return await self._save(replace(user, flags=_apply_flags(user.flags, changes)))
            check_channel(channel)
            key = ascii_lower(channel)
            target = irc_lower(channel, casemapping)
            chanflags = dict(user.chanflags)
            current = ""
            for name in [n for n in chanflags if irc_lower(n, casemapping) == target]:
                current += chanflags.pop(name)
            new = _apply_flags(current, changes)
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
        account = check_account(account)
        async with self._lock:
            user = self._existing(handle)
            self._check_account_free(account, user.handle)
            return await self._save(replace(user, account=account))

    async def set_password(self, handle: str, password: str | None) -> User:
        """Set (``None``: clear) the partyline password."""
        pw_hash = None
        if password is not None:
            pw_hash = await asyncio.to_thread(hash_password, check_password(password))
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
            self._index = Index(u for u in self._index.users if u is not user)

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
            await self._store.save_user(to_record(user))
        except ConflictError:
            raise UserError(
                f"cannot save {user.handle}: it conflicts with another user in the store"
            ) from None
        self._index = Index(
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


def _apply_flags(current: str, changes: str) -> str:
    """``apply_changes``, turning ``FlagError`` into ``UserError``."""
    try:
        return apply_changes(current, changes)
    except FlagError as exc:
        raise UserError(str(exc)) from None
