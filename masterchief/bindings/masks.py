"""Eggdrop mask matching and IRC case mapping.

Wildcards: ``*`` any run of characters, ``?`` exactly one, ``%`` a run of
non-space characters (zero or more, so it stays within one word), ``~`` one
or more spaces; ``\\`` quotes the next character.  Matching is
case-insensitive and anchored at both ends.  Masks compile once to a regular
expression and are cached.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["compile_mask", "irc_lower", "mask_match"]

_RFC1459 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")
_STRICT = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\", "abcdefghijklmnopqrstuvwxyz{}|")
_ASCII = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_TABLES = {"rfc1459": _RFC1459, "strict-rfc1459": _STRICT, "ascii": _ASCII}


def irc_lower(text: str, casemapping: str = "rfc1459") -> str:
    """Lower-case ``text`` the way the server's CASEMAPPING says."""
    table = _TABLES.get(casemapping.lower())
    if table is None:  # unknown (e.g. rfc7613): fall back to Unicode casefold
        return text.casefold()
    return text.translate(table)


@lru_cache(maxsize=4096)
def compile_mask(mask: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    n = len(mask)
    while i < n:
        c = mask[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(mask[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "%":
            out.append("[^ ]*")
        elif c == "~":
            out.append(" +")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def mask_match(mask: str, text: str) -> bool:
    """Whether ``text`` matches the Eggdrop wildcard ``mask`` (case-insensitive)."""
    return compile_mask(mask).fullmatch(text) is not None
