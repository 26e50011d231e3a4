"""Lines and offsets of a followed file, without I/O: the splitter that
turns bytes into lines with their offsets, a file's identity, and which
offsets may be committed once their lines were handled.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Commits", "Identity", "LineSplitter"]


class LineSplitter:
    """Bytes in, complete lines out (pure).

    ``feed(data)`` returns ``(line, truncated, start, end)`` for each line
    completed by ``data``: ``line`` without its newline (``\\r\\n`` too), cut
    to ``max_bytes``; ``start`` is the file offset of its first byte, ``end``
    the offset just after its newline.
    """

    __slots__ = ("_buf", "_cut", "_skipped", "max_bytes", "offset")

    def __init__(self, max_bytes: int, offset: int = 0) -> None:
        self.max_bytes = max_bytes
        self.offset = offset  # file offset of the next byte fed
        self._buf = bytearray()
        self._cut = False
        self._skipped = 0

    @property
    def line_start(self) -> int:
        """Offset where the pending (incomplete) line starts."""
        return self.offset - self._pending

    @property
    def _pending(self) -> int:
        return self._skipped + len(self._buf)

    def reset(self, offset: int) -> None:
        self.offset = offset
        self._buf.clear()
        self._cut = False
        self._skipped = 0

    def feed(self, data: bytes) -> list[tuple[bytes, bool, int, int]]:
        out: list[tuple[bytes, bool, int, int]] = []
        line_start = self.line_start
        base = self.offset
        start = 0
        limit = self.max_bytes
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            piece = data[start:nl]
            if self._buf or self._cut:
                room = limit - len(self._buf)
                cut = self._cut or len(piece) > room
                line = bytes(self._buf) + piece[: max(room, 0)]
                self._buf.clear()
                self._cut = False
                self._skipped = 0
            else:
                cut = len(piece) > limit
                line = piece[:limit] if cut else piece
            if line.endswith(b"\r"):
                line = line[:-1]
            out.append((line, cut, line_start, base + nl + 1))
            start = nl + 1
            line_start = base + start
        rest = data[start:]
        if rest:
            room = self.max_bytes - len(self._buf)
            if len(rest) > room:
                self._cut = True
                self._skipped += len(rest) - max(room, 0)
            self._buf += rest[: max(room, 0)]
        self.offset = base + len(data)
        return out


@dataclass(frozen=True, slots=True)
class Identity:
    dev: int
    ino: int
    fingerprint: bytes  # the first bytes of the file (up to FINGERPRINT_BYTES)


class Commits:
    """Lines in flight for one file; ``committed`` is the end of the longest
    finished prefix (handlers may finish out of order).

    ``unflushed`` counts the dispatched lines past the stored offset, finished
    or not: what a crash now would deliver again.  ``settled`` counts those of
    them inside the committed prefix: what storing ``committed`` takes off it.
    """

    def __init__(self) -> None:
        # [finished, identity, end, dispatched] per line, in file order
        self._pending: collections.deque[list[Any]] = collections.deque()
        self.committed: tuple[Identity, int] | None = None
        self.unflushed = 0
        self.settled = 0
        self.changed = asyncio.Event()  # set whenever the committed prefix grows

    def add(self, ident: Identity, end: int) -> Callable[[], None]:
        """A dispatched line; returns its ``on_done``."""
        entry: list[Any] = [False, ident, end, True]
        self._pending.append(entry)
        self.unflushed += 1

        def done() -> None:
            entry[0] = True
            self._advance()

        return done

    def skip(self, ident: Identity, end: int) -> None:
        """A line that needs no dispatch: finished already."""
        if self._pending:
            self._pending.append([True, ident, end, False])
        else:
            self.committed = (ident, end)

    def stored(self, settled: int) -> None:
        """The offset that covered ``settled`` dispatched lines was stored."""
        self.unflushed -= settled
        self.settled -= settled

    def _advance(self) -> None:
        pend = self._pending
        while pend and pend[0][0]:
            _, ident, end, dispatched = pend.popleft()
            self.committed = (ident, end)
            self.settled += dispatched
        self.changed.set()
