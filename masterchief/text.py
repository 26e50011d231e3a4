"""Text people type that we check, store or repeat.

One definition of "hidden" characters for every place that refuses or cleans
them (deploy parameters, manifests, channel names, hostmasks, deny reasons):
control characters (IRC colours ``\\x03``, CTCP's ``\\x01``), format
characters (zero-width space, bidi overrides, BOM) and the Unicode line and
paragraph separators.  A name holding them is stored apart from the one it
looks like and echoes as something else.
"""

from __future__ import annotations

import unicodedata

__all__ = ["HIDDEN_CATEGORIES", "has_hidden", "without_hidden"]

HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def has_hidden(text: str) -> bool:
    """Whether ``text`` holds any hidden character."""
    return any(unicodedata.category(c) in HIDDEN_CATEGORIES for c in text)


def without_hidden(text: str) -> str:
    """``text`` with format characters dropped and control characters and
    separators turned into spaces, stripped: safe to store and repeat."""
    out = []
    for c in text:
        category = unicodedata.category(c)
        if category == "Cf":
            continue
        out.append(" " if category in HIDDEN_CATEGORIES else c)
    return "".join(out).strip()
