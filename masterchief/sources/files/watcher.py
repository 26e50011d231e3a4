"""Watched folders: files dropped into a folder become ``file`` Events, once.

How this works.  One watchdog ``Observer`` (its own thread) watches every
configured folder; its callbacks only hand the path to the event loop with
``loop.call_soon_threadsafe``.  At start every folder is scanned as well, for
files that arrived while the bot was down.  A path waits in ``pending`` until
its (size, mtime) has not changed for ``settle_s`` -- or until it is closed
after writing (inotify close-write; a later change clears that, the file is
being written again) -- and is then processed, one file at a time per folder:

1. names ``.*``, ``*.tmp``, ``*.part``, the ``.quarantine``/``.processed``
   folders and names matching no pattern are ignored;
2. the file is opened safely (``fileparse.open_checked``) and read: a refused
   or unparsable file is moved to ``<path>/.quarantine/`` with a
   ``<name>.reason`` beside it, logged and reported once to the channels;
3. the ledger (store table ``file_ledger``) decides.  A file whose identity
   (device, inode, size, mtime) has a ``seen`` or ``dispatched`` row is that
   row's file -- typically a restart's scan finding it still in place -- and
   is not hashed again (a 1 GB CSV is read once less); any other file is
   hashed and looked up by content, so a copy or a rename of a file already
   handled is a duplicate:
   ``done`` -> not dispatched again (the file is just moved/deleted);
   ``dispatched`` found at start-up -> dispatched again once, as a redelivery;
   otherwise -> ``seen``, then ``dispatched`` before the Event is queued;
4. once every handler has finished (the dispatcher's ``on_done``) the row
   becomes ``done`` and the file is moved to ``<path>/.processed/`` or deleted.

A CSV's content is a ``CsvRows``: every ``iter()`` streams the file anew on a
reader of its own, so each handler bound to the file sees every row and none
of it sits in memory.  The first pass to reach the end (or a fault) decides
the file's fate: broken past the header, it goes to quarantine after its rows.

A crash between 3 and 4 leaves ``dispatched`` and the file in place, so the
next start dispatches it again with ``payload["redelivery"] = True``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ...bindings.event import Event
from ...config.schema import FilesConfig
from ...metrics import Family
from ...store.api import FileIdentity, FileLedgerStore, FileState, LedgerEntry
from ..base import EventSink, ListFamily, SourceStatus
from .parse import (
    Refused,
    csv_header,
    detect_format,
    independent_stream,
    iter_csv,
    open_checked,
    read_limited,
)
from .parse import parse_document as _parse_document

__all__ = ["FAMILY", "CsvRows", "FileWatcher", "WatchStats", "ignored_name"]

log = logging.getLogger("masterchief.files")

Announce = Callable[[str, str], Awaitable[None]]
_SPECIAL_DIRS = (".quarantine", ".processed")
_UNFINISHED = ("seen", "dispatched")
"""Ledger states whose identity is trusted without hashing the file again."""


def ignored_name(name: str) -> bool:
    """Names never read: hidden files and partial writes (write-then-rename works)."""
    return name.startswith(".") or name.endswith((".tmp", ".part"))


@dataclass(slots=True)
class WatchStats:
    dispatched: int = 0
    redelivered: int = 0
    duplicates: int = 0
    quarantined: int = 0


@dataclass(slots=True)
class _Pending:
    sig: tuple[int, int] | None
    since: float
    closed: bool = False


@dataclass(slots=True)
class _Watch:
    config: FilesConfig
    root: Path
    pending: dict[Path, _Pending] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stats: WatchStats = field(default_factory=WatchStats)
    reported: set[str] = field(default_factory=set)

    def wanted_dir(self, path: Path) -> bool:
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return False
        if parts and not self.config.recursive:
            return False
        # ".." stays: such a path is examined and refused as outside the root.
        return not any(p in _SPECIAL_DIRS or (p.startswith(".") and p != "..") for p in parts)

    def wanted(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            # Outside the root by name: still examined, so it is refused loudly.
            return True
        parts = rel.parts
        if not parts or not self.wanted_dir(path.parent):
            return False
        name = parts[-1]
        if ignored_name(name):
            return False
        return any(fnmatch.fnmatch(name, pat) for pat in self.config.patterns)


class CsvRows:
    """The rows of a CSV file as dicts, streamed, as often as it is iterated.

    Each ``iter()`` opens a reader of its own over the checked file (with the
    field and byte limits of ``iter_csv``), so every handler bound to the file
    sees all its rows.  The first pass that ends -- at the last row or at a
    ``Refused`` -- is recorded in ``finished``, ``count`` and ``error``: the
    watcher quarantines a file broken past its header after its handlers ran.
    The rows can be read while the file's handlers run; afterwards ``iter()``
    raises ``ValueError``."""

    def __init__(self, fh: IO[bytes], max_bytes: int) -> None:
        self._fh = fh
        self._max_bytes = max_bytes
        self._lock = threading.Lock()  # handlers may iterate in threads
        self.finished = False
        self.count = 0
        self.error: Refused | None = None

    def __iter__(self) -> Iterator[dict[str, str]]:
        if self._fh.closed:
            raise ValueError("the file was processed: iterate its rows in the handler")
        # Opened here, not on the first next(): a late iter() fails at once.
        return self._stream(independent_stream(self._fh))

    def _stream(self, stream: IO[bytes]) -> Iterator[dict[str, str]]:
        count = 0
        with stream:
            try:
                for row in iter_csv(stream, self._max_bytes):
                    count += 1
                    yield row
            except Refused as exc:
                self._finish(count, exc)
                raise
        self._finish(count, None)

    def _finish(self, count: int, error: Refused | None) -> None:
        with self._lock:
            if not self.finished:
                self.finished, self.count, self.error = True, count, error


class FileWatcher:
    """Watched folders; ``await run()`` until cancelled.  As a source
    (``files``) it watches one ``files:`` entry; tests may give several."""

    family = "files"

    def __init__(
        self,
        configs: Sequence[FilesConfig],
        submit: Callable[..., Awaitable[None]] | None,
        store: FileLedgerStore,
        *,
        announce: Announce | None = None,
    ) -> None:
        self._submit = submit
        self._store = store
        self._announce = announce
        self.watches = [_Watch(c, c.path) for c in configs]
        self.name = ",".join(c.name for c in configs)
        self.errors = 0
        self.last_success: float | None = None
        self._observer: Any = None

    def status(self) -> SourceStatus:
        w = self.watches
        return SourceStatus(
            self.family,
            self.name,
            "ok" if self._observer is not None else "starting",
            ", ".join(str(x.root) for x in w),
            events=sum(x.stats.dispatched for x in w),
            errors=self.errors + sum(x.stats.quarantined for x in w),
            pending=sum(len(x.pending) for x in w),
            last_success=self.last_success,
        )

    def metrics(self) -> list[Family]:
        return [
            Family(
                "masterchief_files",
                "Watched folder counters",
                "counter",
                ("folder", "outcome"),
                {
                    (x.config.name, k): v
                    for x in self.watches
                    for k, v in dataclasses.asdict(x.stats).items()
                },
            )
        ]

    async def folder_status(self) -> list[dict[str, Any]]:
        """Each watched folder: pending, processed and quarantined counts (for ``!files``)."""
        out: list[dict[str, Any]] = []
        for w in self.watches:
            ledger = await self._store.file_ledger_counts(w.config.name)
            out.append(
                {
                    "name": w.config.name,
                    "path": str(w.root),
                    "pending": len(w.pending),
                    "processed": ledger.done,
                    "in_flight": ledger.dispatched,
                    "quarantined": w.stats.quarantined,
                    "duplicates": w.stats.duplicates,
                    "redelivered": w.stats.redelivered,
                }
            )
        return out

    # -- intake (loop thread) -------------------------------------------------------

    def notice(self, watch: _Watch, path: Path, closed: bool = False) -> None:
        """A path changed (or appeared): (re)start its settle timer."""
        if path.is_dir() and not path.is_symlink():
            if path != watch.root and watch.wanted_dir(path):
                self._scan_dir(watch, path)  # a folder moved in: its files are new
            return
        if not watch.wanted(path):
            return
        p = watch.pending.get(path)
        if p is None:
            watch.pending[path] = _Pending(None, time.monotonic(), closed)
        else:
            # Any change after a close-write means the file is written again:
            # it must settle, or be closed, anew.
            p.closed = closed
        watch.wake.set()

    def _scan_dir(self, watch: _Watch, top: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and watch.config.recursive]
            for name in filenames:
                self.notice(watch, Path(dirpath) / name)

    # -- lifecycle ---------------------------------------------------------------------

    async def run(
        self, sink: EventSink | None = None, started: asyncio.Event | None = None
    ) -> None:
        if sink is not None:
            self._submit = sink.put
        if not self.watches:
            return
        # watchdog (~5 MB) is loaded only when a folder is watched.
        from .observer import Handler, Observer

        loop = asyncio.get_running_loop()
        observer = Observer()
        for w in self.watches:
            w.root.mkdir(parents=True, exist_ok=True)
            w.root = w.root.resolve()
            observer.schedule(Handler(loop, self, w), str(w.root), recursive=w.config.recursive)
        observer.start()
        self._observer = observer
        try:
            for w in self.watches:
                self._scan_dir(w, w.root)  # after start: nothing falls between
            if started is not None:
                started.set()
            async with asyncio.TaskGroup() as tg:
                for w in self.watches:
                    tg.create_task(self._loop(w), name=f"files:{w.config.name}")
        finally:
            observer.stop()
            await asyncio.shield(asyncio.to_thread(observer.join, 5.0))
            self._observer = None

    async def _loop(self, watch: _Watch) -> None:
        settle = watch.config.settle_s
        tick = max(0.02, min(settle / 4, 0.25))
        while True:
            if not watch.pending:
                watch.wake.clear()
                await watch.wake.wait()
            await asyncio.sleep(tick)
            now = time.monotonic()
            ready: list[Path] = []
            for path, p in list(watch.pending.items()):
                sig = _signature(path)
                if sig is None:
                    del watch.pending[path]  # renamed away or deleted
                    continue
                if sig != p.sig:
                    # Still changing; even after a close-write, wait one quiet tick.
                    p.sig, p.since = sig, now
                    continue
                if p.closed or now - p.since >= settle:
                    ready.append(path)
            for path in ready:
                watch.pending.pop(path, None)
                try:
                    await self.process(watch, path)
                except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                    raise
                except Exception:
                    self.errors += 1
                    log.exception("files %s: failed on %s", watch.config.name, path)

    # -- one file ------------------------------------------------------------------------

    async def process(self, watch: _Watch, path: Path) -> None:
        """Check, parse, dedupe and dispatch one settled file."""
        cfg = watch.config
        fmt = detect_format(path.name)
        try:
            if fmt is None:
                raise Refused("unknown file format")
            fh, st = await asyncio.to_thread(open_checked, path, watch.root, cfg.max_bytes)
        except Refused as exc:
            await self._quarantine(watch, path, exc)
            return
        keep_open = False
        try:
            identity = FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            same = await self._store.file_ledger_find(cfg.name, identity)
            # A "done" identity is confirmed by content: its inode may have been
            # freed (after: delete) and reused by a new file of the same size.
            trusted = same if same is not None and same.state in _UNFINISHED else None
            try:
                digest, content = await asyncio.to_thread(
                    _read, fh, fmt, cfg.max_bytes, trusted.hash if trusted else None
                )
            except Refused as exc:
                await self._quarantine(watch, path, exc)
                return
            if trusted is not None:
                state: FileState | None = trusted.state
            else:
                known = await self._store.file_ledger_get(cfg.name, digest)
                state = known.state if known else None
            if state == "done":
                watch.stats.duplicates += 1
                log.info("files %s: %s already processed; not dispatched again", cfg.name, path)
                await asyncio.to_thread(self._after, watch, path)
                return
            redelivery = state == "dispatched"

            async def record(state: FileState) -> None:
                await self._store.file_ledger_put(
                    LedgerEntry(cfg.name, digest, identity, str(path), state)
                )

            if state is None:
                await record("seen")
            rows: CsvRows | None = None
            if fmt == "csv":
                content = rows = CsvRows(fh, cfg.max_bytes)
            payload = {
                "path": str(path),
                "name": path.name,
                "size": st.st_size,
                "format": fmt,
                "content": content,
                "redelivery": redelivery,
                "watch": cfg.name,
                "hash": digest,
            }
            ev = Event(type="file", key=str(path), payload=payload, source="files")
            await record("dispatched")
            loop = asyncio.get_running_loop()
            finished: asyncio.Future[None] = loop.create_future()

            def on_done() -> None:
                if not finished.done():
                    finished.set_result(None)

            keep_open = True
            assert self._submit is not None, "run() with a sink, or give submit"
            try:
                await self._submit(ev, on_done=on_done)
                await finished
            finally:
                fh.close()
            await record("done")
            watch.stats.dispatched += 1
            self.last_success = time.time()
            if redelivery:
                watch.stats.redelivered += 1
            if rows is not None and rows.error is not None:
                # broken past the header: the handler saw the rows before the
                # fault; the file itself goes to quarantine, not .processed
                err = rows.error
                await self._quarantine(
                    watch, path, Refused(f"{err.reason} (after {rows.count} rows)", err.detail)
                )
                return
            await asyncio.to_thread(self._after, watch, path)
        finally:
            if not keep_open:
                fh.close()

    @staticmethod
    def _after(watch: _Watch, path: Path) -> None:
        if watch.config.after == "delete":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        _move_into(watch.root / ".processed", watch.root, path)

    async def _quarantine(self, watch: _Watch, path: Path, exc: Refused) -> None:
        cfg = watch.config
        watch.stats.quarantined += 1
        log.warning("files %s: refused %s: %s", cfg.name, path, exc)
        try:
            await asyncio.to_thread(_quarantine_file, watch.root, path, exc.reason)
        except OSError as err:
            log.error("files %s: cannot quarantine %s: %s", cfg.name, path, err)
        key = f"{path}:{exc.reason}"
        if key in watch.reported or self._announce is None:
            return
        watch.reported.add(key)
        text = f"files/{cfg.name}: refused {path.name!r} ({exc.reason}); moved to .quarantine"
        for channel in cfg.channels:
            try:
                await self._announce(channel, text)
            except Exception:
                log.exception("files %s: cannot report to %s", cfg.name, channel)


_hasher = hashlib.sha256
"""Every content hash starts here (tests count the files hashed)."""


def _read(fh: IO[bytes], fmt: str, max_bytes: int, digest: str | None) -> tuple[str, Any]:
    """Hash the file unless its ``digest`` is known, and parse it (CSV: only
    its header, and not even that when known; rows stream later)."""
    if fmt == "csv":
        if digest is not None:
            return digest, None  # its header passed when the digest was recorded
        h = _hasher()
        first = b""
        left = max_bytes
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            left -= len(chunk)
            if left < 0:
                raise Refused("over the size limit", "grew past max_bytes")
            if not first:
                first = chunk
            h.update(chunk)
        csv_header(first)
        return h.hexdigest(), None
    data = read_limited(fh, max_bytes)
    content = _parse_document(fmt, data)
    return digest or _hasher(data).hexdigest(), content


def _signature(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of a path (a link's own), or None when it is gone."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _unique(target: Path) -> Path:
    if not os.path.lexists(target):
        return target
    stem, suffix = target.stem, target.suffix
    for n in range(1, 10_000):
        alt = target.with_name(f"{stem}.{n}{suffix}")
        if not os.path.lexists(alt):
            return alt
    return target.with_name(f"{stem}.{time.time_ns()}{suffix}")


def _move_into(folder: Path, root: Path, path: Path) -> Path:
    """Move ``path`` (a link is moved, never followed) into ``folder``, keeping
    its place below ``root`` when it is below it."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    target = _unique(folder / rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, target)
    return target


def _quarantine_file(root: Path, path: Path, reason: str) -> None:
    folder = root / ".quarantine"
    if os.path.lexists(path):
        # Lexical checks are fooled by "..": resolve the folder (not a final link).
        if path.parent.resolve().is_relative_to(root):
            path = path.parent.resolve() / path.name
            target = _move_into(folder, root, path)
        else:
            # Never move a file that is not ours; record why it was refused.
            folder.mkdir(parents=True, exist_ok=True)
            target = _unique(folder / path.name)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        target = _unique(folder / path.name)
    # Written aside and renamed, so a reader never sees an empty reason file.
    reason_file = target.with_name(target.name + ".reason")
    partial = target.with_name("." + target.name + ".reason.part")
    partial.write_text(reason + "\n", encoding="utf-8")
    os.replace(partial, reason_file)


FAMILY = ListFamily(
    "files",
    ("file",),
    # one watcher (and observer thread) per folder
    lambda entry, deps: FileWatcher([entry], None, deps.stored(), announce=deps.announce),
)
