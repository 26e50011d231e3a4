"""The binding table: who is bound to what, keyed by owner, read by snapshot.

How this works
--------------
``BindingTable`` holds every ``Binding`` (type, flag mask, mask, handler,
owner).  Writers (``bind``, ``unbind``, ``replace_owner``) build a new
immutable ``Snapshot`` and swap one reference, so a dispatch that is in the
middle of iterating an old snapshot is never disturbed and a handler may bind
or unbind freely.

Each bind type has a match kind, following Eggdrop (doc/tcl-commands.doc):

- EXACT: the event key equals the mask (case-insensitive) — pub, msg, evnt, bot
- MASK: Eggdrop wildcards against the key — pubm, msgm, join, part, ...
  (``rest`` keys are ``rest/<poller>``; a ``rest`` mask without that prefix
  is given it when bound, so ``statuspage`` and ``rest/statuspage`` agree)
- CRON: a 5-field cron expression against the minute in ``key`` — time, cron
- PARTIAL: a unique prefix of the first word — dcc (partyline commands)

Non-stackable types (pub, msg, dcc, bot) fire one binding per key: a user
script's binding shadows a built-in one, and among equals the latest wins.
Stackable types fire every match, user bindings before built-ins.

Scripts are loaded into a *collector* (``collecting(owner)``): the bindings
a module makes while it imports are gathered, and only when the import
succeeds are they swapped in for the owner's old ones in one step
(``replace_owner``).  A failed import leaves the old version bound.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Any, TypeVar, overload

from .event import Event
from .flags import FlagMask
from .masks import compile_mask

__all__ = [
    "BIND_TYPES",
    "BindError",
    "Binding",
    "BindingTable",
    "Handler",
    "MatchKind",
    "Snapshot",
    "TypeSpec",
    "current_owner",
]

Handler = Callable[[Event], Awaitable[Any] | Any]
H = TypeVar("H", bound=Handler)

BUILTIN_PREFIX = "builtin:"


class BindError(ValueError):
    """A bind call that cannot be honoured; the message is safe to show."""


class MatchKind(Enum):
    EXACT = "exact"
    MASK = "mask"
    CRON = "cron"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class TypeSpec:
    kind: MatchKind
    stackable: bool
    command: bool = False  # refusals are answered (pub, msg, dcc)


_M, _E, _C, _P = MatchKind.MASK, MatchKind.EXACT, MatchKind.CRON, MatchKind.PARTIAL

BIND_TYPES: dict[str, TypeSpec] = {
    # IRC, Eggdrop names and semantics
    "pub": TypeSpec(_E, False, True),
    "msg": TypeSpec(_E, False, True),
    "pubm": TypeSpec(_M, True),
    "msgm": TypeSpec(_M, True),
    "notc": TypeSpec(_M, True),
    "join": TypeSpec(_M, True),
    "part": TypeSpec(_M, True),
    "sign": TypeSpec(_M, True),
    "nick": TypeSpec(_M, True),
    "kick": TypeSpec(_M, True),
    "mode": TypeSpec(_M, True),
    "topc": TypeSpec(_M, True),
    "ctcp": TypeSpec(_M, True),
    "ctcr": TypeSpec(_M, True),
    "raw": TypeSpec(_M, True),
    "account": TypeSpec(_M, True),
    "time": TypeSpec(_C, True),
    "cron": TypeSpec(_C, True),
    "evnt": TypeSpec(_E, True),
    # partyline and bot links
    "dcc": TypeSpec(_P, False, True),
    "chon": TypeSpec(_M, True),
    "chof": TypeSpec(_M, True),
    "bot": TypeSpec(_E, False),
    "link": TypeSpec(_M, True),
    "disc": TypeSpec(_M, True),
    # MasterChief's own
    "event": TypeSpec(_M, True),
    "webhook": TypeSpec(_M, True),
    "rest": TypeSpec(_M, True),
    "file": TypeSpec(_M, True),
    "stream": TypeSpec(_M, True),
    "db": TypeSpec(_M, True),
    "log": TypeSpec(_M, True),
    "metric": TypeSpec(_M, True),
}

# MASK types whose key is "<path> <line>": a mask that is only a path matches
# every line ("/var/log/app.log" is read as "/var/log/app.log *").
_WORD_MEANS_ALL = frozenset({"log"})

# MASK types whose keys all start with "<type>/" (rest/statuspage): a mask
# without that prefix gets it when bound, so "statuspage", "rest/statuspage"
# and "*" are all meaningful.
_KEY_PREFIXED = frozenset({"rest"})


def _normal_mask(type_: str, mask: str) -> str:
    if type_ in _KEY_PREFIXED and not mask.lower().startswith(f"{type_}/"):
        return f"{type_}/{mask}"
    return mask


_seq = itertools.count(1)

# The owner that bind() calls are attributed to (a script, "builtin:irc", ...).
current_owner: contextvars.ContextVar[str] = contextvars.ContextVar(
    "masterchief_owner", default="runtime"
)
_collector: contextvars.ContextVar[list[Binding] | None] = contextvars.ContextVar(
    "masterchief_collector", default=None
)


@dataclass(slots=True, eq=False)
class Binding:
    """One entry of the table.  ``hits`` counts how often it fired."""

    type: str
    flags: FlagMask
    mask: str
    handler: Handler
    owner: str
    seq: int = field(default_factory=lambda: next(_seq))
    hits: int = 0
    is_async: bool = False  # decided once here, not per dispatch

    @property
    def builtin(self) -> bool:
        return self.owner.startswith(BUILTIN_PREFIX)

    @property
    def handler_name(self) -> str:
        h = self.handler
        mod = getattr(h, "__module__", None) or "?"
        name = getattr(h, "__qualname__", None) or repr(h)
        return f"{mod}.{name}"

    def same(self, type_: str, flags: str, mask: str, handler: Handler) -> bool:
        return (
            self.type == type_
            and self.mask.lower() == mask.lower()
            and self.flags == FlagMask.parse(flags)
            and self.handler == handler
        )


def _returns_awaitable(handler: Handler) -> bool:
    """Whether calling ``handler`` gives a coroutine (async def, also behind
    functools.wraps/partial or an object's ``async def __call__``)."""
    target: Any = inspect.unwrap(handler)
    if isinstance(target, functools.partial):
        target = target.func
    if not inspect.isfunction(target) and not inspect.ismethod(target):
        target = getattr(target, "__call__", target)  # noqa: B004
    return inspect.iscoroutinefunction(target)


def _priority(b: Binding) -> tuple[int, int]:
    """User bindings first, then the most recent."""
    return (1 if b.builtin else 0, -b.seq)


# The only non-ASCII characters that re.IGNORECASE lets match an ASCII letter
# (found by testing every code point).  Folding them, then lower(), gives a
# string in which an ASCII literal that the regex matched is always found.
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})
_WILDCARDS = frozenset("*?%~\\")


def _fold(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_FOLD).lower()


@lru_cache(maxsize=4096)
def _lead_token(mask: str) -> str | None:
    """The mask's first word when it is plain ASCII with no wildcards
    (``#ops`` in ``#ops *deploy*``): a key can only match if its own first
    word folds to it."""
    token = mask.partition(" ")[0]
    if not token or not token.isascii() or not _WILDCARDS.isdisjoint(token):
        return None
    return token.lower()


@lru_cache(maxsize=4096)
def _needle(mask: str) -> str:
    """A wildcard-free run every matching key contains (folded), preferring the
    longest one after the lead word; '' when there is none worth checking."""
    if not mask.isascii():
        return ""
    runs: list[str] = []
    cur: list[str] = []
    i, n = 0, len(mask)
    while i < n:
        c = mask[i]
        if c == "\\" and i + 1 < n:
            cur.append(mask[i + 1])
            i += 2
            continue
        if c in "*?%~":
            runs.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    runs.append("".join(cur))
    rest = [r for r in runs[1:] if r]
    return max(rest or runs, key=len).lower()


_Entry = tuple[str, Callable[[str], object], Binding]


def _any_needle(entries: tuple[_Entry, ...]) -> Callable[[str], object] | None:
    """One regex search for "the key contains some candidate's needle" (the
    regex engine scans once; a loop of ``in`` tests costs ~60 ns per mask);
    None when a candidate has no needle, i.e. anything may match."""
    needles = sorted({e[0] for e in entries}, key=len, reverse=True)
    if not needles or "" in needles:
        return None
    return re.compile("|".join(map(re.escape, needles))).search


class _MaskIndex:
    """MASK bindings of one type, bucketed by their literal first word.

    Candidates for a key are its bucket plus the masks without a literal first
    word, in firing order; a candidate's regex runs only when the key contains
    its needle.  Same results as scanning every mask, a fraction of the work.
    """

    __slots__ = ("_by_token", "_loose", "_needles")

    def __init__(self, bindings: tuple[Binding, ...], *, word_means_all: bool = False) -> None:
        # word_means_all (``log``): a mask without a space matches the first
        # word of the key and anything after it, as if it were "<mask> *".
        masks = [b.mask if not word_means_all or " " in b.mask else f"{b.mask} *" for b in bindings]
        entries = [
            (_needle(m), compile_mask(m).fullmatch, b) for m, b in zip(masks, bindings, strict=True)
        ]
        by_token: dict[str, list[int]] = {}
        loose: list[int] = []
        for i, m in enumerate(masks):
            token = _lead_token(m)
            (loose if token is None else by_token.setdefault(token, [])).append(i)
        self._loose: tuple[_Entry, ...] = tuple(entries[i] for i in loose)
        self._by_token: dict[str, tuple[_Entry, ...]] = {
            t: tuple(entries[i] for i in sorted(ix + loose)) for t, ix in by_token.items()
        }
        self._needles: dict[str | None, Callable[[str], object] | None] = {
            t: _any_needle(cands) for t, cands in self._by_token.items()
        }
        self._needles[None] = _any_needle(self._loose)

    def match(self, key: str) -> tuple[Binding, ...]:
        low = _fold(key)
        cands = self._by_token.get(low.partition(" ")[0], self._loose)
        return tuple(b for needle, fm, b in cands if needle in low and fm(key) is not None)

    def any_match(self, key: str) -> bool:
        """``bool(match(key))``, faster when nothing matches (the usual case
        for high-volume keys): the needles are checked in C first."""
        low = _fold(key)
        token: str | None = low.partition(" ")[0]
        if token not in self._needles:
            token = None
        search = self._needles[token]
        if search is not None and search(low) is None:
            return False
        cands = self._by_token[token] if token is not None else self._loose
        return any(needle in low and fm(key) is not None for needle, fm, _ in cands)


class Snapshot:
    """An immutable view of the table, built for fast matching."""

    __slots__ = ("_all", "_exact", "_masks", "_scan", "_types")

    def __init__(self, bindings: tuple[Binding, ...]) -> None:
        self._all = bindings
        self._types = frozenset(b.type for b in bindings)
        exact: dict[tuple[str, str], list[Binding]] = {}
        scan: dict[str, list[Binding]] = {}
        for b in sorted(bindings, key=_priority):
            if BIND_TYPES[b.type].kind is MatchKind.EXACT:
                exact.setdefault((b.type, b.mask.lower()), []).append(b)
            else:
                scan.setdefault(b.type, []).append(b)
        self._exact = {k: tuple(v) for k, v in exact.items()}
        self._scan = {k: tuple(v) for k, v in scan.items()}
        self._masks = {
            k: _MaskIndex(v, word_means_all=k in _WORD_MEANS_ALL)
            for k, v in self._scan.items()
            if BIND_TYPES[k].kind is MatchKind.MASK
        }

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Binding]:
        return iter(self._all)

    def has_type(self, type_: str) -> bool:
        return type_ in self._types

    def mask_matches(self, type_: str, key: str) -> bool:
        """Whether a MASK binding of ``type_`` matches ``key``, flags not checked
        (a cheap pre-filter for high-volume sources such as tailed logs)."""
        index = self._masks.get(type_)
        return index is not None and index.any_match(key)

    def wants(self, type_: str, key: str) -> bool:
        """Whether an Event ``(type_, key)`` could fire a binding, flags not
        checked: exact for EXACT and MASK types, "any binding of the type" for
        the others (a cron mask needs the minute, a partial one the word)."""
        spec = BIND_TYPES.get(type_)
        if spec is None:
            return False
        if spec.kind is MatchKind.MASK:
            return self.mask_matches(type_, key)
        if spec.kind is MatchKind.EXACT:
            return (type_, key.lower()) in self._exact
        return self.has_type(type_)

    def match(self, ev: Event) -> tuple[Binding, ...]:
        """Bindings that fire for ``ev``, in firing order."""
        spec = BIND_TYPES.get(ev.type)
        if spec is None:
            return ()
        if spec.kind is MatchKind.EXACT:
            found = self._exact.get((ev.type, ev.key.lower()), ())
        elif spec.kind is MatchKind.MASK:
            index = self._masks.get(ev.type)
            found = index.match(ev.key) if index is not None else ()
        elif spec.kind is MatchKind.CRON:
            when = ev.payload if isinstance(ev.payload, datetime) else ev.time
            found = tuple(b for b in self._scan.get(ev.type, ()) if _cron_ok(b, when))
        else:
            found = self._partial(ev)
        if not spec.stackable and found:
            return found[:1]
        return found

    def _partial(self, ev: Event) -> tuple[Binding, ...]:
        word = ev.key.lower()
        cands = self._scan.get(ev.type, ())
        exact = tuple(b for b in cands if b.mask.lower() == word)
        if exact:
            return exact
        prefixed = tuple(b for b in cands if b.mask.lower().startswith(word)) if word else ()
        if len({b.mask.lower() for b in prefixed}) == 1:
            return prefixed
        return ()

    def ambiguous(self, type_: str, word: str) -> list[str]:
        """For PARTIAL types: the masks ``word`` is a prefix of (when several)."""
        word = word.lower()
        return sorted(
            {b.mask for b in self._scan.get(type_, ()) if b.mask.lower().startswith(word)}
        )


def _cron_ok(b: Binding, when: datetime) -> bool:
    from croniter import croniter  # with dateutil ~4 MB: only once a cron binding exists

    return bool(croniter.match(b.mask, when))


def _valid_cron(mask: str) -> bool:
    from croniter import croniter

    return len(mask.split()) == 5 and bool(croniter.is_valid(mask))


class BindingTable:
    """The table every input is matched against."""

    def __init__(self) -> None:
        self._bindings: tuple[Binding, ...] = ()
        self.snapshot = Snapshot(())

    # -- writing -------------------------------------------------------------

    def _publish(self, bindings: tuple[Binding, ...]) -> None:
        self._bindings = bindings
        self.snapshot = Snapshot(bindings)

    @staticmethod
    def make(type_: str, flags: str, mask: str, handler: Handler, owner: str) -> Binding:
        """Validate and build a Binding without adding it."""
        if type_ not in BIND_TYPES:
            raise BindError(f"unknown bind type {type_!r}; known: {', '.join(sorted(BIND_TYPES))}")
        if not callable(handler):
            raise BindError(f"handler for {type_} {mask!r} is not callable")
        fm = FlagMask.parse(flags)
        if not isinstance(mask, str) or not mask:
            raise BindError(f"empty mask for bind type {type_!r}")
        if BIND_TYPES[type_].kind is MatchKind.CRON and not _valid_cron(mask):
            raise BindError(f"{type_} bindings need a 5-field cron expression, not {mask!r}")
        mask = _normal_mask(type_, mask)
        return Binding(type_, fm, mask, handler, owner, is_async=_returns_awaitable(handler))

    @overload
    def bind(
        self, type_: str, flags: str, mask: str, handler: None = None, *, owner: str | None = None
    ) -> Callable[[H], H]: ...
    @overload
    def bind(
        self, type_: str, flags: str, mask: str, handler: H, *, owner: str | None = None
    ) -> H: ...
    def bind(
        self,
        type_: str,
        flags: str,
        mask: str,
        handler: Handler | None = None,
        *,
        owner: str | None = None,
    ) -> Any:
        """Bind ``handler``; returns the handler (or, without one, a decorator
        that binds and returns the function it decorates)."""
        if handler is None:

            def deco(fn: H) -> H:
                return self.bind(type_, flags, mask, fn, owner=owner)

            return deco
        b = self.make(type_, flags, mask, handler, owner or current_owner.get())
        collected = _collector.get()
        if collected is not None:
            collected.append(b)
        else:
            self._publish((*self._bindings, b))
        return handler

    def unbind(self, type_: str, flags: str, mask: str, handler: Handler) -> bool:
        """Remove a binding made with exactly these arguments."""
        mask = _normal_mask(type_, mask)
        collected = _collector.get()
        if collected is not None:
            before = len(collected)
            collected[:] = [b for b in collected if not b.same(type_, flags, mask, handler)]
            if len(collected) != before:
                return True
        keep = tuple(b for b in self._bindings if not b.same(type_, flags, mask, handler))
        if len(keep) == len(self._bindings):
            return False
        self._publish(keep)
        return True

    def unbind_owner(self, owner: str) -> int:
        keep = tuple(b for b in self._bindings if b.owner != owner)
        removed = len(self._bindings) - len(keep)
        if removed:
            self._publish(keep)
        return removed

    def replace_owner(self, owner: str, bindings: list[Binding]) -> None:
        """Atomically swap all of ``owner``'s bindings for ``bindings``."""
        for b in bindings:
            b.owner = owner
        keep = tuple(b for b in self._bindings if b.owner != owner)
        self._publish((*keep, *bindings))

    def install(self, owner: str, bind: Callable[[], object]) -> int:
        """Replace all of ``owner``'s bindings with those ``bind()`` makes, in
        one publish: a dispatch (or a lane thread) sees the old set or the
        new one, never half of each.  How many were bound."""
        with self.collecting(owner) as bucket:
            bind()
        self.replace_owner(owner, bucket)
        return len(bucket)

    @contextmanager
    def collecting(self, owner: str) -> Iterator[list[Binding]]:
        """Gather the bindings made inside the block instead of adding them."""
        bucket: list[Binding] = []
        tok_c = _collector.set(bucket)
        tok_o = current_owner.set(owner)
        try:
            yield bucket
        finally:
            _collector.reset(tok_c)
            current_owner.reset(tok_o)

    # -- reading -------------------------------------------------------------

    def binds(self, type_: str | None = None) -> list[Binding]:
        """Bindings (optionally of one type), in firing order per type."""
        out = [b for b in self._bindings if type_ is None or b.type == type_]
        return sorted(out, key=lambda b: (b.type, *_priority(b)))

    def owners(self) -> set[str]:
        return {b.owner for b in self._bindings}

    def __len__(self) -> int:
        return len(self._bindings)
