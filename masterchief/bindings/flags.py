"""Eggdrop flag notation: masks that bindings require, flags that users hold.

A mask is ``global|channel`` (either side suffices), ``global&channel``
(both needed) or just ``global``.  ``-`` or ``*`` on a side means that side
asks for nothing; several letters on a side mean any one of them.  ``-|-``
lets everyone through except users with global +d or +k (Eggdrop refuses
those on command binds).  Granting a flag implies more: n gives m, m gives
o and t, t gives p, o gives l (halfop), l gives v.

Pure functions, no I/O: see tests/bindings/test_flags.py for the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "FLAG_LETTERS",
    "FlagError",
    "FlagMask",
    "apply_changes",
    "implied",
    "normalize_flags",
]

FLAG_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

_IMPLIES: dict[str, str] = {"n": "m", "m": "ot", "t": "p", "o": "l", "l": "v"}


class FlagError(ValueError):
    """A flag string that cannot be parsed; the message is safe to show."""


def implied(flags: Iterable[str]) -> frozenset[str]:
    """The flags a user effectively holds, implications included."""
    out = set(flags)
    todo = list(out)
    while todo:
        for extra in _IMPLIES.get(todo.pop(), ""):
            if extra not in out:
                out.add(extra)
                todo.append(extra)
    return frozenset(out)


def _side(text: str, whole: str) -> frozenset[str]:
    if text in ("", "-", "*"):
        return frozenset()
    bad = [c for c in text if c not in FLAG_LETTERS]
    if bad:
        raise FlagError(f"invalid flag {bad[0]!r} in {whole!r}")
    return frozenset(text)


@dataclass(frozen=True, slots=True)
class FlagMask:
    """What a binding requires.  ``FlagMask.parse("o|o")``."""

    glob: frozenset[str]
    chan: frozenset[str]
    both: bool = False  # "&": global and channel side must both match
    text: str = "-|-"

    @classmethod
    def parse(cls, text: str) -> FlagMask:
        text = text.strip()
        if "&" in text:
            g, _, c = text.partition("&")
            both = True
        else:
            g, _, c = text.partition("|")
            both = False
        if "|" in c or "&" in c:
            raise FlagError(f"invalid flag mask {text!r}")
        return cls(_side(g, text), _side(c, text), both, text or "-|-")

    @property
    def anyone(self) -> bool:
        return not self.glob and not self.chan

    def allows(self, glob: Iterable[str], chan: Iterable[str] = ()) -> bool:
        """Whether a user holding ``glob`` globally and ``chan`` on the
        channel in question satisfies this mask."""
        have_g = implied(glob)
        have_c = implied(chan)
        if self.anyone:
            # Eggdrop: global +d/+k users cannot use -|- commands unless +p.
            if "p" in have_g:
                return True
            return not ({"d", "k"} & (have_g | have_c))
        if self.both:
            ok_g = not self.glob or bool(self.glob & have_g)
            ok_c = not self.chan or bool(self.chan & have_c)
            return ok_g and ok_c
        return bool(self.glob & have_g) or bool(self.chan & have_c)

    def describe(self, channel: str | None) -> str:
        """Human wording of the requirement: ``+o on #ops``, ``global +n``."""
        parts: list[str] = []
        if self.glob:
            parts.append("global +" + "/".join(sorted(self.glob)))
        if self.chan:
            where = f" on {channel}" if channel else " on the channel"
            parts.append("+" + "/".join(sorted(self.chan)) + where)
        if not parts:
            return "a user record without +d/+k"
        return (" and " if self.both else " or ").join(parts)


def normalize_flags(text: str) -> str:
    """Validate a plain flag string (``"mo"``) and return it sorted, deduplicated."""
    if text in ("", "-", "*"):
        return ""
    for c in text:
        if c not in FLAG_LETTERS:
            raise FlagError(f"invalid flag {c!r} in {text!r}")
    return "".join(sorted(set(text)))


def apply_changes(current: str, changes: str) -> str:
    """Apply an Eggdrop chattr change string (``+mo-v``) to ``current``.

    Letters before any sign are added.  Returns the new sorted flag string.
    """
    have = set(normalize_flags(current))
    adding = True
    for c in changes:
        if c == "+":
            adding = True
        elif c == "-":
            adding = False
        elif c in FLAG_LETTERS:
            if adding:
                have.add(c)
            else:
                have.discard(c)
        else:
            raise FlagError(f"invalid flag {c!r} in {changes!r}")
    return "".join(sorted(have))
