"""Message text to IRC wire lines: sanitising and splitting, pure functions.

How this works.  A message text is one message, whatever is in it:
``sanitize`` turns CR, LF and CRLF into a space and drops NUL, so a
handler's ``"x\\r\\nQUIT :bye"`` is the one harmless line ``x QUIT :bye``.
``split_message`` cuts text that is too long for one relayed line
(``:<nick>!<user>@<host> PRIVMSG <target> :<text>\\r\\n`` within 512 bytes,
the prefix counted) on UTF-8 character boundaries, at a space when there is
one, and not inside a combining sequence or an emoji cluster.
``check_target`` refuses a target that would change the line's meaning.
The pacer (``pacer.py``) calls these for every message it queues.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["FRAMING", "check_target", "sanitize", "split_message", "text_budget"]

# ":<prefix> <command> <target> :<text>\r\n" has 7 bytes besides its parts:
# ":", two spaces, " :" and CRLF.
FRAMING: Final = 7

# The smallest text budget that can always hold one whole character.
_MIN_TEXT_BYTES: Final = 4


def sanitize(text: str) -> str:
    """Make *text* safe as (part of) one IRC line.

    CR and LF become a space (CRLF becomes one space) and NUL is removed, so
    nothing in *text* can end the line and start a new command.
    """
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").replace("\0", "")


def text_budget(prefix_len: int, command: str, target: str, max_bytes: int = 512) -> int:
    """Bytes of text that fit one relayed *command* line to *target*."""
    return (
        max_bytes
        - prefix_len
        - len(command.encode("utf-8"))
        - len(target.encode("utf-8"))
        - FRAMING
    )


def split_message(
    prefix_len: int, command: str, target: str, text: str, max_bytes: int = 512
) -> list[str]:
    """Split the message *text* into chunks that each fit one relayed IRC line.

    *prefix_len* is the byte length of ``nick!user@host`` as recipients see
    it. Each chunk satisfies
    ``len(f":{prefix} {command} {target} :{chunk}\\r\\n".encode()) <= max_bytes``.

    *text* is sanitised first (CR, LF and CRLF become one space, NUL is
    dropped), so line breaks never start a new line: only length splits it.
    Text that is empty or blank after that gives no chunk (IRC refuses an
    empty message). Long text is cut at the last space that fits (that one
    space is dropped), else at the last character that fits, never inside a
    UTF-8 sequence and, when possible, not before a combining mark or inside
    an emoji sequence.

    Raises ``ValueError`` when the prefix, command and target leave too little
    room for any text.
    """
    budget = text_budget(prefix_len, command, target, max_bytes)
    if budget < _MIN_TEXT_BYTES:
        raise ValueError(
            f"no room for text in a {max_bytes}-byte line: prefix {prefix_len} bytes, "
            f"command {command!r}, target of {len(target.encode('utf-8'))} bytes"
        )
    clean = sanitize(text)
    return _split_line(clean, budget) if clean.strip() else []


def _split_line(line: str, budget: int) -> list[str]:
    chunks: list[str] = []
    while True:
        data = line.encode("utf-8")
        if len(data) <= budget:
            if line:
                chunks.append(line)
            return chunks
        # Back off to a character boundary: data[cut] starts the next character.
        cut = budget
        while cut > 0 and (data[cut] & 0xC0) == 0x80:
            cut -= 1
        n = len(data[:cut].decode("utf-8"))  # characters that fit
        space = n if line[n] == " " else line.rfind(" ", 0, n)
        if space > 0:
            chunks.append(line[:space])
            line = line[space + 1 :]
            continue
        k = n
        while k > 0 and _binds(line, k):
            k -= 1
        if k == 0:  # one cluster longer than a line: cut it anyway
            k = n
        chunks.append(line[:k])
        line = line[k:]


def _binds(line: str, k: int) -> bool:
    """Would cutting between ``line[k-1]`` and ``line[k]`` split a character cluster?"""
    after = line[k]
    before = line[k - 1]
    cp = ord(after)
    if _is_regional(before) and _is_regional(after):
        # Flags are pairs of regional indicators, paired from the start of the run.
        run = 0
        while run < k and _is_regional(line[k - 1 - run]):
            run += 1
        return run % 2 == 1
    return (
        unicodedata.category(after) in ("Mn", "Mc", "Me")
        or after == "\u200d"  # zero width joiner
        or before == "\u200d"
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences (flags of regions)
    )


def _is_regional(c: str) -> bool:
    return 0x1F1E6 <= ord(c) <= 0x1F1FF


def check_target(target: str) -> None:
    if not target:
        raise ValueError("message target is empty")
    if target.startswith(":"):
        raise ValueError(f"message target {target!r} starts with ':'")
    bad = [c for c in target if c <= " " or c == "\x7f"]
    if bad:
        raise ValueError(
            f"message target {target!r} contains space or control character {bad[0]!r}"
        )
