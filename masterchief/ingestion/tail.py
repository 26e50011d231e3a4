"""Log tailing: follow files by name, one ``log`` Event per line.

How this works
--------------
``LogTailers(configs, sink, store=...)`` runs one ``LogTailer`` per ``logs:``
entry; a tailer expands its ``path`` glob every ``rescan_s`` and runs one
``FileFollower`` per matching file.  A follower polls: it reads its open file
to the end, then ``stat()``s the path:

- the path names another inode (rename rotation, delete + re-create): the old
  file was already read to its end (and is read once more, to catch a last
  write), then the new file is opened and read from offset 0;
- the same inode is now shorter than our offset (copytruncate): seek to 0;
- the path is gone: keep the old file open (its last lines still arrive) and
  wait for a file to appear; a file that does not exist yet is waited for.

An inode number cannot be reused while we hold the old file open, so inode
reuse matters only across restarts: the stored offset names the file by
(device, inode, first bytes) and is used only when all three still match;
otherwise the file is new and is read from its beginning.  ``start_at``
applies only when there is no stored offset (the file was never seen).

Lines: ``LineSplitter`` (pure) keeps a partial last line until its newline
arrives; a line longer than ``max_line_bytes`` is cut to that size and
flagged ``truncated`` (the rest up to the newline is skipped), never dropped.

Offsets and delivery: each line goes to the dispatcher with ``put`` (which
waits when the queue is full), with an ``on_done`` callback.  Handlers may
finish out of order, so the committed offset is the end of the longest
prefix of lines that have all finished.  It is written to the store every
``flush_lines`` lines or ``flush_s`` seconds and on shutdown.  Guarantee:
**at-least-once**; a clean stop repeats nothing that finished, a crash
repeats at most the lines finished since the last flush (and any that were
queued but unfinished).  Nothing is skipped, except that lines written to a
file that was rotated away *while the bot was down* are not looked for.

Event: ``type="log"``, ``key="<path> <line>"``, ``text=<line>``; a ``log``
mask without a space (just a path or path glob) matches every line of the
file (the binding table treats it as ``"<mask> *"``).

Volume: ``wanted(key)`` (the App passes the binding table's mask check) lets
a line that no ``log`` binding matches skip parsing, the Event and the
dispatcher queue entirely -- it would have fired nothing -- and only its
offset is committed.  Without it, every line becomes an Event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import glob
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..bindings.event import Event
from ..core.config import LogConfig
from ..core.store import Store
from .logparse import Parser, make_parser

__all__ = ["FileFollower", "LineSplitter", "LogTailer", "LogTailers", "TailSink"]

log = logging.getLogger("masterchief.tail")

FINGERPRINT_BYTES = 256
_CHUNK = 1 << 18


class TailSink(Protocol):
    """Where lines go: the dispatcher's ``put``."""

    async def put(self, *chain: Event, on_done: Callable[[], object] | None = None) -> None: ...


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


class _Commits:
    """Lines in flight for one file; ``committed`` is the end of the longest
    finished prefix (handlers may finish out of order)."""

    def __init__(self) -> None:
        self._pending: collections.deque[list[Any]] = collections.deque()
        self.committed: tuple[Identity, int] | None = None
        self.advanced = 0  # lines committed since the last flush

    def add(self, ident: Identity, end: int) -> Callable[[], None]:
        entry: list[Any] = [False, ident, end]
        self._pending.append(entry)

        def done() -> None:
            entry[0] = True
            pend = self._pending
            while pend and pend[0][0]:
                _, i, e = pend.popleft()
                self.committed = (i, e)
                self.advanced += 1

        return done

    def skip(self, ident: Identity, end: int) -> None:
        """A line that needs no dispatch: finished already."""
        if self._pending:
            self._pending.append([True, ident, end])
        else:
            self.committed = (ident, end)
            self.advanced += 1


class FileFollower:
    """Follows one path by name; see the module docstring."""

    def __init__(
        self,
        config: LogConfig,
        path: str,
        sink: TailSink,
        *,
        store: Store | None,
        parser: Parser,
        poll_s: float,
        flush_lines: int,
        flush_s: float,
        initial: bool = True,
        wanted: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.path = path
        self.sink = sink
        self.store = store
        self.parser = parser
        self.poll_s = poll_s
        self.flush_lines = flush_lines
        self.flush_s = flush_s
        self.wanted = wanted
        self.splitter = LineSplitter(config.max_line_bytes)
        self.lines = 0
        self._fd: int | None = None
        self._warned = False
        self._ident: Identity | None = None
        self._commits = _Commits()
        self._last_flush = time.monotonic()
        self._flushed: tuple[Identity, int] | None = None
        # start_at applies to a file present at start; one appearing later is new.
        self._seen_before = not initial

    @property
    def offset(self) -> int:
        return self.splitter.line_start

    # -- file handling -----------------------------------------------------

    def _open(self) -> tuple[int, os.stat_result] | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if not self._warned:
                log.warning("%s: not a regular file; waiting for one", self.path)
            self._warned = True
            return None
        self._warned = False
        return fd, st

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _fingerprint(self, fd: int, size: int = FINGERPRINT_BYTES) -> bytes:
        return os.pread(fd, size, 0)

    def _adopt(self, fd: int, st: os.stat_result, offset: int) -> None:
        self._close()
        self._fd = fd
        self._ident = Identity(st.st_dev, st.st_ino, self._fingerprint(fd))
        self.splitter.reset(offset)

    async def _first_open(self) -> bool:
        opened = self._open()
        if opened is None:
            self._seen_before = True  # appears later: read it from the beginning
            return False
        fd, st = opened
        saved = (
            await self.store.log_offset_load(self.config.name, self.path) if self.store else None
        )
        offset = 0
        if saved is not None:
            fp: bytes = saved["fingerprint"]
            if (
                saved["dev"] == st.st_dev
                and saved["ino"] == st.st_ino
                and self._fingerprint(fd, len(fp)) == fp
                and saved["offset"] <= st.st_size
            ):
                offset = int(saved["offset"])
        elif not self._seen_before and self.config.start_at == "end":
            offset = st.st_size
        self._seen_before = True
        self._adopt(fd, st, offset)
        if offset:
            self._commits.committed = (self._identity(), offset)
        return True

    def _identity(self) -> Identity:
        assert self._ident is not None
        return self._ident

    async def _read_all(self) -> None:
        """Read the open file to its end, dispatching each complete line."""
        fd = self._fd
        if fd is None:
            return
        while True:
            data = os.pread(fd, _CHUNK, self.splitter.offset)
            if not data:
                return
            if self._ident is not None and len(self._ident.fingerprint) < FINGERPRINT_BYTES:
                self._ident = Identity(self._ident.dev, self._ident.ino, self._fingerprint(fd))
            wanted = self.wanted
            for raw, cut, start, end in self.splitter.feed(data):
                line = raw.decode("utf-8", "replace")
                key = f"{self.path} {line}"
                self.lines += 1
                if wanted is None or wanted(key):
                    await self._emit(line, key, cut, start, end)
                else:
                    self._commits.skip(self._identity(), end)
            await self._maybe_flush()

    async def _emit(self, line: str, key: str, cut: bool, start: int, end: int) -> None:
        parsed = self.parser(line)
        ev = Event(
            type="log",
            key=key,
            text=line,
            payload={
                "path": self.path,
                "line": line,
                "fields": parsed.fields,
                "parse_error": parsed.error,
                "truncated": cut,
                "offset": start,
                "end": end,
                "name": self.config.name,
            },
            source="logs",
        )
        await self.sink.put(ev, on_done=self._commits.add(self._identity(), end))

    async def poll_once(self) -> None:
        """One round: read what is new, then look for rotation/truncation."""
        if self._fd is None and not await self._first_open():
            return
        await self._read_all()
        try:
            st = os.stat(self.path)
        except OSError:
            return  # deleted: keep the old file open, wait for a new one
        ident = self._identity()
        if (st.st_dev, st.st_ino) != (ident.dev, ident.ino):
            await self._read_all()  # the last lines written before the rotation
            opened = self._open()
            if opened is None:
                return
            fd, nst = opened
            log.info("%s: rotated (new inode %d)", self.path, nst.st_ino)
            self._adopt(fd, nst, 0)
            await self._read_all()
            return
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size < self.splitter.offset:
            log.info("%s: truncated (%d < %d), reading from 0", self.path, size, self.offset)
            self._ident = Identity(st.st_dev, st.st_ino, self._fingerprint(self._fd))
            self.splitter.reset(0)
            await self._read_all()

    # -- offsets -----------------------------------------------------------

    async def _maybe_flush(self, force: bool = False) -> None:
        c = self._commits
        if c.committed is None or c.committed == self._flushed:
            return
        now = time.monotonic()
        if not force and c.advanced < self.flush_lines and now - self._last_flush < self.flush_s:
            return
        await self.flush()

    async def flush(self) -> None:
        """Write the committed offset to the store now."""
        c = self._commits
        if self.store is None or c.committed is None or c.committed == self._flushed:
            return
        ident, off = c.committed
        await self.store.log_offset_save(
            self.config.name,
            self.path,
            dev=ident.dev,
            ino=ident.ino,
            fingerprint=ident.fingerprint,
            offset=off,
        )
        self._flushed = c.committed
        c.advanced = 0
        self._last_flush = time.monotonic()

    async def run(self) -> None:
        failing: str | None = None
        try:
            while True:
                try:
                    await self.poll_once()
                    await self._maybe_flush()
                    failing = None
                except Exception as exc:  # one bad file must not stop the bot
                    if repr(exc) != failing:
                        log.exception("%s: tailing failed; retrying", self.path)
                    failing = repr(exc)
                await asyncio.sleep(self.poll_s)
        finally:
            self._close()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())

    def status(self) -> dict[str, Any]:
        committed = self._commits.committed
        return {
            "name": self.config.name,
            "path": self.path,
            "offset": self.offset,
            "committed": committed[1] if committed else None,
            "lines": self.lines,
        }


class LogTailer:
    """One ``logs:`` entry: a follower per file matching its path (a glob)."""

    def __init__(
        self,
        config: LogConfig,
        sink: TailSink,
        *,
        store: Store | None = None,
        poll_s: float = 0.1,
        rescan_s: float = 2.0,
        flush_lines: int = 1000,
        flush_s: float = 1.0,
        wanted: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.wanted = wanted
        self.sink = sink
        self.store = store
        self.parser = make_parser(config.format, config.pattern)
        self.poll_s = poll_s
        self.rescan_s = rescan_s
        self.flush_lines = flush_lines
        self.flush_s = flush_s
        self.followers: dict[str, FileFollower] = {}

    def _paths(self) -> list[str]:
        pattern = str(self.config.path)
        if glob.has_magic(pattern):
            return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        return [pattern]  # followed even before it exists

    def _follower(self, path: str, initial: bool) -> FileFollower:
        return FileFollower(
            self.config,
            path,
            self.sink,
            store=self.store,
            parser=self.parser,
            poll_s=self.poll_s,
            flush_lines=self.flush_lines,
            flush_s=self.flush_s,
            initial=initial,
            wanted=self.wanted,
        )

    async def run(self) -> None:
        initial = True
        async with asyncio.TaskGroup() as tg:
            while True:
                for path in self._paths():
                    if path not in self.followers:
                        f = self.followers[path] = self._follower(path, initial)
                        tg.create_task(f.run(), name=f"tail:{self.config.name}:{path}")
                initial = False
                await asyncio.sleep(self.rescan_s)


class LogTailers:
    """All ``logs:`` entries, run in one TaskGroup."""

    def __init__(
        self,
        configs: Sequence[LogConfig],
        sink: TailSink,
        *,
        store: Store | None = None,
        wanted: Callable[[str], bool] | None = None,
    ) -> None:
        names = [c.name for c in configs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"logs: duplicate name(s) {', '.join(dupes)}")
        self.tailers = [LogTailer(c, sink, store=store, wanted=wanted) for c in configs]

    def status(self) -> list[dict[str, Any]]:
        return [f.status() for t in self.tailers for f in t.followers.values()]

    async def run(self) -> None:
        if not self.tailers:
            return
        async with asyncio.TaskGroup() as tg:
            for t in self.tailers:
                tg.create_task(t.run(), name=f"tail:{t.config.name}")
