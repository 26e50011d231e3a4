"""Log tailing against real files on disk (no mocked file system)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TextIO

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.config.schema import LogConfig
from masterchief.sources.logs.lines import LineSplitter
from masterchief.sources.logs.offsets import load_offset
from masterchief.sources.logs.tail import FLUSH_LINES, FileFollower, LogTailer, TailSink
from masterchief.store.sqlite import SqliteStore, open_store


class Sink:
    """Collects Events and finishes them at once (like a dispatcher with no handlers)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def put(self, *chain: Event, on_done: Callable[[], object] | None = None) -> None:
        self.events.extend(chain)
        if on_done is not None:
            on_done()

    @property
    def lines(self) -> list[str]:
        return [e.text for e in self.events]


def switched(follower: FileFollower, ino: int) -> bool:
    return follower._src is not None and follower._src.ident.ino == ino


def bytes_read(t: LogTailer, path: Path) -> int:
    """How far the follower of ``path`` has read (partial lines included)."""
    f = t.followers.get(str(path))
    src = f._src if f is not None else None
    return src.splitter.offset if src is not None else -1


async def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(tailer: LogTailer) -> AsyncIterator[LogTailer]:
    task = asyncio.create_task(tailer.run())
    try:
        yield tailer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def cfg(path: Path, **kw: Any) -> LogConfig:
    kw.setdefault("start_at", "beginning")
    return LogConfig(name="app", path=path, **kw)


def tailer(
    config: LogConfig, sink: TailSink, store: SqliteStore | None = None, **kw: Any
) -> LogTailer:
    kw.setdefault("poll_s", 0.005)
    kw.setdefault("rescan_s", 0.02)
    return LogTailer(config, sink, store=store, **kw)


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with await open_store(tmp_path / "store.db") as s:
        yield s


# -- the line splitter (pure) ---------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "max_bytes", "expected"),
    [
        ([b"a\nb\n"], 10, [(b"a", False, 0, 2), (b"b", False, 2, 4)]),
        ([b"ab", b"c\n"], 10, [(b"abc", False, 0, 4)]),
        ([b"abc"], 10, []),  # a partial line waits
        ([b"a\r\n"], 10, [(b"a", False, 0, 3)]),
        ([b"0123456789XYZ\nok\n"], 10, [(b"0123456789", True, 0, 14), (b"ok", False, 14, 17)]),
        ([b"01234567", b"89XY", b"Z\n"], 10, [(b"0123456789", True, 0, 14)]),
        ([b"0123456789", b"\n"], 10, [(b"0123456789", False, 0, 11)]),
        ([b"\n\n"], 10, [(b"", False, 0, 1), (b"", False, 1, 2)]),
    ],
)
def test_splitter(
    chunks: list[bytes], max_bytes: int, expected: list[tuple[bytes, bool, int, int]]
) -> None:
    s = LineSplitter(max_bytes)
    got = [line for c in chunks for line in s.feed(c)]
    assert got == expected
    assert s.offset == sum(map(len, chunks))
    assert s.line_start == (expected[-1][3] if expected else 0)


# -- formats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "pattern", "line", "field", "value"),
    [
        ("json", None, '{"level": "error"}', "level", "error"),
        ("syslog", None, "<34>Oct 11 22:14:15 host su: hi", "appname", "su"),
        ("syslog", None, "<165>1 2003-10-11T22:14:15Z h app - ID47 - hi", "msgid", "ID47"),
        ("regex", r"(?P<level>[A-Z]+) (?P<msg>.*)", "WARN low disk", "level", "WARN"),
        ("plain", None, "just text", "message", "just text"),
    ],
)
async def test_every_format(
    tmp_path: Path, fmt: str, pattern: str | None, line: str, field: str, value: str
) -> None:
    path = tmp_path / "app.log"
    path.write_text(f"{line}\nnot parseable by json/syslog/regex\n")
    sink = Sink()
    async with running(tailer(cfg(path, format=fmt, pattern=pattern), sink)):
        await wait_for(lambda: len(sink.events) == 2)
    ev, bad = sink.events
    assert ev.type == "log" and ev.source == "logs"
    assert ev.key == f"{path} {line}" and ev.text == line
    assert ev.payload["fields"][field] == value
    assert ev.payload["parse_error"] is None
    assert ev.payload["path"] == str(path) and ev.payload["name"] == "app"
    assert ev.payload["offset"] == 0 and ev.payload["truncated"] is False
    if fmt == "plain":
        assert bad.payload["parse_error"] is None
    else:  # a line that does not parse still arrives, flagged
        assert bad.payload["parse_error"]
        assert bad.payload["fields"]["message"] == bad.text


# -- lines -------------------------------------------------------------------------


async def test_partial_last_line_waits_for_newline(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"one\ntw")
    sink = Sink()
    t = tailer(cfg(path), sink)
    async with running(t):
        await wait_for(lambda: bytes_read(t, path) == 6)
        assert sink.lines == ["one"]
        append(path, "o\nthree\n")
        await wait_for(lambda: len(sink.events) == 3)
    assert sink.lines == ["one", "two", "three"]


async def test_overlong_line_is_cut_and_flagged(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"x" * 1000 + b"\nshort\n")
    sink = Sink()
    async with running(tailer(cfg(path, max_line_bytes=256), sink)):
        await wait_for(lambda: len(sink.events) == 2)
    long, short = sink.events
    assert long.text == "x" * 256 and long.payload["truncated"] is True
    assert short.text == "short" and short.payload["truncated"] is False
    assert short.payload["offset"] == 1001


# -- start_at, late files -------------------------------------------------------------


async def test_start_at_end_skips_existing_lines(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("old 1\nold 2\n")
    sink = Sink()
    t = tailer(cfg(path, start_at="end"), sink)
    async with running(t):
        await wait_for(lambda: bool(t.followers) and t.followers[str(path)].offset == 12)
        append(path, "new\n")
        await wait_for(lambda: len(sink.events) == 1)
    assert sink.lines == ["new"]


async def test_file_appearing_later_is_read_from_its_beginning(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    sink = Sink()
    t = tailer(cfg(path, start_at="end"), sink)
    async with running(t):
        await wait_for(lambda: bool(t.followers))
        path.write_text("first\nsecond\n")
        await wait_for(lambda: len(sink.events) == 2)
    assert sink.lines == ["first", "second"]


async def test_glob_follows_each_matching_file(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("a1\n")
    sink = Sink()
    t = tailer(cfg(tmp_path / "*.log"), sink)
    async with running(t):
        await wait_for(lambda: len(sink.events) == 1)
        (tmp_path / "b.log").write_text("b1\n")  # appears later: read from its beginning
        await wait_for(lambda: len(sink.events) == 2)
    assert sorted(sink.lines) == ["a1", "b1"]
    assert {e.payload["path"] for e in sink.events} == {
        str(tmp_path / "a.log"),
        str(tmp_path / "b.log"),
    }


# -- rotation ------------------------------------------------------------------------


async def test_rename_rotation_reads_what_the_writer_adds_to_the_old_file(tmp_path: Path) -> None:
    """logrotate ``create`` without copytruncate: rename, create, then the app
    is told to reopen -- until it does, it writes to the renamed file, also
    after the tailer has switched to the new one.  Every line arrives exactly
    once, in the order written."""
    path = tmp_path / "app.log"
    path.write_text("")
    sink = Sink()
    t = tailer(cfg(path), sink)
    expected: list[str] = []

    def write(fh: TextIO, text: str) -> None:
        fh.write(text + "\n")
        fh.flush()
        expected.append(text)

    async with running(t):
        await wait_for(lambda: bool(t.followers) and t.followers[str(path)]._src is not None)
        follower = t.followers[str(path)]
        fh = path.open("a", encoding="utf-8")  # the app's handle
        for r in range(1, 4):
            for i in range(300):
                write(fh, f"file {r} line {i}")
                if i % 7 == 0:
                    await asyncio.sleep(0)  # let the tailer read while we write
            path.rename(tmp_path / f"app.log.{r}")  # rotate: rename ...
            new = path.open("a", encoding="utf-8")  # ... and create
            await wait_for(functools.partial(switched, follower, os.fstat(new.fileno()).st_ino))
            for i in range(50):  # the tailer reads the new file; the app still has the old
                write(fh, f"file {r} late {i}")
            fh.close()
            write(new, f"file {r + 1} after reopen")  # the app reopened the path
            fh = new
        fh.close()
        await wait_for(lambda: len(sink.events) >= len(expected))
    assert sink.lines == expected


async def test_a_rotated_file_is_read_until_quiet_then_closed(tmp_path: Path) -> None:
    """Also when the rotated file is deleted: it is read to its end first."""
    path = tmp_path / "app.log"
    path.write_text("one\n")
    sink = Sink()
    t = tailer(cfg(path, rotate_wait_s=1.0), sink)
    async with running(t):
        await wait_for(lambda: sink.lines == ["one"])
        follower = t.followers[str(path)]
        with path.open("a", encoding="utf-8") as fh:  # the app's handle
            path.rename(tmp_path / "app.log.1")
            path.write_text("")
            await wait_for(lambda: switched(follower, path.stat().st_ino))
            assert len(follower._rotated) == 1
            (tmp_path / "app.log.1").unlink()  # e.g. logrotate's rotate 0
            fh.write("two (to the deleted file)\n")
        await wait_for(lambda: not follower._rotated)  # quiet for rotate_wait_s: closed
        append(path, "three\n")
        await wait_for(lambda: len(sink.events) == 3)
    assert sink.lines == ["one", "two (to the deleted file)", "three"]


async def test_copytruncate(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("".join(f"before {i}\n" for i in range(5)))
    sink = Sink()
    async with running(tailer(cfg(path), sink)):
        await wait_for(lambda: len(sink.events) == 5)
        shutil.copy(path, tmp_path / "app.log.1")
        with path.open("r+") as fh:
            fh.truncate(0)
        append(path, "after 0\nafter 1\n")
        await wait_for(lambda: len(sink.events) == 7)
    assert sink.lines[5:] == ["after 0", "after 1"]
    assert sink.events[5].payload["offset"] == 0


async def test_delete_and_recreate(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("one\n")
    sink = Sink()
    t = tailer(cfg(path), sink)
    async with running(t):
        await wait_for(lambda: len(sink.events) == 1)
        fh = path.open("a")  # a writer still holding the deleted file
        path.unlink()
        fh.write("two (to the deleted file)\n")
        fh.close()
        await wait_for(lambda: len(sink.events) == 2)
        path.write_text("three\nfour\n")
        await wait_for(lambda: len(sink.events) == 4)
    assert sink.lines == ["one", "two (to the deleted file)", "three", "four"]


# -- offsets and restarts -------------------------------------------------------------------


async def test_restart_in_the_middle_resumes_without_loss_or_duplication(
    tmp_path: Path, store: SqliteStore
) -> None:
    path = tmp_path / "app.log"
    path.write_text("".join(f"l{i}\n" for i in range(100)))
    first = Sink()
    async with running(tailer(cfg(path), first, store, flush_lines=10)):
        await wait_for(lambda: len(first.events) == 100)
    saved = await load_offset(store, "app", str(path))
    assert saved is not None and saved.offset == path.stat().st_size
    append(path, "".join(f"l{i}\n" for i in range(100, 150)))
    second = Sink()
    async with running(tailer(cfg(path, start_at="end"), second, store)):
        await wait_for(lambda: len(second.events) == 50)
    assert second.lines == [f"l{i}" for i in range(100, 150)]


class StuckSink(Sink):
    """Finishes lines until ``stuck_at``, then waits there (a handler that hangs)."""

    def __init__(self, stuck_at: str) -> None:
        super().__init__()
        self.stuck_at = stuck_at
        self.reached = asyncio.Event()

    async def put(self, *chain: Event, on_done: Callable[[], object] | None = None) -> None:
        if chain[0].text == self.stuck_at:
            self.reached.set()
            await asyncio.Event().wait()  # until the tailer is stopped
        await super().put(*chain, on_done=on_done)


async def test_clean_stop_in_the_middle_stores_the_exact_offset(
    tmp_path: Path, store: SqliteStore
) -> None:
    path = tmp_path / "app.log"
    lines = [f"l{i:05d}" for i in range(20_000)]
    path.write_text("".join(f"{x}\n" for x in lines))
    first = StuckSink("l05037")
    async with running(tailer(cfg(path), first, store)):
        await asyncio.wait_for(first.reached.wait(), 15)
    assert first.lines == lines[:5037]
    saved = await load_offset(store, "app", str(path))
    assert saved is not None and saved.offset == 5037 * len("l00000\n")  # exactly
    second = Sink()
    async with running(tailer(cfg(path), second, store)):
        await wait_for(lambda: len(second.events) >= 20_000 - 5037)
    assert first.lines + second.lines == lines  # every line exactly once


CRASHING_CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.registry import BindingTable
from masterchief.config.schema import LogConfig
from masterchief.store.sqlite import SqliteStore, open_store
from masterchief.sources.logs.tail import LogTailer

async def main():
    tmp = Path({tmp!r})
    store = await open_store(tmp / "mc.db")
    out = os.open(tmp / "out.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    table = BindingTable()
    def handle(ev):
        os.write(out, (ev.text + "\\n").encode())
        if ev.text == "l02500":
            os.kill(os.getpid(), signal.SIGKILL)  # the crash, mid-file
    table.bind("log", "-|-", str(tmp / "app.log"), handle)
    dispatcher = Dispatcher(table)
    config = LogConfig(name="app", path=tmp / "app.log", start_at="beginning")
    tailer = LogTailer(config, dispatcher, store=store, poll_s=0.01)
    await asyncio.gather(dispatcher.run(), tailer.run())

asyncio.run(main())
"""


async def test_killed_tailer_delivers_at_most_flush_lines_again(tmp_path: Path) -> None:
    """SIGKILL part-way through a file: after a restart nothing is lost and at
    most FLUSH_LINES lines that were handled before the crash come again."""
    repo = str(Path(__file__).resolve().parents[3])
    path = tmp_path / "app.log"
    lines = [f"l{i:05d}" for i in range(20_000)]
    path.write_text("".join(f"{x}\n" for x in lines))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_CHILD.format(repo=repo, tmp=str(tmp_path))
    )
    assert await asyncio.wait_for(proc.wait(), 30) == -9
    before = (tmp_path / "out.txt").read_text().splitlines()
    assert before == lines[:2501]
    after = Sink()
    async with (
        await open_store(tmp_path / "mc.db") as store,
        running(tailer(cfg(path, start_at="end"), after, store)),
    ):
        await wait_for(lambda: bool(after.lines) and after.lines[-1] == lines[-1])
    again = len(before) + len(after.lines) - len(lines)
    assert after.lines == lines[len(lines) - len(after.lines) :]  # resumes at a line, in order
    assert 0 <= again <= FLUSH_LINES, again  # nothing lost; the documented bound


async def test_a_stuck_handler_holds_its_file_back_after_flush_lines(
    tmp_path: Path, store: SqliteStore
) -> None:
    """The price of the crash bound: no more than FLUSH_LINES dispatched lines
    past the stored offset, so a hung handler stops the file there (and only
    there) until it finishes."""
    path = tmp_path / "app.log"
    path.write_text("".join(f"l{i}\n" for i in range(1000)))
    table = BindingTable()
    release = asyncio.Event()
    seen: list[str] = []

    async def handler(ev: Event) -> None:
        seen.append(ev.text)
        if ev.text == "l0":
            await release.wait()

    table.bind("log", "-|-", str(path), handler)
    dispatcher = Dispatcher(table, resolver=lambda ev: None, handler_timeout_s=60)
    worker = asyncio.create_task(dispatcher.run())
    t = tailer(cfg(path), dispatcher, store)
    try:
        async with running(t):
            await wait_for(lambda: len(seen) == FLUSH_LINES)
            follower = t.followers[str(path)]
            read = follower.lines
            await asyncio.sleep(0.3)  # a negative check: many poll intervals, nothing more
            assert len(seen) == FLUSH_LINES and follower.lines == read
            release.set()
            await wait_for(lambda: len(seen) == 1000)
            await dispatcher.drain()
            await follower.flush()
        saved = await load_offset(store, "app", str(path))
        assert saved is not None and saved.offset == path.stat().st_size
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    assert seen == [f"l{i}" for i in range(1000)]


async def test_offset_is_committed_only_after_dispatch_finished(
    tmp_path: Path, store: SqliteStore
) -> None:
    """With a real dispatcher: a line whose handler has not finished is not
    committed, so a crash (no final flush) repeats it rather than losing it."""
    path = tmp_path / "app.log"
    path.write_text("a\nb ERROR\nc\n")
    table = BindingTable()
    release = asyncio.Event()
    seen: list[str] = []

    async def slow(ev: Event) -> None:
        seen.append(ev.text)
        await release.wait()

    table.bind("log", "-|-", f"{path} *ERROR*", slow)
    everything: list[str] = []
    table.bind("log", "-|-", str(path), lambda ev: everything.append(ev.text))
    dispatcher = Dispatcher(table, resolver=lambda ev: None, handler_timeout_s=10)
    worker = asyncio.create_task(dispatcher.run())
    t = LogTailer(cfg(path), dispatcher, store=store, poll_s=0.005)
    try:
        async with running(t):
            await wait_for(lambda: seen == ["b ERROR"] and len(everything) == 3)
            follower = t.followers[str(path)]
            await follower.flush()
            saved = await load_offset(store, "app", str(path))
            assert saved is not None and saved.offset == 2  # "b ERROR" still running
            release.set()
            await dispatcher.drain()
            await follower.flush()
            saved = await load_offset(store, "app", str(path))
            assert saved is not None and saved.offset == path.stat().st_size
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    assert sorted(everything) == ["a", "b ERROR", "c"]  # a path-only mask gets every line


async def test_inode_reuse_is_detected_by_fingerprint(tmp_path: Path, store: SqliteStore) -> None:
    path = tmp_path / "app.log"
    path.write_text("old content one\nold content two\n")
    first = Sink()
    async with running(tailer(cfg(path), first, store)):
        await wait_for(lambda: len(first.events) == 2)
    # same device and inode, different file: rewritten in place while we were down
    ino = path.stat().st_ino
    with path.open("r+") as fh:
        fh.truncate(0)
        fh.write("NEW first line that is long enough\nNEW second\n")
    assert path.stat().st_ino == ino
    second = Sink()
    async with running(tailer(cfg(path), second, store)):
        await wait_for(lambda: len(second.events) == 2)
    assert second.lines == ["NEW first line that is long enough", "NEW second"]


async def test_an_unreadable_path_does_not_stop_the_tailer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "app.log"
    path.mkdir()  # a directory where the log should be
    sink = Sink()
    t = tailer(cfg(path), sink)
    async with running(t):
        await wait_for(lambda: "not a regular file" in caplog.text)
        path.rmdir()
        path.write_text("back\n")
        await wait_for(lambda: len(sink.events) == 1)
    assert sink.lines == ["back"]


async def test_unwanted_lines_are_not_dispatched_but_their_offsets_commit(
    tmp_path: Path, store: SqliteStore
) -> None:
    path = tmp_path / "app.log"
    path.write_text("a\nb ERROR\nc\nd\n")
    sink = Sink()
    t = tailer(cfg(path), sink, store, wanted=lambda key: "ERROR" in key)
    async with running(t):
        await wait_for(lambda: bool(t.followers) and t.followers[str(path)].lines == 4)
    assert sink.lines == ["b ERROR"]
    saved = await load_offset(store, "app", str(path))
    assert saved is not None and saved.offset == path.stat().st_size
