"""``!rehash`` changes sources live: a tailed log and a watched folder added to
the configuration start without a restart, a removed one stops, and the
restart list names only what truly needs one.  ``masterchief sources
status`` shows, offline, what the bot last stored."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from masterchief.cli import main
from masterchief.config.engine import load_config
from tests.harness import client_mask, running_bot, wait_until


def _write(cfg: Path, *parts: str) -> None:
    text = "".join(textwrap.dedent(p) for p in parts)
    (cfg / "global" / "config.yaml").write_text(text)


def _base(tmp: Path, ircd: Any) -> str:
    return f"""\
    irc: {{host: {ircd.host}, port: {ircd.port}, channels: ["#ops"],
          output: {{burst: 200, rate: 1000.0, recvq: 1048576}}}}
    bot: {{scripts: ["{tmp / "scripts"}"], flood: {{commands: 1000}}}}
    users: {{hostmask_flags_on_account_networks: true}}
    store: {{path: "{tmp / "mc.db"}"}}
    web: {{enabled: false}}
    """


async def test_rehash_adds_and_removes_sources_without_a_restart(
    tmp_path: Path, ircd: Any, irc_client: Any
) -> None:
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "echo.py").write_text(
        "from masterchief import bind, say\n"
        "@bind('log', '-|-', '*')\n"
        "def on_line(ev):\n"
        "    say('#ops', 'log: ' + ev.text)\n"
        "@bind('file', '-|-', '*')\n"
        "def on_file(ev):\n"
        "    say('#ops', 'file: ' + ev.payload['name'])\n"
    )
    log = tmp_path / "app.log"
    log.write_text("")
    inbox = tmp_path / "inbox"
    base = _base(tmp_path, ircd)
    _write(cfg, base)
    async with running_bot(tmp_path, ircd.host, ircd.port, config=load_config(cfg)) as app:
        me = app.irc.nickname  # type: ignore[union-attr]
        ident = "rehasher"
        await app.users.add_user(ident, hostmasks=(client_mask(ident),), flags="m")
        c = await irc_client(username=ident)
        await c.join("#ops")
        started = app.started
        assert app.sources.find("logs", "app") is None

        _write(
            cfg,
            base,
            f"""\
            logs: [{{name: app, path: "{log}", start_at: end}}]
            files: [{{name: inbox, path: "{inbox}", settle_s: 0.1}}]
            """,
        )
        await c.say("#ops", "!rehash")
        changed = await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :rehash: sources ", 15)
        assert "logs:app added" in changed.text and "files:inbox added" in changed.text
        await c.expect_none(r"needs a restart", within=0.3)
        assert app.started == started  # the same bot: nothing restarted

        await wait_until(lambda: inbox.is_dir(), 15)  # the watcher runs: it made its folder
        await wait_until(lambda: bool(app.sources.find("logs", "app").followers), 15)  # type: ignore[union-attr]
        with log.open("a") as fh:
            fh.write("deploy finished\n")
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :log: deploy finished$", 15)
        (inbox / "order.json").write_text(json.dumps({"id": 1}))
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :file: order.json$", 15)

        # removed from the configuration: the tailer stops, the folder watcher too
        _write(cfg, base)
        report = app.rehash()
        assert sorted(report.sources_changed) == ["files:inbox removed", "logs:app removed"]
        assert report.restart_needed == ()
        with log.open("a") as fh:
            fh.write("after removal\n")
        (inbox / "late.json").write_text("{}")
        await c.expect_none(r"PRIVMSG #ops :(log: after removal|file: late\.json)", within=1.5)

        # the IRC server's address is the one thing here that needs a restart
        _write(cfg, base.replace(f"port: {ircd.port}", f"port: {ircd.port + 1}"))
        assert app.rehash().restart_needed == ("irc",)


def test_sources_status_offline_shows_what_the_bot_stored(tmp_path: Path) -> None:
    import asyncio

    from masterchief.sources.runner import STATUS_PREFIX
    from masterchief.store.sqlite import open_store

    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    log = tmp_path / "app.log"
    _write(
        cfg,
        f"""\
        store: {{path: "{tmp_path / "mc.db"}"}}
        logs: [{{name: app, path: "{log}"}}, {{name: other, path: "{log}.2"}}]
        """,
    )

    async def seed() -> None:
        store = await open_store(tmp_path / "mc.db")
        try:
            await store.checkpoint_put(
                STATUS_PREFIX + "logs:app",
                {
                    "family": "logs",
                    "name": "app",
                    "state": "ok",
                    "detail": f"{log}: 1 file followed",
                    "events": 12,
                    "errors": 0,
                    "pending": None,
                    "last_success": None,
                },
            )
        finally:
            await store.close()

    asyncio.run(seed())
    result = CliRunner().invoke(main, ["sources", "status", "--config-dir", str(cfg)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (app_line,) = [x for x in lines if x.startswith("logs:app ")]
    assert app_line.startswith(f"logs:app ok -- {log}: 1 file followed; 12 events, 0 errors")
    assert "(as of " in app_line
    (other,) = [x for x in lines if x.startswith("logs:other ")]
    assert "not reported yet" in other
    assert any(x.startswith("clock:minutes ") for x in lines)  # every family is listed
