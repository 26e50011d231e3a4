"""One IRC line as a value: ``[@tags] [:source] COMMAND params... [:trailing]``.

How this works.  ``parse(line)`` is a pure function over one decoded line
(no CRLF): IRCv3 message tags (values unescaped: ``\\:`` ``\\s`` ``\\\\``
``\\r`` ``\\n``; a tag without a value is left out, as before), the source,
the command (upper-cased; numerics stay three-digit strings) and the
params, the trailing one included.  It is on the hot path (every line the
server sends, our own echoes too), so it uses ``str.partition``/``split``
only and unescapes a tag value only when it holds a backslash.  A line with
no command raises ``ValueError``: the client skips it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Message", "parse", "split_source"]

_NO_TAGS: Mapping[str, str] = MappingProxyType({})
_ESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed server line."""

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _NO_TAGS)
    raw: str = ""


def parse(line: str) -> Message:
    """Parse one line (without CRLF) into a ``Message``; ``ValueError`` if it has no command."""
    rest = line
    tags = _NO_TAGS
    if rest.startswith("@"):
        head, _, rest = rest.partition(" ")
        tags = _tags(head[1:])
        rest = rest.lstrip(" ")
    source = None
    if rest.startswith(":"):
        source, _, rest = rest.partition(" ")
        source = source[1:] or None
    head, colon, trailing = rest.partition(" :")
    words = head.split()
    if not words:
        raise ValueError(f"IRC line without a command: {line[:80]!r}")
    if colon:
        words.append(trailing)
    return Message(words[0].upper(), tuple(words[1:]), source, tags, line)


def _tags(text: str) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for item in text.split(";"):
        key, eq, value = item.partition("=")
        if not eq or not value or not key:
            continue  # a tag without a value says only "present": not kept
        out[key] = _unescape(value) if "\\" in value else value
    return MappingProxyType(out)  # read-only already: an Event keeps it without a copy


def _unescape(value: str) -> str:
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "\\":
            i += 1
            if i < n:  # a lone trailing backslash is dropped
                nxt = value[i]
                out.append(_ESCAPES.get(nxt, nxt))
        else:
            out.append(c)
        i += 1
    return "".join(out)


def split_source(source: str | None) -> tuple[str | None, str | None]:
    """``nick!user@host`` -> (nick, "user@host"); a server name -> (None, None)."""
    if not source or "!" not in source:
        return None, None
    nick, _, uhost = source.partition("!")
    return nick, uhost
