"""Watched folders: safe parsing (tables) and the watcher against real files on disk."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.config.schema import FilesConfig
from masterchief.sources.files import watcher as files_module
from masterchief.sources.files.parse import (
    Refused,
    csv_header,
    iter_csv,
    open_checked,
    parse_document,
)
from masterchief.sources.files.watcher import FileWatcher, ignored_name
from masterchief.store.api import FileIdentity, FileState, LedgerEntry
from masterchief.store.sqlite import SqliteStore, open_store
from tests.harness import wait_until

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lolz>&lol4;</lolz>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<foo>&xxe;</foo>"""
YAML_RCE = b"!!python/object/new:os.system [echo pwned]\n"


# --- pure parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "data", "expected"),
    [
        ("json", b'{"a": [1, 2]}', {"a": [1, 2]}),
        ("yaml", b"a: [1, 2]\nb: x\n", {"a": [1, 2], "b": "x"}),
        ("yaml", b"", None),
    ],
)
def test_parse_documents(fmt: str, data: bytes, expected: object) -> None:
    assert parse_document(fmt, data) == expected


def test_parse_xml_document() -> None:
    root = parse_document("xml", b"<hosts><host name='a'/><host name='b'/></hosts>")
    assert [h.get("name") for h in root.findall("host")] == ["a", "b"]


@pytest.mark.parametrize(
    ("fmt", "data", "reason"),
    [
        ("json", b"{nope", "not valid JSON"),
        ("yaml", YAML_RCE, "not valid (safe) YAML"),
        ("yaml", b"a: [1, 2\n", "not valid (safe) YAML"),
        ("xml", BILLION_LAUGHS, "XML with a DTD or entities is refused"),
        ("xml", XXE, "XML with a DTD or entities is refused"),
        ("xml", b"<a><b></a>", "not valid XML"),
        ("toml", b"a = 1", "unsupported format"),
    ],
)
def test_parse_refuses(fmt: str, data: bytes, reason: str) -> None:
    with pytest.raises(Refused) as info:
        parse_document(fmt, data)
    assert info.value.reason == reason
    assert "root:" not in str(info.value)  # /etc/passwd never read


def test_csv_streams_rows(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("host,port\nweb1,80\nweb2,443\n")
    with p.open("rb") as fh:
        rows = iter_csv(fh, 1000)
        assert next(rows) == {"host": "web1", "port": "80"}
        assert list(rows) == [{"host": "web2", "port": "443"}]


def test_csv_byte_limit_while_streaming(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("h\n" + "x\n" * 100)
    with p.open("rb") as fh:
        rows = iter_csv(fh, 50)
        with pytest.raises(Refused, match="size limit"):
            list(rows)


def test_csv_field_limit(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text('h\n"' + "x\n" * 70_000 + '"\n')
    with p.open("rb") as fh, pytest.raises(Refused):
        list(iter_csv(fh, 10**7))


@pytest.mark.parametrize(
    ("data", "ok"), [(b"a,b\n1,2\n", True), (b"\n", False), (b"\xff\xfe,a\n", False)]
)
def test_csv_header(data: bytes, ok: bool) -> None:
    if ok:
        assert csv_header(data) == ["a", "b"]
    else:
        with pytest.raises(Refused):
            csv_header(data)


@pytest.mark.parametrize(
    ("name", "ignored"),
    [("a.json", False), (".a.json", True), ("a.json.tmp", True), ("a.part", True)],
)
def test_ignored_names(name: str, ignored: bool) -> None:
    assert ignored_name(name) is ignored


def _refusal(path: Path, root: Path, max_bytes: int = 1000) -> str:
    with pytest.raises(Refused) as info:
        fh, _ = open_checked(path, root, max_bytes)
        fh.close()
    return info.value.reason


def test_open_checked(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (tmp_path / "outside.json").write_text("{}")
    (root / "ok.json").write_text("{}")
    (root / "big.json").write_text("x" * 2000)
    (root / "shadow.json").symlink_to("/etc/shadow")
    os.mkfifo(root / "fifo.json")
    fh, st = open_checked(root / "ok.json", root, 1000)
    fh.close()
    assert st.st_size == 2
    assert _refusal(root / "../outside.json", root) == "outside the watched folder"
    assert _refusal(root / "shadow.json", root) == "symlinks are not read"
    assert _refusal(root / "big.json", root) == "over the size limit"
    assert _refusal(root / "fifo.json", root) == "not a regular file"
    assert _refusal(root / "gone.json", root) == "file vanished"


# --- the watcher on real files --------------------------------------------------------


@dataclass
class Rig:
    root: Path
    watcher: FileWatcher
    table: BindingTable
    events: list[Event] = field(default_factory=list)
    contents: list[Any] = field(default_factory=list)
    announced: list[tuple[str, str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def watching(
    tmp: Path,
    handler: Callable[[Rig, Event], Any] | None = None,
    *,
    mask: str = "*",
    **cfg: Any,
) -> AsyncIterator[Rig]:
    store = await open_store(tmp / "mc.db")
    table = BindingTable()
    dispatcher = Dispatcher(table, handler_timeout_s=10)
    config = FilesConfig(
        name="inbox",
        path=cfg.pop("path", tmp / "inbox"),
        settle_s=cfg.pop("settle_s", 0.2),
        channels=("#ops",),
        **cfg,
    )

    async def announce(channel: str, text: str) -> None:
        rig.announced.append((channel, text))

    watcher = FileWatcher([config], dispatcher.put, store, announce=announce)
    rig = Rig(tmp / "inbox", watcher, table)

    def default(ev: Event) -> None:
        rig.events.append(ev)
        content = ev.payload["content"]
        rig.contents.append(list(content) if ev.payload["format"] == "csv" else content)

    if handler is None:
        table.bind("file", "-|-", mask, default)
    else:

        async def wrapped(ev: Event) -> None:
            await handler(rig, ev)

        table.bind("file", "-|-", mask, wrapped)
    tasks = [asyncio.create_task(dispatcher.run()), asyncio.create_task(watcher.run())]
    try:
        # the observer is set once it watches: a file written now raises its events
        await wait_until(lambda: rig.root.is_dir() and watcher._observer is not None, 15)
        yield rig
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


def processed(rig: Rig, name: str) -> bool:
    return (rig.root / ".processed" / name).exists() and not (rig.root / name).exists()


def quarantined(rig: Rig, name: str) -> bool:
    return (rig.root / ".quarantine" / (name + ".reason")).exists()


def drop(path: Path, text: str) -> None:
    """Write-then-rename: no close-write on the final name, so the file waits
    ``settle_s`` like one found by a scan, and is read after those noticed before."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    part.rename(path)


async def test_every_format_and_move_after(tmp_path: Path) -> None:
    async with watching(tmp_path) as rig:
        (rig.root / "sub").mkdir()
        (rig.root / "a.json").write_text('{"x": 1}')
        (rig.root / "b.yaml").write_text("y: 2\n")
        (rig.root / "sub" / "c.xml").write_text("<r><i>3</i></r>")
        (rig.root / "d.csv").write_text("k,v\na,1\nb,2\n")
        (rig.root / "notes.txt").write_text("ignored: no pattern")
        await wait_until(lambda: len(rig.events) == 4, 20)
        by_name = {Path(e.key).name: (e, c) for e, c in zip(rig.events, rig.contents, strict=True)}
        assert by_name["a.json"][1] == {"x": 1}
        assert by_name["b.yaml"][1] == {"y": 2}
        assert by_name["c.xml"][1].find("i").text == "3"
        assert by_name["d.csv"][1] == [{"k": "a", "v": "1"}, {"k": "b", "v": "2"}]
        ev = by_name["a.json"][0]
        assert ev.type == "file" and ev.source == "files"
        assert ev.key == str(rig.root.resolve() / "a.json")
        assert ev.payload["format"] == "json" and ev.payload["size"] == 8
        assert ev.payload["redelivery"] is False and ev.payload["watch"] == "inbox"
        await wait_until(lambda: processed(rig, "a.json") and processed(rig, "sub/c.xml"), 15)
        assert (rig.root / "notes.txt").exists()
        # a file is counted once its ledger row is done, just after its handlers ran:
        # wait for the count (with a deadline) rather than read it at once
        await wait_until(lambda: rig.watcher.watches[0].stats.dispatched == 4, 15)
        assert rig.watcher.watches[0].stats.dispatched == 4


async def test_nested_directories_created_at_once_keep_the_observer_alive(
    tmp_path: Path,
) -> None:
    # watchdog registers a directory made right under another new one twice and
    # warns; under -W error (our test setting) that killed the observer thread.
    async with watching(tmp_path) as rig:
        for i in range(30):
            os.makedirs(rig.root / f"n{i}" / "a" / "b" / "c")
        (rig.root / "n29" / "a" / "b" / "c" / "deep.json").write_text("[29]")
        await wait_until(lambda: len(rig.events) == 1, 20)
        assert rig.contents == [[29]]
        assert rig.watcher._observer is not None and rig.watcher._observer.is_alive()


async def test_mask_matches_path_and_delete_after(tmp_path: Path) -> None:
    async with watching(tmp_path, mask="*/inbox/*.json", after="delete") as rig:
        (rig.root / "a.json").write_text("[1]")
        (rig.root / "b.yaml").write_text("[2]")
        await wait_until(lambda: not (rig.root / "a.json").exists(), 20)
        await wait_until(lambda: not (rig.root / "b.yaml").exists(), 20)
        assert [Path(e.key).name for e in rig.events] == ["a.json"]
        assert not (rig.root / ".processed").exists()


async def test_scan_at_start_and_write_then_rename(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "early.json").write_text('"arrived while down"')
    async with watching(tmp_path) as rig:
        await wait_until(lambda: len(rig.events) == 1, 20)
        assert rig.contents == ["arrived while down"]
        tmp = rig.root / "late.json.tmp"
        tmp.write_text('{"late": true}')
        (rig.root / ".hidden.json").write_text("{}")
        tmp.rename(rig.root / "late.json")
        await wait_until(lambda: len(rig.events) == 2, 20)
        assert rig.contents[1] == {"late": True}
        await wait_until(lambda: processed(rig, "late.json"), 15)
        assert (rig.root / ".hidden.json").exists()
        assert len(rig.events) == 2


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("lol.xml", BILLION_LAUGHS, "XML with a DTD or entities is refused"),
        ("xxe.xml", XXE, "XML with a DTD or entities is refused"),
        ("rce.yaml", YAML_RCE, "not valid (safe) YAML"),
        ("big.json", b"[" + b"1," * 600 + b"1]", "over the size limit"),
        ("bad.json", b"{", "not valid JSON"),
        ("bad.csv", b"\xff\xfe\n", "CSV is not valid UTF-8"),
    ],
)
async def test_hostile_files_quarantined(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    async with watching(tmp_path, max_bytes=1024) as rig:
        (rig.root / name).write_bytes(data)
        (rig.root / "after.json").write_text("{}")  # the watcher keeps going
        await wait_until(lambda: quarantined(rig, name) and len(rig.events) == 1, 20)
        assert (rig.root / ".quarantine" / name).read_bytes() == data
        assert (rig.root / ".quarantine" / (name + ".reason")).read_text().strip() == reason
        assert not (rig.root / name).exists()
        assert [Path(e.key).name for e in rig.events] == ["after.json"]
        assert len(rig.announced) == 1
        channel, text = rig.announced[0]
        assert channel == "#ops" and name in text and reason in text
        assert str(tmp_path) not in text  # no paths in channels


async def test_symlink_to_shadow_quarantined(tmp_path: Path) -> None:
    async with watching(tmp_path) as rig:
        (rig.root / "shadow.json").symlink_to("/etc/shadow")
        await wait_until(lambda: quarantined(rig, "shadow.json"), 20)
        moved = rig.root / ".quarantine" / "shadow.json"
        assert moved.is_symlink() and os.readlink(moved) == "/etc/shadow"
        assert rig.events == []
        assert len(rig.announced) == 1 and "symlinks are not read" in rig.announced[0][1]


async def test_traversal_refused_and_outside_file_untouched(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": 1}')
    async with watching(tmp_path) as rig:
        watch = rig.watcher.watches[0]
        await rig.watcher.process(watch, watch.root / ".." / "outside.json")
        assert outside.read_text() == '{"secret": 1}'
        reason = rig.root / ".quarantine" / "outside.json.reason"
        assert reason.read_text().strip() == "outside the watched folder"
        assert rig.events == []


async def test_slow_copy_read_once_complete(tmp_path: Path) -> None:
    doc = {"items": list(range(3000))}
    data = json.dumps(doc).encode()
    chunks = [data[i : i + 2000] for i in range(0, len(data), 2000)]
    async with watching(tmp_path, settle_s=1.0) as rig:
        with (rig.root / "slow.json").open("wb") as fh:
            for chunk in chunks[:8]:  # ~2.4 s of trickling, pauses below settle_s
                fh.write(chunk)
                fh.flush()
                await asyncio.sleep(0.3)
            assert rig.events == [] and not quarantined(rig, "slow.json")
            for chunk in chunks[8:]:
                fh.write(chunk)
        await wait_until(lambda: len(rig.events) == 1, 20)
        await wait_until(lambda: processed(rig, "slow.json"), 15)
        assert rig.contents == [doc]
        assert len(rig.events) == 1


async def test_same_file_twice_and_renamed(tmp_path: Path) -> None:
    async with watching(tmp_path) as rig:
        (rig.root / "a.json").write_text('{"same": 1}')
        await wait_until(lambda: processed(rig, "a.json"), 20)
        (rig.root / "b.json").write_text('{"same": 1}')
        await wait_until(lambda: processed(rig, "b.json"), 20)
        assert len(rig.events) == 1
        assert rig.watcher.watches[0].stats.duplicates == 1
        [status] = await rig.watcher.folder_status()
        assert status["processed"] == 1 and status["duplicates"] == 1
        assert status["pending"] == 0 and status["in_flight"] == 0
    # and again after a restart
    async with watching(tmp_path) as rig:
        (rig.root / "c.json").write_text('{"same": 1}')
        await wait_until(lambda: processed(rig, "c.json"), 20)
        assert rig.events == []


async def test_restart_between_dispatch_and_done_redelivers_once(tmp_path: Path) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def stuck(rig: Rig, ev: Event) -> None:
        rig.events.append(ev)
        started.set()
        await gate.wait()

    async with watching(tmp_path, stuck) as rig:
        (rig.root / "job.json").write_text('{"job": 7}')
        await asyncio.wait_for(started.wait(), 10)
        # the "crash": the bot stops while the handler is still running
    gate.set()
    assert (tmp_path / "inbox" / "job.json").exists()
    async with watching(tmp_path) as rig:
        await wait_until(lambda: processed(rig, "job.json"), 20)
        assert len(rig.events) == 1
        assert rig.events[0].payload["redelivery"] is True
        assert rig.contents == [{"job": 7}]
    async with watching(tmp_path) as rig:
        (rig.root / "other.json").write_text("{}")
        await wait_until(lambda: processed(rig, "other.json"), 20)
        assert [Path(e.key).name for e in rig.events] == ["other.json"]
        assert rig.events[0].payload["redelivery"] is False


# --- end to end: the App's watcher, a binding, and the report in the channel -------------


async def test_app_watches_and_reports_refused_files_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, irc_client
) -> None:
    from tests.harness import running_bot

    over: dict[str, Any] = {
        "web": {"enabled": False},
        "files": [{"name": "inbox", "path": "inbox", "settle_s": 0.2, "channels": ["#ops"]}],
    }
    watcher = await irc_client()
    await watcher.join("#ops")
    async with running_bot(tmp_path, ircd.host, ircd.port, **over) as app:
        got: list[Event] = []
        app.table.bind("file", "-|-", "*/inbox/*.json", got.append, owner="test")
        inbox = tmp_path / "inbox"
        await wait_until(inbox.is_dir, 15)
        (inbox / "ok.json").write_text('{"ok": true}')
        (inbox / "evil.xml").write_bytes(XXE)
        nick = app.irc.nickname  # type: ignore[union-attr]
        line = await watcher.wait_for(rf"^:{nick}!\S+ PRIVMSG #ops :files/inbox: refused", 15)
        assert "'evil.xml'" in line.text and str(tmp_path) not in line.text
        await wait_until(lambda: len(got) == 1, 20)
        assert got[0].payload["content"] == {"ok": True}
        await watcher.expect_none(rf"^:{nick}!\S+ PRIVMSG #ops :files/", within=1.0)
    assert (inbox / ".processed" / "ok.json").exists()
    assert (inbox / ".quarantine" / "evil.xml.reason").exists()


CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.registry import BindingTable
from masterchief.config.schema import FilesConfig
from masterchief.store.sqlite import SqliteStore, open_store
from masterchief.sources.files.watcher import FileWatcher

async def main():
    tmp = Path({tmp!r})
    store = await open_store(tmp / "mc.db")
    table = BindingTable()
    dispatcher = Dispatcher(table)
    def die(ev):
        os.kill(os.getpid(), signal.SIGKILL)  # the crash: after dispatch, before done
    table.bind("file", "-|-", "*", die)
    cfg = FilesConfig(name="inbox", path=tmp / "inbox", settle_s=0.1)
    watcher = FileWatcher([cfg], dispatcher.put, store)
    await asyncio.gather(dispatcher.run(), watcher.run())

asyncio.run(main())
"""


async def test_killed_process_redelivers_once_after_restart(tmp_path: Path) -> None:
    repo = str(Path(__file__).resolve().parents[3])
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "job.json").write_text('{"job": 9}')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD.format(repo=repo, tmp=str(tmp_path))
    )
    assert await asyncio.wait_for(proc.wait(), 30) == -9
    assert (tmp_path / "inbox" / "job.json").exists()
    async with watching(tmp_path) as rig:
        await wait_until(lambda: processed(rig, "job.json"), 20)
        assert [e.payload["redelivery"] for e in rig.events] == [True]
        assert rig.contents == [{"job": 9}]


async def test_200_mb_file_over_the_default_limit_is_quarantined_unread(tmp_path: Path) -> None:
    """The issue's case as stated: 200 MB against the default max_bytes (100 MiB).
    The file is sparse, so the test writes almost nothing to disk."""
    async with watching(tmp_path, max_bytes=104_857_600) as rig:
        big = rig.root / "export.json.part"
        with big.open("wb") as fh:
            fh.truncate(200 * 1024 * 1024)
        big.rename(rig.root / "export.json")
        await wait_until(lambda: quarantined(rig, "export.json"), 20)
        assert rig.events == []
        reason = (rig.root / ".quarantine" / "export.json.reason").read_text()
        assert "larger than" in reason or "too large" in reason or "limit" in reason, reason


async def test_csv_broken_past_the_header_is_quarantined_after_its_rows(tmp_path: Path) -> None:
    from masterchief.sources.files.parse import CSV_FIELD_LIMIT

    async with watching(tmp_path) as rig:
        body = "host,state\nweb-1,up\nweb-2,up\nweb-3," + "x" * (CSV_FIELD_LIMIT + 10) + "\n"
        (rig.root / "hosts.csv.part").write_text(body)
        (rig.root / "hosts.csv.part").rename(rig.root / "hosts.csv")
        await wait_until(lambda: quarantined(rig, "hosts.csv"), 20)
        assert rig.contents == [] or all(len(c) <= 2 for c in rig.contents)
        reason = (rig.root / ".quarantine" / "hosts.csv.reason").read_text()
        assert "after 2 rows" in reason
        assert not (rig.root / ".processed" / "hosts.csv").exists()


# --- CSV rows: every binding reads them all --------------------------------------------


def _csv(rows: list[dict[str, str]]) -> str:
    return "host,state\n" + "".join(f"{r['host']},{r['state']}\n" for r in rows)


async def test_csv_rows_reach_every_binding(tmp_path: Path) -> None:
    rows = [{"host": f"web{i}", "state": "up"} for i in range(50)]
    passes: list[tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]]]] = []
    kept: list[Any] = []

    def interleaved(ev: Event) -> None:
        content = ev.payload["content"]
        kept.append(content)
        first = iter(content)
        head = next(first)
        whole = list(content)  # a second pass while the first is half read
        passes.append((head, whole, list(first)))

    async with watching(tmp_path, mask="*.csv") as rig:
        rig.table.bind("file", "-|-", "*/inbox/*", interleaved)
        (rig.root / "hosts.csv.part").write_text(_csv(rows))
        (rig.root / "hosts.csv.part").rename(rig.root / "hosts.csv")
        await wait_until(lambda: processed(rig, "hosts.csv"), 20)
        assert rig.contents == [rows]  # the other binding (same file) saw every row too
        assert passes == [(rows[0], rows, rows[1:])]
        with pytest.raises(ValueError, match="processed"):
            iter(kept[0])  # the rows are for the handlers, while they run


async def test_broken_csv_with_two_bindings_is_quarantined_after_its_rows(
    tmp_path: Path,
) -> None:
    from masterchief.sources.files.parse import CSV_FIELD_LIMIT

    got: dict[str, list[dict[str, str]]] = {}

    def collector(name: str) -> Callable[[Event], None]:
        def collect(ev: Event) -> None:
            rows = got.setdefault(name, [])
            rows.extend(ev.payload["content"])  # raises at the broken row

        return collect

    async with watching(tmp_path, mask="*.nothing") as rig:
        rig.table.bind("file", "-|-", "*.csv", collector("a"))
        rig.table.bind("file", "-|-", "*/inbox/*", collector("b"))
        body = "host,state\nweb-1,up\nweb-2,up\nweb-3," + "x" * (CSV_FIELD_LIMIT + 10) + "\n"
        (rig.root / "hosts.csv.part").write_text(body)
        (rig.root / "hosts.csv.part").rename(rig.root / "hosts.csv")
        await wait_until(lambda: quarantined(rig, "hosts.csv"), 20)
        two = [{"host": "web-1", "state": "up"}, {"host": "web-2", "state": "up"}]
        assert got == {"a": two, "b": two}
        reason = (rig.root / ".quarantine" / "hosts.csv.reason").read_text()
        assert reason.strip() == "not valid CSV (after 2 rows)"


# --- close-write -----------------------------------------------------------------------


async def test_closed_file_is_read_without_waiting_to_settle(tmp_path: Path) -> None:
    async with watching(tmp_path, settle_s=30) as rig:
        (rig.root / "quick.json").write_text('{"closed": true}')
        # well before settle_s: the close-write said the file is complete
        await wait_until(lambda: len(rig.events) == 1, 15)
        assert rig.contents == [{"closed": True}]


async def test_append_after_close_is_read_in_its_final_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written and closed, then reopened and appended to before the watcher's
    quiet tick: the close no longer counts, the file is read after its last close.

    The real watchdog events of the file (created, modified, closed, modified)
    are held until the append's has arrived and then handed to the watcher in
    one go, so no tick can fall between the close and the append: the test
    does not race the watcher's timer."""
    async with watching(tmp_path, settle_s=30) as rig:
        watch = rig.watcher.watches[0]
        real = rig.watcher.notice
        held: list[tuple[Path, bool]] = []
        released = False

        def notice(w: Any, path: Path, closed: bool = False) -> None:
            nonlocal released
            if released or path.name != "grow.json":
                real(w, path, closed)
                return
            held.append((path, closed))
            if not closed and any(c for _, c in held):
                released = True
                for p, c in held:
                    real(w, p, c)

        monkeypatch.setattr(rig.watcher, "notice", notice)
        target = rig.root / "grow.json"
        with target.open("w") as fh:
            fh.write("[1,")
        writer = target.open("a")
        try:
            writer.write("2")
            writer.flush()
            await wait_until(lambda: released, 15)
            key = held[0][0]

            def looked_at() -> bool:
                p = watch.pending.get(key)
                st = os.stat(target)
                return p is None or p.sig == (st.st_size, st.st_mtime_ns)

            await wait_until(looked_at, 15)  # a tick has seen the file as it is now
            # a file closed now needs two more ticks: by the time it is read, the
            # open grow.json would have been read (and quarantined) if it were ready
            (rig.root / "probe.json").write_text("[0]")
            await wait_until(lambda: len(rig.events) == 1, 15)
            assert [Path(e.key).name for e in rig.events] == ["probe.json"]
            assert target.exists() and not quarantined(rig, "grow.json")
            writer.write("]")
        finally:
            writer.close()
        await wait_until(lambda: len(rig.events) == 2, 15)
        assert rig.contents[1] == [1, 2]
        assert not quarantined(rig, "grow.json")


# --- the ledger: identity before content -------------------------------------------------


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the files the watcher hashes."""
    calls: list[int] = []

    def counting(*data: bytes) -> Any:
        calls.append(1)
        return hashlib.sha256(*data)

    monkeypatch.setattr(files_module, "_hasher", counting)
    return calls


async def test_known_identity_is_not_hashed_again(
    tmp_path: Path, hashed: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    states: list[tuple[str, str]] = []
    real_put = SqliteStore.file_ledger_put

    async def spy(self: SqliteStore, entry: LedgerEntry) -> None:
        states.append((entry.hash, entry.state))
        await real_put(self, entry)

    monkeypatch.setattr(SqliteStore, "file_ledger_put", spy)
    gate = asyncio.Event()
    started = asyncio.Event()

    async def stuck(rig: Rig, ev: Event) -> None:
        rig.events.append(ev)
        started.set()
        await gate.wait()

    rows = [{"host": "web1", "state": "up"}, {"host": "web2", "state": "down"}]
    async with watching(tmp_path, stuck) as rig:
        (rig.root / "hosts.csv").write_text(_csv(rows))
        await asyncio.wait_for(started.wait(), 15)
        digest = rig.events[0].payload["hash"]
        assert hashed == [1]
        assert states == [(digest, "seen"), (digest, "dispatched")]
        # the "crash": the bot stops while the handler is still running
    gate.set()
    async with watching(tmp_path) as rig:
        await wait_until(lambda: processed(rig, "hosts.csv"), 20)
        assert hashed == [1]  # the restart's scan knew the file by its identity
        assert [e.payload["redelivery"] for e in rig.events] == [True]
        assert rig.events[0].payload["hash"] == digest
        assert rig.contents == [rows]
        assert states[2:] == [(digest, "dispatched"), (digest, "done")]
        # a copy has a new identity: hashed, and known by its content
        (rig.root / "copy.csv").write_text(_csv(rows))
        await wait_until(lambda: processed(rig, "copy.csv"), 20)
        assert hashed == [1, 1]
        assert len(rig.events) == 1 and rig.watcher.watches[0].stats.duplicates == 1


async def test_seen_row_found_by_identity_is_dispatched_after_restart(
    tmp_path: Path, hashed: list[int]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "seen.json").write_text('{"n": 1}')
    (inbox / "reused.json").write_text('{"n": 2}')
    store = await open_store(tmp_path / "mc.db")
    ledger: list[tuple[str, str, FileState]] = [
        ("seen", "digest-seen", "seen"),
        ("reused", "digest-old", "done"),
    ]
    for name, digest, state in ledger:
        st = (inbox / f"{name}.json").stat()
        identity = FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        await store.file_ledger_put(
            LedgerEntry("inbox", digest, identity, str(inbox / f"{name}.json"), state)
        )
    await store.close()
    at_handler: dict[str, str | None] = {}

    async def check(rig: Rig, ev: Event) -> None:
        rig.events.append(ev)
        row = await rig.watcher._store.file_ledger_get("inbox", ev.payload["hash"])
        at_handler[ev.payload["name"]] = row.state if row else None

    async with watching(tmp_path, check) as rig:
        await wait_until(lambda: processed(rig, "seen.json") and processed(rig, "reused.json"), 20)
        by_name = {e.payload["name"]: e.payload for e in rig.events}
        # a "seen" identity is that file: its recorded digest, no hashing, a first delivery
        assert by_name["seen.json"]["hash"] == "digest-seen"
        assert by_name["seen.json"]["redelivery"] is False
        # a "done" identity is not trusted alone (its inode may have been reused): hashed
        assert by_name["reused.json"]["hash"] == hashlib.sha256(b'{"n": 2}').hexdigest()
        assert hashed == [1]
        assert at_handler == {"seen.json": "dispatched", "reused.json": "dispatched"}
        row = await rig.watcher._store.file_ledger_get("inbox", "digest-seen")
        assert row is not None and row.state == "done"


# --- hostile paths through the watcher ---------------------------------------------------


async def test_symlinked_directory_to_outside_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secrets = {"early.json": '{"secret": 1}'}
    (outside / "early.json").write_text(secrets["early.json"])
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "ext").symlink_to(outside, target_is_directory=True)  # at start
    async with watching(tmp_path) as rig:
        (rig.root / "later").symlink_to(outside, target_is_directory=True)  # while watching
        secrets["late.json"] = '{"secret": 2}'
        (outside / "late.json").write_text(secrets["late.json"])
        secrets["via.json"] = '{"secret": 3}'
        (rig.root / "ext" / "via.json").write_text(secrets["via.json"])
        (rig.root / "linked.json").symlink_to(outside / "early.json")  # a symlinked file
        await wait_until(lambda: quarantined(rig, "linked.json"), 20)
        # paths settle in the order they are noticed: anything seen through the
        # links would have been handled before this one
        drop(rig.root / "sync.json", "{}")
        await wait_until(lambda: processed(rig, "sync.json"), 20)
        assert [Path(e.key).name for e in rig.events] == ["sync.json"]
        assert {p.name: p.read_text() for p in outside.iterdir()} == secrets
        assert sorted(p.name for p in (rig.root / ".quarantine").iterdir()) == [
            "linked.json",
            "linked.json.reason",
        ]
        assert (rig.root / ".quarantine" / "linked.json").is_symlink()
        assert (rig.root / "ext").is_symlink() and (rig.root / "later").is_symlink()
        assert len(rig.announced) == 1 and "symlinks are not read" in rig.announced[0][1]


async def test_fifo_is_refused_without_blocking_the_watcher(tmp_path: Path) -> None:
    async with watching(tmp_path) as rig:
        os.mkfifo(rig.root / "x.json")
        await wait_until(lambda: quarantined(rig, "x.json"), 20)
        (rig.root / "after.json").write_text('"next"')  # the watcher was not blocked
        await wait_until(lambda: len(rig.events) == 1, 20)
        assert rig.contents == ["next"]
        moved = rig.root / ".quarantine" / "x.json"
        assert stat.S_ISFIFO(os.lstat(moved).st_mode)
        assert (rig.root / ".quarantine" / "x.json.reason").read_text().strip() == (
            "not a regular file"
        )


# --- small cases -------------------------------------------------------------------------


async def test_not_recursive_ignores_subfolders(tmp_path: Path) -> None:
    (tmp_path / "inbox" / "old").mkdir(parents=True)
    (tmp_path / "inbox" / "old" / "a.json").write_text("[1]")  # found by no start scan
    async with watching(tmp_path, recursive=False) as rig:
        (rig.root / "new").mkdir()
        (rig.root / "new" / "b.json").write_text("[2]")
        (rig.root / "old" / "c.json").write_text("[3]")
        drop(rig.root / "top.json", "[0]")  # read after anything noticed before it
        await wait_until(lambda: processed(rig, "top.json"), 20)
        assert rig.contents == [[0]]
        for name in ("old/a.json", "new/b.json", "old/c.json"):
            assert (rig.root / name).exists(), name


async def test_yml_parses_like_yaml_and_path_is_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with watching(tmp_path, path=Path("inbox")) as rig:  # a relative folder
        (rig.root / "hosts.yml").write_text("hosts: [web1, web2]\n")
        await wait_until(lambda: len(rig.events) == 1, 20)
        [ev] = rig.events
        assert rig.contents == [{"hosts": ["web1", "web2"]}]
        assert ev.payload["format"] == "yaml"
        assert ev.payload["path"] == str(tmp_path.resolve() / "inbox" / "hosts.yml")
        assert Path(ev.payload["path"]).is_absolute()


async def test_refused_file_is_logged_at_warning_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="masterchief.files")
    async with watching(tmp_path) as rig:
        (rig.root / "bad.json").write_text("{nope")
        await wait_until(lambda: quarantined(rig, "bad.json"), 20)
    records = [
        r for r in caplog.records if r.name == "masterchief.files" and "bad.json" in r.getMessage()
    ]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "not valid JSON" in records[0].getMessage()
