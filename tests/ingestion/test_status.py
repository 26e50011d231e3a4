"""`masterchief files status` (offline, same store and folders) and `!files` in the bot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from masterchief.cli import main
from masterchief.core.store import Store
from tests.harness import running_bot


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


def test_files_status_offline(tmp_path: Path) -> None:
    inbox, log = _layout(tmp_path)
    cfg = tmp_path / "config"
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

    async def seed() -> None:
        store = await Store.open(tmp_path / "var" / "mc.db")
        st = log.stat()
        await store.log_offset_save(
            "app", str(log), dev=st.st_dev, ino=st.st_ino, fingerprint=b"one", offset=4
        )
        await store.close()

    asyncio.run(seed())
    out = CliRunner().invoke(main, ["files", "status", "--config-dir", str(cfg)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == (
        f"folder inbox ({inbox}): 2 pending, 0 processed, 0 in flight, 1 quarantined"
    )
    assert lines[1] == f"log app {log}: offset 4 of 8 bytes"


async def test_files_command_in_the_bot(tmp_path: Path, ircd: Any, irc_client: Any) -> None:
    inbox, log = _layout(tmp_path)
    (inbox / "a.json").unlink()
    (inbox / "sub" / "b.csv").unlink()
    over = {
        "files": [{"name": "inbox", "path": str(inbox), "settle_s": 0.1}],
        "logs": [{"name": "app", "path": str(log), "start_at": "beginning"}],
    }
    async with running_bot(tmp_path, ircd.host, ircd.port, **over) as app:
        ident = "filesop"
        await app.users.add_user(ident, hostmasks=(f"*!{ident}@*",), flags="o")
        c = await irc_client(username=ident)
        await c.join("#ops")
        me = app.irc.nickname  # type: ignore[union-attr]
        await c.say("#ops", "!files")
        folder = await c.wait_for(rf"^:{me}!\S+ NOTICE {c.nick} :folder inbox ")
        assert "0 pending" in folder.text and "1 quarantined" in folder.text
        tail = await c.wait_for(rf"^:{me}!\S+ NOTICE {c.nick} :log app ")
        assert str(log) in tail.text and "lines/s" in tail.text
        anon = await irc_client()
        await anon.join("#ops")
        await anon.say("#ops", "!files")
        await anon.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :{anon.nick}: you need ")
