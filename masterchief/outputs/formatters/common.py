"""What every formatter shares: the ``Announcement`` value, the sanitising
rule for text taken from a payload, and field access that never raises.

The sanitising rule
-------------------
A payload is attacker-shaped text even when its signature is valid (a commit
message, a PR title, an alert annotation).  ``clean()`` makes any of it safe
and readable inside one IRC line:

- line breaks of every kind (CR, LF, CRLF, VT, FF, NEL, U+2028/9), tab and
  NUL become one space, so nothing can end the line and start a command;
- IRC formatting is neutralised: ``\\x03`` colour with its ``fg[,bg]``
  digits, ``\\x04`` hex colour with its ``RRGGBB[,RRGGBB]``, and ``\\x02``
  ``\\x0f`` ``\\x11`` ``\\x16`` ``\\x1d`` ``\\x1e`` ``\\x1f`` are removed;
- ``\\x01`` (CTCP) and every other C0/C1 control and DEL are removed, as are
  the bidi overrides that can make a line read differently than it is;
- lone surrogates (valid in JSON, not in UTF-8) become U+FFFD;
- runs of spaces collapse to one and the ends are trimmed;
- a field longer than its limit is cut (at a word boundary when one is
  close) and ends with an ellipsis.

Field access (``dig``, ``text``, ``integer``, ``url`` ...) takes any JSON
value and a path and returns a safe, typed value or an empty one: a
missing key, a ``null``, a list where an object was expected or a number
where a string was expected never raises.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "Announcement",
    "EventFormatter",
    "by_event",
    "clean",
    "compact_json",
    "dig",
    "duration",
    "first_line",
    "integer",
    "items",
    "join",
    "listing",
    "mapping",
    "number",
    "plural",
    "quoted",
    "text",
    "truncate",
    "unannounced",
    "url",
    "word",
]

# Field limits (characters, after cleaning).
NAME: Final = 40  # logins, job names, label values
REF: Final = 60  # branches, tags, repository names
TITLE: Final = 120  # commit/PR/issue/incident titles
SUMMARY: Final = 160  # alert summaries
URL_MAX: Final = 300  # longer URLs are dropped: a cut link is a broken link

ELLIPSIS: Final = "…"

log = logging.getLogger("masterchief.announce")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Announcement:
    """One line for the channels of a provider, and how the outbox treats it.

    ``kind``/``fold_key``/``meta`` go to ``outbox.announce`` unchanged
    (``kind="alert"`` with ``fold_key=<alertname>`` lets it fold storms).
    ``once`` names what the line reports (a Jenkins build); the announcer
    posts only the first line with a given ``once`` it sees recently.
    """

    text: str
    kind: str = "text"
    fold_key: str | None = None
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    once: str | None = None


# --- the sanitising rule --------------------------------------------------------

_FORMATTING = re.compile(
    r"\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?"  # colour, with fg[,bg]
    r"|\x04(?:[0-9A-Fa-f]{6}(?:,[0-9A-Fa-f]{6})?)?"  # hex colour
)


def _translation() -> dict[int, str | None]:
    removed = [
        *range(0x20),  # C0 controls: \x01 and the formatting codes among them
        0x7F,
        *range(0x80, 0xA0),  # C1 controls
        0x061C,  # bidi: Arabic letter mark, LRM/RLM, embeddings, overrides, isolates
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
    spaced = [0x00, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029]  # breaks, tab, NUL
    table: dict[int, str | None] = dict.fromkeys(removed)
    table.update(dict.fromkeys(spaced, " "))
    # lone surrogates (JSON allows "\ud800") cannot be encoded as UTF-8
    table.update(dict.fromkeys(range(0xD800, 0xE000), "\ufffd"))
    return table


_TABLE = _translation()
_SPACES = re.compile(r" {2,}")


def truncate(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` characters, ending with an ellipsis
    when cut; at a space when one is within the last fifth."""
    if len(value) <= limit:
        return value
    if limit <= 1:
        return ELLIPSIS[:limit]
    cut = limit - 1
    space = value.rfind(" ", 0, cut + 1)
    if space > cut - max(limit // 5, 1) and space > 0:
        cut = space
    while cut > 1 and unicodedata.combining(value[cut]):
        cut -= 1  # don't strip a combining mark off its base character
    return value[:cut].rstrip() + ELLIPSIS


def clean(value: str, limit: int | None = None) -> str:
    """``value`` made safe for (part of) one IRC line; see the module docs."""
    value = _FORMATTING.sub("", value).translate(_TABLE)
    value = _SPACES.sub(" ", value).strip()
    return truncate(value, limit) if limit is not None else value


# --- field access ----------------------------------------------------------------


def dig(obj: object, *path: str | int) -> object:
    """The value at ``path`` (keys of objects, indexes of lists), or None."""
    for part in path:
        if isinstance(part, str):
            if not isinstance(obj, Mapping):
                return None
            obj = obj.get(part)
        else:
            if not isinstance(obj, list) or not -len(obj) <= part < len(obj):
                return None
            obj = obj[part]
    return obj


def _scalar(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else str(value)
    return None


def word(obj: object, *path: str | int) -> str:
    """The string at ``path`` lower-cased and stripped, for comparing against
    known values (actions, statuses); '' when it is not a short string."""
    value = dig(obj, *path)
    if isinstance(value, str) and len(value) <= 64:
        return value.strip().lower()
    return ""


def text(obj: object, *path: str | int, limit: int = NAME) -> str:
    """The cleaned text at ``path`` ('' when missing, empty or not a scalar)."""
    raw = _scalar(dig(obj, *path))
    return clean(raw, limit) if raw else ""


def first_line(obj: object, *path: str | int, limit: int = TITLE) -> str:
    """The first non-blank line of the text at ``path``, cleaned (a commit title)."""
    raw = _scalar(dig(obj, *path))
    if not raw:
        return ""
    for line in raw.splitlines():
        title = clean(line, limit)
        if title:
            return title
    return ""


_DECIMAL = re.compile(r"[+-]?[0-9]{1,18}")
_INT_MAX = 10**18  # larger "numbers" are not build or issue numbers


def integer(obj: object, *path: str | int) -> int | None:
    """The integer at ``path``: a JSON integer, an integral float or a short
    decimal string, below 10**18 in size; None otherwise."""
    value = dig(obj, *path)
    result: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        result = int(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        result = int(value.strip())
    return result if result is not None and abs(result) < _INT_MAX else None


def number(obj: object, *path: str | int) -> float | None:
    """A finite JSON number (or decimal string) at ``path``; None otherwise."""
    value = dig(obj, *path)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


_URL = re.compile(r"https?://[!-~]+", re.ASCII)


def url(obj: object, *path: str | int) -> str:
    """The http(s) URL at ``path``, or '' when missing, malformed, holding
    spaces or controls, or longer than ``URL_MAX`` (never cut: a cut link
    misleads)."""
    value = dig(obj, *path)
    if isinstance(value, str) and len(value) <= URL_MAX and _URL.fullmatch(value):
        return value
    return ""


def items(obj: object, *path: str | int) -> list[Any]:
    """The list at ``path``, or an empty list."""
    value = dig(obj, *path)
    return value if isinstance(value, list) else []


def mapping(obj: object, *path: str | int) -> Mapping[str, Any]:
    """The object at ``path``, or an empty one."""
    value = dig(obj, *path)
    return value if isinstance(value, Mapping) else _EMPTY


# --- phrasing ----------------------------------------------------------------------


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def quoted(title: str) -> str:
    return f'"{title}"' if title else ""


_DURATION_MAX = 10 * 365 * 86400.0  # longer is a unit mistake, not a duration


def duration(seconds: float | None) -> str:
    """``45s``, ``2m05s``, ``1h02m``, ``3d04h``; '' for None, negative,
    non-finite or absurd (over ten years) values."""
    if seconds is None or not 0 <= seconds < _DURATION_MAX:
        return ""
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def join(*parts: str) -> str:
    """The non-empty parts joined by one space."""
    return " ".join(p for p in parts if p)


def listing(names: Sequence[str], shown: int = 3) -> str:
    """``a, b, c and 2 more``."""
    if len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f" and {len(names) - shown} more"


def compact_json(value: object, limit: int) -> str:
    """``value`` as one line of compact JSON, cleaned and cut to ``limit``."""
    try:
        dumped = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return "(unprintable)"
    return clean(dumped, limit)


def unannounced(key: str, why: str) -> list[Announcement]:
    """Log why an event of a formatted kind gives no line; return no lines."""
    log.warning("%s: %s; nothing announced", key, why)
    return []


EventFormatter = Callable[[Mapping[str, Any]], list[Announcement]]


def by_event(
    provider: str, table: Mapping[str, EventFormatter], event: str, payload: object
) -> list[Announcement]:
    """Run the formatter ``table`` has for ``event``: nothing for events not in
    it, a logged warning and nothing for a payload that is not a JSON object."""
    handler = table.get(event.lower())
    if handler is None:
        return []
    if not isinstance(payload, Mapping):
        return unannounced(f"{provider}/{event}", "payload is not a JSON object")
    return handler(payload)
