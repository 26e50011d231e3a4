"""Hostmasks: completing them, matching them Eggdrop's way, and telling a
weak one (that anyone can match) from one that pins someone down.

Pure functions over strings, no I/O.  ``is_weak_hostmask`` is the one
definition of "weak" the user table, the CLI and ``!adduser`` share.
"""

from __future__ import annotations

from functools import lru_cache

from masterchief.bindings.masks import irc_lower
from masterchief.errors import UserError
from masterchief.text import has_hidden

__all__ = [
    "WeakHostmask",
    "check_hostmask_strength",
    "host_pattern",
    "is_weak_hostmask",
    "nick_pattern",
    "normalize_hostmask",
    "specificity",
]

WILDCARDS = frozenset("*?")  # hostmask wildcards (Eggdrop wild_match)


def normalize_hostmask(mask: str) -> str:
    """Complete a hostmask to ``nick!user@host`` form, or raise ``UserError``.

    ``alice`` -> ``alice!*@*``; ``*@host`` -> ``*!*@host``;
    ``host.example`` -> ``*!*@host.example``; ``nick!user`` -> ``nick!user@*``.
    """
    mask = mask.strip()
    if not mask or len(mask) > 255 or any(c.isspace() or c in "\x00," for c in mask):
        raise UserError(f"invalid hostmask {mask[:70]!r}")
    if has_hidden(mask):
        raise UserError(f"invalid hostmask {mask[:70]!r}: control or invisible characters")
    if "!" not in mask:
        if "@" in mask:
            mask = "*!" + mask
        elif "." in mask or ":" in mask:
            mask = "*!*@" + mask
        else:
            mask += "!*@*"
    elif "@" not in mask.partition("!")[2]:
        mask += "@*"
    nick, _, rest = mask.partition("!")
    user, _, host = rest.partition("@")
    if not nick or not user or not host:
        raise UserError(f"invalid hostmask {mask[:70]!r}")
    return mask


_LABEL_SEPARATORS = frozenset(".:/")  # DNS names, IPv4/IPv6, cloaks (user/carol)


def _host_labels(host: str) -> list[tuple[str, bool]]:
    """``host`` split at ``. : /`` into (label, has a wildcard) -- ``\\x`` is literal."""
    labels: list[tuple[str, bool]] = []
    text, wild = "", False
    i = 0
    while i < len(host):
        c = host[i]
        if c == "\\" and i + 1 < len(host):
            text += host[i + 1]
            i += 2
            continue
        if c in _LABEL_SEPARATORS:
            labels.append((text, wild))
            text, wild = "", False
        elif c in WILDCARDS:
            text, wild = text + c, True
        else:
            text += c
        i += 1
    labels.append((text, wild))
    return labels


def is_weak_hostmask(mask: str) -> bool:
    """Whether a ``nick!user@host`` mask can be matched by anyone who wants to.

    The nick and the user (ident) are the client's to choose -- an ident that
    identd answered comes from the user's own machine -- so only the host,
    which the server sets, pins someone down.  A mask is weak when its host
    part has a wildcard and fewer than two whole labels (parts between
    ``.``, ``:`` or ``/``) without one: ``*``, ``*.*``, ``*.com``, ``10.*``,
    ``user/*``, ``*home*``.  ``host.example``, ``*.corp.example``,
    ``192.168.*``, ``2001:db8:*`` and ``user/carol`` are not weak.
    """
    host = mask.rpartition("@")[2]
    labels = _host_labels(host)
    if not any(wild for _, wild in labels):
        return not any(ch.isalnum() for text, _ in labels for ch in text)
    whole = sum(1 for text, wild in labels if text and not wild)
    return whole < 2


class WeakHostmask(UserError):
    """A hostmask refused because it is weak (``is_weak_hostmask``)."""


def check_hostmask_strength(mask: str) -> str:
    """``mask`` (normalized) if it is not weak, else ``WeakHostmask`` saying
    why (``UserError`` if it is no hostmask at all)."""
    mask = normalize_hostmask(mask)
    if is_weak_hostmask(mask):
        raise WeakHostmask(
            f"hostmask {mask} is weak: its host part pins nobody, and nick and ident are "
            "anyone's to choose; give the host (*!ident@host.example) or an account"
        )
    return mask


def host_pattern(mask: str, casemapping: str | None = None) -> str:
    """A hostmask as a ``mask_match`` pattern.

    Hostmasks use Eggdrop's plain ``wild_match``: only ``*`` and ``?`` are
    wildcards, so ``~`` (ident prefix) and ``%`` are quoted here.  With a
    ``casemapping`` (the nick part) literal characters are lower-cased under it.
    """
    out: list[str] = []
    i = 0
    while i < len(mask):
        c = mask[i]
        if c == "\\" and i + 1 < len(mask):
            c = mask[i + 1]
            i += 1
        elif c in WILDCARDS:
            out.append(c)
            i += 1
            continue
        out.append("\\" + (irc_lower(c, casemapping) if casemapping else c))
        i += 1
    return "".join(out)


@lru_cache(maxsize=4096)
def nick_pattern(mask: str, casemapping: str) -> str:
    return host_pattern(mask, casemapping)


def specificity(mask: str) -> int:
    return sum(1 for c in mask if c not in WILDCARDS)
