"""Log tailing: follow files by name, one ``log`` Event per line.

How this works
--------------
Each ``logs:`` entry is one ``LogTailer`` (a source of the ``logs`` family);
it expands its ``path`` glob every ``rescan_s`` and runs one
``FileFollower`` per matching file.  A follower polls: it reads its open file
to the end, then ``stat()``s the path:

- the path names another inode (rename rotation, delete + re-create): the old
  file is read to its end, then the new file is opened and read from offset
  0.  The old file stays open: its writer keeps writing to its old handle
  until it reopens the path (logrotate ``create``: rename, create, then
  signal the app), so every poll first reads what the old file gained, then
  the new file, until the old file has not grown for ``rotate_wait_s``
  (fluent-bit's ``rotate_wait``); only then, at its end, is it closed --
  whether it still has a name or was deleted;
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
prefix of lines whose dispatch has finished.  It is stored (with the file's
identity) every ``flush_s`` (0.2 s) while it moves, on stop, and whenever
``flush_lines`` (100) dispatched lines lie past the stored offset: before it
dispatches one more, the follower waits until those lines' handlers have
finished and stores the offset.  That wait is the price of the bound below:
a handler stuck on one line holds its file back once 100 more lines are out.

Guarantee, for the file at the followed path:

- clean stop (the task is cancelled): the stored offset is exactly the end
  of the last line of the finished prefix; a restart skips every line that
  finished and delivers every other one (queued, or its handler cancelled);
- crash (SIGKILL, power loss): a restart delivers again at most
  ``flush_lines`` (100) lines that were already dispatched -- those past the
  last stored offset; lines no binding wanted are re-read, not dispatched;
- nothing is lost, except in a file rotated away from the path: a restart
  follows the path, so lines of the old file that had not finished when the
  bot stopped, or were written to it while the bot was down, are not looked
  for.

``masterchief files status`` shows the stored offset and the lines per
second (every line read, over the last minute) stored with it.

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
import functools
import glob
import logging
import os
import stat
import time
from collections.abc import Callable
from typing import Any, Protocol

from ...bindings.event import Event
from ...config.schema import LogConfig
from ...metrics import Family
from ...store.api import CheckpointStore
from ..base import EventSink, ListFamily, SourceStatus
from .lines import Commits, Identity, LineSplitter
from .offsets import LogOffset, load_offset, save_offset
from .parse import Parser, make_parser

__all__ = [
    "FAMILY",
    "FLUSH_LINES",
    "FileFollower",
    "LineSplitter",
    "LogTailer",
    "TailSink",
]

log = logging.getLogger("masterchief.tail")

FINGERPRINT_BYTES = 256
FLUSH_LINES = 100  # dispatched lines past the stored offset, at most (the crash bound)
FLUSH_S = 0.2  # store a moving offset at least this often
RATE_WINDOW_S = 60.0  # lines/s is measured over this long
RATE_REFRESH_S = 30.0  # store the rate at least this often, even when the file is idle
_CHUNK = 1 << 18


class TailSink(Protocol):
    """Where lines go: the dispatcher's ``put``."""

    async def put(self, *chain: Event, on_done: Callable[[], object] | None = None) -> None: ...


class _Source:
    """One open file: the one at the path, or a rotated one still being read."""

    __slots__ = ("commits", "fd", "grew_at", "ident", "splitter")

    def __init__(self, fd: int, st: os.stat_result, offset: int, max_line_bytes: int) -> None:
        self.fd = fd
        self.ident = Identity(st.st_dev, st.st_ino, _fingerprint(fd))
        self.splitter = LineSplitter(max_line_bytes, offset)
        self.commits = Commits()
        self.grew_at = time.monotonic()  # when it last grew (or was opened or rotated)

    def refresh_fingerprint(self) -> None:
        """A file shorter than the fingerprint: take it again as it grows."""
        if len(self.ident.fingerprint) < FINGERPRINT_BYTES:
            self.ident = Identity(self.ident.dev, self.ident.ino, _fingerprint(self.fd))


def _fingerprint(fd: int, size: int = FINGERPRINT_BYTES) -> bytes:
    return os.pread(fd, size, 0)


class FileFollower:
    """Follows one path by name; see the module docstring."""

    def __init__(
        self,
        config: LogConfig,
        path: str,
        sink: TailSink,
        *,
        store: CheckpointStore | None,
        parser: Parser,
        poll_s: float,
        flush_lines: int = FLUSH_LINES,
        flush_s: float = FLUSH_S,
        initial: bool = True,
        wanted: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.path = path
        self.sink = sink
        self.store = store
        self.parser = parser
        self.poll_s = poll_s
        self.flush_lines = max(flush_lines, 1)
        self.flush_s = flush_s
        self.wanted = wanted
        self.lines = 0
        self.errors = 0
        self._src: _Source | None = None  # the file at the path
        self._rotated: list[_Source] = []  # renamed or deleted, still being read
        self._warned = False
        self._flush_lock = asyncio.Lock()
        self._last_flush = time.monotonic()
        self._flushed: tuple[Identity, int] | None = None
        self._samples = collections.deque([(self._last_flush, 0)])  # (time, lines) for the rate
        # start_at applies to a file present at start; one appearing later is new.
        self._seen_before = not initial

    @property
    def offset(self) -> int:
        """Where the next unread line of the file at the path starts."""
        return self._src.splitter.line_start if self._src else 0

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
        for src in [*self._rotated, *([self._src] if self._src else [])]:
            os.close(src.fd)
        self._rotated = []
        self._src = None

    async def _first_open(self) -> bool:
        opened = self._open()
        if opened is None:
            self._seen_before = True  # appears later: read it from the beginning
            return False
        fd, st = opened
        saved = await load_offset(self.store, self.config.name, self.path) if self.store else None
        offset = 0
        if saved is not None:
            fp = bytes.fromhex(saved.fingerprint)
            if (
                saved.dev == st.st_dev
                and saved.ino == st.st_ino
                and _fingerprint(fd, len(fp)) == fp
                and saved.offset <= st.st_size
            ):
                offset = saved.offset
        elif not self._seen_before and self.config.start_at == "end":
            offset = st.st_size
        self._seen_before = True
        src = self._src = _Source(fd, st, offset, self.config.max_line_bytes)
        if offset:
            src.commits.committed = (src.ident, offset)
        return True

    async def _read(self, src: _Source, *, current: bool) -> None:
        """Read ``src`` to its end, dispatching each complete line.  For the
        file at the path (``current``), keep at most ``flush_lines`` dispatched
        lines past the stored offset."""
        fd, splitter, commits, wanted = src.fd, src.splitter, src.commits, self.wanted
        window = self.flush_lines if current and self.store is not None else 0
        while True:
            data = os.pread(fd, _CHUNK, splitter.offset)
            if not data:
                return
            src.grew_at = time.monotonic()
            src.refresh_fingerprint()
            ident = src.ident
            for raw, cut, start, end in splitter.feed(data):
                line = raw.decode("utf-8", "replace")
                key = f"{self.path} {line}"
                self.lines += 1
                if wanted is not None and not wanted(key):
                    commits.skip(ident, end)
                    continue
                if window and commits.unflushed >= window:
                    try:
                        await self._make_room(commits, window)
                    except Exception:
                        splitter.reset(start)  # the retry reads on from this line
                        raise
                await self._emit(line, key, cut, start, end, commits.add(ident, end))
            if current:
                await self._maybe_flush()

    async def _make_room(self, commits: Commits, window: int) -> None:
        """Wait for dispatched lines to finish, storing the offset, until
        fewer than ``window`` lie past it."""
        while commits.unflushed >= window:
            if commits.settled:
                await self.flush()
            else:
                commits.changed.clear()
                await commits.changed.wait()

    async def _emit(
        self, line: str, key: str, cut: bool, start: int, end: int, done: Callable[[], None]
    ) -> None:
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
        await self.sink.put(ev, on_done=done)

    async def _drain_rotated(self) -> None:
        """Read each rotated file to its end; close the ones quiet for ``rotate_wait_s``."""
        for src in list(self._rotated):
            await self._read(src, current=False)
            if time.monotonic() - src.grew_at < self.config.rotate_wait_s:
                continue
            self._rotated.remove(src)
            os.close(src.fd)
            partial = src.splitter.offset - src.splitter.line_start
            if partial:
                log.warning(
                    "%s: rotated file (inode %d) closed with %d bytes after its last newline",
                    self.path,
                    src.ident.ino,
                    partial,
                )

    async def poll_once(self) -> None:
        """One round: rotated files, then the file at the path; then look for
        rotation and truncation."""
        if self._src is None and not await self._first_open():
            return
        src = self._src
        assert src is not None
        if self._rotated:
            await self._drain_rotated()
        await self._read(src, current=True)
        try:
            st = os.stat(self.path)
        except OSError:
            return  # deleted: keep the old file open, wait for a new one
        if (st.st_dev, st.st_ino) != (src.ident.dev, src.ident.ino):
            await self._read(src, current=True)  # the last lines written before the rotation
            opened = self._open()
            if opened is None:
                return
            fd, nst = opened
            log.info("%s: rotated (new inode %d)", self.path, nst.st_ino)
            src.grew_at = time.monotonic()  # its writer may not have reopened yet
            self._rotated.append(src)
            self._src = _Source(fd, nst, 0, self.config.max_line_bytes)
            await self._read(self._src, current=True)
            return
        size = os.fstat(src.fd).st_size
        if size < src.splitter.offset:
            log.info("%s: truncated (%d < %d), reading from 0", self.path, size, self.offset)
            src.ident = Identity(st.st_dev, st.st_ino, _fingerprint(src.fd))
            src.splitter.reset(0)
            await self._read(src, current=True)

    # -- offsets -----------------------------------------------------------

    async def _maybe_flush(self) -> None:
        src = self._src
        if src is None or src.commits.committed is None:
            return
        age = time.monotonic() - self._last_flush
        if age >= RATE_REFRESH_S or (
            src.commits.committed != self._flushed and age >= self.flush_s
        ):
            await self.flush()

    async def flush(self) -> None:
        """Store the committed offset (and the recent rate) now."""
        src = self._src
        if self.store is None or src is None:
            return
        async with self._flush_lock:
            c = src.commits
            committed, settled, now = c.committed, c.settled, time.monotonic()
            if committed is None:
                return
            if committed == self._flushed and now - self._last_flush < RATE_REFRESH_S:
                c.stored(settled)  # the offset already stored covers them
                return
            ident, off = committed
            await save_offset(
                self.store,
                LogOffset(
                    name=self.config.name,
                    path=self.path,
                    dev=ident.dev,
                    ino=ident.ino,
                    fingerprint=ident.fingerprint.hex(),
                    offset=off,
                    lines_per_s=round(self._lines_per_s(now), 1),
                ),
            )
            self._flushed = committed
            c.stored(settled)
            self._last_flush = now

    def _lines_per_s(self, now: float) -> float:
        """Lines read per second over the last minute (or since the start)."""
        samples = self._samples
        if now - samples[-1][0] >= 1.0:
            samples.append((now, self.lines))
        while len(samples) > 1 and samples[1][0] <= now - RATE_WINDOW_S:
            samples.popleft()
        then, before = samples[0]
        return (self.lines - before) / (now - then) if now > then else 0.0

    async def run(self) -> None:
        failing: str | None = None
        try:
            while True:
                try:
                    await self.poll_once()
                    await self._maybe_flush()
                    failing = None
                except Exception as exc:  # one bad file must not stop the bot
                    self.errors += 1
                    if repr(exc) != failing:
                        log.exception("%s: tailing failed; retrying", self.path)
                    failing = repr(exc)
                await asyncio.sleep(self.poll_s)
        finally:
            try:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.flush())
            finally:
                self._close()

    def status(self) -> dict[str, Any]:
        committed = self._src.commits.committed if self._src else None
        return {
            "name": self.config.name,
            "path": self.path,
            "offset": self.offset,
            "committed": committed[1] if committed else None,
            "lines": self.lines,
            "lines_per_s": round(self._lines_per_s(time.monotonic()), 1),
        }


class LogTailer:
    """One ``logs:`` entry, a ``logs`` source: a follower per file matching
    its path (a glob).  Lines no ``log`` binding wants are not dispatched
    (``wanted``, by default the sink's ``wants``)."""

    family = "logs"

    def __init__(
        self,
        config: LogConfig,
        sink: TailSink | None = None,
        *,
        store: CheckpointStore | None = None,
        poll_s: float = 0.1,
        rescan_s: float = 2.0,
        flush_lines: int = FLUSH_LINES,
        flush_s: float = FLUSH_S,
        wanted: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
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
        assert self.sink is not None
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

    async def run(
        self, sink: EventSink | None = None, started: asyncio.Event | None = None
    ) -> None:
        if sink is not None:
            self.sink = sink
            if self.wanted is None:
                self.wanted = functools.partial(sink.wants, "log")
        initial = True
        async with asyncio.TaskGroup() as tg:
            while True:
                for path in self._paths():
                    if path not in self.followers:
                        f = self.followers[path] = self._follower(path, initial)
                        tg.create_task(f.run(), name=f"tail:{self.config.name}:{path}")
                if initial and started is not None:
                    started.set()
                initial = False
                await asyncio.sleep(self.rescan_s)

    def follower_status(self) -> list[dict[str, Any]]:
        """Each followed file: offsets, lines and rate (for ``!files``)."""
        return [f.status() for f in self.followers.values()]

    def status(self) -> SourceStatus:
        followers = list(self.followers.values())
        errors = sum(f.errors for f in followers)
        lines = sum(f.lines for f in followers)
        files = len(followers)
        return SourceStatus(
            self.family,
            self.name,
            "ok" if followers else "idle",
            f"{self.config.path}: {files} file{'s' * (files != 1)} followed",
            events=lines,
            errors=errors,
        )

    def metrics(self) -> list[Family]:
        return []


FAMILY = ListFamily("logs", ("log",), lambda entry, deps: LogTailer(entry, store=deps.store))
