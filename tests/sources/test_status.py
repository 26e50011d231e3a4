"""`masterchief files status` (offline, same store and folders) and `!files` in the bot."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from masterchief.bindings.event import Event
from masterchief.cli import main
from masterchief.config.schema import LogConfig
from masterchief.sources.logs.offsets import LogOffset, save_offset, stored_offsets
from masterchief.sources.logs.tail import LogTailer
from masterchief.sources.status import as_of
from masterchief.store.sqlite import open_store
from tests.harness import TRUST_HOSTMASKS, client_mask, running_bot, wait_until


def _layout(tmp: Path) -> tuple[Path, Path]:
    inbox = tmp / "var" / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "a.json").write_text("{}")
    (inbox / "sub" / "b.csv").write_text("x\n1\n")
    (inbox / "c.json.tmp").write_text("{")  # being written: not pending
    (inbox / "notes.txt").write_text("not a pattern")
    (inbox / ".quarantine").mkdir()
    (inbox / ".quarantine" / "bad.xml").write_text("<x/>")
    (inbox / ".quarantine" / "bad.xml.reason").write_text("entities refused")
    log = tmp / "var" / "log" / "app.log"
    log.parent.mkdir(parents=True)
    log.write_text("one\ntwo\n")
    return inbox, log


def _config(tmp: Path) -> Path:
    cfg = tmp / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "global" / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "store": {"path": "var/mc.db"},
                "files": [{"name": "inbox", "path": "var/inbox"}],
                "logs": [{"name": "app", "path": "var/log/app.log"}],
            }
        )
    )
    return cfg


def _status(cfg: Path) -> list[str]:
    out = CliRunner().invoke(main, ["files", "status", "--config-dir", str(cfg)])
    assert out.exit_code == 0, out.output
    return out.output.splitlines()


def test_files_status_offline(tmp_path: Path) -> None:
    inbox, log = _layout(tmp_path)
    cfg = _config(tmp_path)

    async def seed() -> float:
        store = await open_store(tmp_path / "var" / "mc.db")
        st = log.stat()
        await save_offset(
            store,
            LogOffset(
                name="app",
                path=str(log),
                dev=st.st_dev,
                ino=st.st_ino,
                fingerprint=b"one".hex(),
                offset=4,
                lines_per_s=12.5,
            ),
        )
        ((_, updated_at),) = await stored_offsets(store)
        await store.close()
        return updated_at

    measured = asyncio.run(seed())
    lines = _status(cfg)
    assert lines[0] == (
        f"folder inbox ({inbox}): 2 pending, 0 processed, 0 in flight, 1 quarantined"
    )
    assert lines[1] == f"log app {log}: offset 4 of 8 bytes, 12.5 lines/s (as of {as_of(measured)})"


def test_files_status_offline_shows_the_rate_a_tailer_stored(tmp_path: Path) -> None:
    """The rate comes from a real tailer's flush, not only from a seeded row."""
    _inbox, log = _layout(tmp_path)
    cfg = _config(tmp_path)

    async def tail() -> None:
        async with await open_store(tmp_path / "var" / "mc.db") as store:
            sink = Sink()
            tailer = LogTailer(
                LogConfig(name="app", path=log, start_at="beginning"),
                sink,
                store=store,
                poll_s=0.01,
            )
            task = asyncio.create_task(tailer.run())
            try:
                await wait_until(lambda: sink.done == 2, 15)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    asyncio.run(tail())
    (line,) = [x for x in _status(cfg) if x.startswith("log app")]
    m = re.fullmatch(
        rf"log app {re.escape(str(log))}: offset 8 of 8 bytes, ([0-9.]+) lines/s"
        r" \(as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)",
        line,
    )
    assert m is not None, line
    assert float(m.group(1)) > 0


def test_quarantined_files_are_counted_at_any_depth_without_reason_notes(tmp_path: Path) -> None:
    inbox, _log = _layout(tmp_path)  # .quarantine/bad.xml and its .reason
    deep = inbox / ".quarantine" / "sub" / "deeper"
    deep.mkdir(parents=True)
    (deep / "x.json").write_text("{")
    (deep / "x.json.reason").write_text("not valid JSON")
    (inbox / ".quarantine" / "sub" / "y.csv").write_text("a\n")
    (inbox / ".quarantine" / "sub" / ".y.csv.reason.part").write_text("being written")
    (inbox / ".quarantine" / "sub" / "y.csv.reason").write_text("too big")
    (inbox / ".quarantine" / "link.json").symlink_to(tmp_path)  # a refused link to a folder
    lines = _status(_config(tmp_path))
    assert lines[0].endswith(", 4 quarantined"), lines[0]


class Sink:
    """Finishes every line at once (a dispatcher with no handlers)."""

    def __init__(self) -> None:
        self.done = 0

    async def put(self, *chain: Event, on_done: Callable[[], object] | None = None) -> None:
        self.done += len(chain)
        if on_done is not None:
            on_done()


async def test_files_command_in_the_bot(tmp_path: Path, ircd: Any, irc_client: Any) -> None:
    inbox, log = _layout(tmp_path)
    (inbox / "a.json").unlink()
    (inbox / "sub" / "b.csv").unlink()
    over = {
        "files": [{"name": "inbox", "path": str(inbox), "settle_s": 0.1}],
        "logs": [{"name": "app", "path": str(log), "start_at": "beginning"}],
    }
    async with running_bot(tmp_path, ircd.host, ircd.port, users=TRUST_HOSTMASKS, **over) as app:
        ident = "filesop"
        await app.users.add_user(ident, hostmasks=(client_mask(ident),), flags="o")
        c = await irc_client(username=ident)
        await c.join("#ops")
        me = app.irc.nickname  # type: ignore[union-attr]
        await c.say("#ops", "!files")
        folder = await c.wait_for(rf"^:{me}!\S+ PRIVMSG {c.nick} :folder inbox ")
        assert "0 pending" in folder.text and "1 quarantined" in folder.text
        tail = await c.wait_for(rf"^:{me}!\S+ PRIVMSG {c.nick} :log app ")
        assert str(log) in tail.text and "lines/s" in tail.text
        anon = await irc_client()
        await anon.join("#ops")
        await anon.say("#ops", "!files")
        await anon.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :{anon.nick}: you need ")
