"""Watched folders: safe parsing (tables) and the watcher against real files on disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.core.config import FilesConfig
from masterchief.core.store import Store
from masterchief.ingestion.fileparse import (
    Refused,
    csv_header,
    iter_csv,
    open_checked,
    parse_document,
)
from masterchief.ingestion.files import FileWatcher, ignored_name
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
    store = await Store.open(tmp / "mc.db")
    table = BindingTable()
    dispatcher = Dispatcher(table, handler_timeout_s=10)
    config = FilesConfig(
        name="inbox",
        path=tmp / "inbox",
        settle_s=cfg.pop("settle_s", 0.2),
        channels=("#ops",),
        **cfg,
    )

    async def announce(channel: str, text: str) -> None:
        rig.announced.append((channel, text))

    watcher = FileWatcher([config], dispatcher.put, store, announce=announce)
    rig = Rig(tmp / "inbox", watcher)

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
        await wait_until(lambda: rig.root.is_dir(), 15)
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
        [status] = await rig.watcher.status()
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
from masterchief.core.config import FilesConfig
from masterchief.core.store import Store
from masterchief.ingestion.files import FileWatcher

async def main():
    tmp = Path({tmp!r})
    store = await Store.open(tmp / "mc.db")
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
    repo = str(Path(__file__).resolve().parents[2])
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
    from masterchief.ingestion.fileparse import CSV_FIELD_LIMIT

    async with watching(tmp_path) as rig:
        body = "host,state\nweb-1,up\nweb-2,up\nweb-3," + "x" * (CSV_FIELD_LIMIT + 10) + "\n"
        (rig.root / "hosts.csv.part").write_text(body)
        (rig.root / "hosts.csv.part").rename(rig.root / "hosts.csv")
        await wait_until(lambda: quarantined(rig, "hosts.csv"), 20)
        assert rig.contents == [] or all(len(c) <= 2 for c in rig.contents)
        reason = (rig.root / ".quarantine" / "hosts.csv.reason").read_text()
        assert "after 2 rows" in reason
        assert not (rig.root / ".processed" / "hosts.csv").exists()
