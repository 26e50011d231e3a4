"""``masterchief events list`` and ``events replay`` through click's CliRunner,
against a temporary project (config, scripts folder, store)."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from masterchief.bindings.event import Event
from masterchief.cli import main
from masterchief.config.engine import load_config
from masterchief.config.secrets import Redactor
from masterchief.eventlog.policy import to_record
from masterchief.identity.users import UserTable
from masterchief.store.api import EventLogRecord
from masterchief.store.sqlite import open_store

SCRIPT = """\
from pathlib import Path

from masterchief import bind


@bind("webhook", "-|-", "github/push")
def on_push(ev):
    Path(__file__).with_name("fired.txt").write_text(ev.key)


bind("pub", "m|m", "!deploy", on_push)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    cfg = proj / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "environments").mkdir()
    (proj / "scripts").mkdir()
    (proj / "scripts" / "hooks.py").write_text(SCRIPT)
    (cfg / "global" / "config.yaml").write_text(
        textwrap.dedent(
            f"""\
            irc: {{host: 127.0.0.1, port: 6667, channels: ["#ops"]}}
            store: {{path: {proj / "var" / "mc.db"}}}
            bot: {{scripts: [{proj / "scripts"}]}}
            web: {{port: 0}}
            """
        )
    )
    return proj


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("MASTERCHIEF_CONFIG_DIR", "MASTERCHIEF_ENV"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def cli(runner: CliRunner, project: Path, *args: str) -> Result:
    return runner.invoke(main, [*args, "--config-dir", str(project / "config")])


def seed(project: Path, records: list[EventLogRecord], users: bool = False) -> None:
    async def go() -> None:
        store = await open_store(load_config(project / "config", "dev").store.path)
        try:
            await store.event_log_append(records)
            if users:
                table = await UserTable.load(store)
                await table.add_user("eve", hostmasks=["eve!*@eve.example"], flags="v")
        finally:
            await store.close()

    asyncio.run(go())


def counts(project: Path) -> tuple[int, int, int]:
    async def go() -> tuple[int, int, int]:
        store = await open_store(load_config(project / "config", "dev").store.path)
        try:
            requests = await store.replay_get(list(range(1, 1000)))
            return await store.event_log_count(), len(requests), len(await store.load_users())
        finally:
            await store.close()

    return asyncio.run(go())


def record(type_: str, key: str, *, age_s: float = 0.0, **kw: object) -> EventLogRecord:
    when = time.time() - age_s
    ev = Event(type=type_, key=key, **kw)  # type: ignore[arg-type]
    rec = to_record(ev, "fired", redactor=Redactor())
    return EventLogRecord(
        rec.id, when, rec.type, rec.key, rec.origin, rec.payload, rec.outcome, rec.replay_of
    )


def test_help_names_the_commands(runner: CliRunner) -> None:
    top = runner.invoke(main, ["events", "--help"])
    assert top.exit_code == 0
    assert "  list " in top.output
    assert "  replay " in top.output
    replay = runner.invoke(main, ["events", "replay", "--help"])
    assert "--dry-run" in replay.output
    assert "--timeout" in replay.output
    assert "redacted" in replay.output


def test_list_by_type_and_since(runner: CliRunner, project: Path) -> None:
    recent = record("webhook", "github/push", source="github")
    old = record("webhook", "github/push", age_s=7200, source="github")
    cmd = record("pub", "!deploy", nick="eve", uhost="eve@h", channel="#ops")
    seed(project, [recent, old, cmd])
    result = cli(runner, project, "events", "list", "--type", "webhook", "--since", "1h")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1
    assert recent.id in lines[0]
    assert "  webhook  github/push  src=github  fired" in lines[0]
    every = cli(runner, project, "events", "list")
    assert [line.split()[1] for line in every.output.splitlines()] == [cmd.id, old.id, recent.id]
    assert "eve!eve@h #ops" in every.output


def test_list_by_key_mask_and_nothing_found(runner: CliRunner, project: Path) -> None:
    seed(project, [record("webhook", "github/push"), record("webhook", "gitlab/push")])
    result = cli(runner, project, "events", "list", "--key", "gitlab/*")
    assert result.exit_code == 0
    assert "gitlab/push" in result.output
    assert "github/push" not in result.output
    none = cli(runner, project, "events", "list", "--type", "metric")
    assert none.output.strip() == "no events"


def test_list_rejects_a_bad_since(runner: CliRunner, project: Path) -> None:
    result = cli(runner, project, "events", "list", "--since", "yesterday")
    assert result.exit_code == 2
    assert "expected a span like 30m" in result.output


def test_dry_run_prints_bindings_and_changes_nothing(runner: CliRunner, project: Path) -> None:
    hook = record("webhook", "github/push", source="github", payload={"ref": "main"})
    cmd = record("pub", "!deploy", nick="eve", uhost="eve@eve.example", channel="#ops")
    chat = record("pubm", "#ops hello", nick="eve", uhost="eve@eve.example", channel="#ops")
    seed(project, [hook, cmd, chat], users=True)
    before = counts(project)
    result = cli(runner, project, "events", "replay", hook.id, cmd.id, chat.id, "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{hook.id}  webhook  github/push" in out
    assert "would fire: webhook -|- github/push -> " in out
    assert "on_push [script:hooks]" in out
    assert "would be refused (user eve; needs global +m or +m on #ops): pub m|m !deploy" in out
    chat_part = out.split(chat.id, 1)[1]
    assert chat_part.splitlines()[1] == "  no binding would fire"
    assert counts(project) == before
    assert not (project / "scripts" / "fired.txt").exists()  # no handler ran


def test_an_id_given_twice_is_replayed_once(runner: CliRunner, project: Path) -> None:
    hook = record("webhook", "github/push", source="github", payload={"ref": "main"})
    seed(project, [hook], users=True)
    result = cli(runner, project, "events", "replay", hook.id, hook.id, hook.id, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.count(f"{hook.id}  webhook  github/push") == 1
    # a real request (no bot here: cancelled) is queued once, not three times
    result = cli(runner, project, "events", "replay", hook.id, hook.id, "--timeout", "0.2")
    assert result.exit_code == 1
    assert result.output.count(f"{hook.id}: cancelled") == 1
    assert counts(project)[1] == 1


def test_dry_run_of_an_unknown_id_fails(runner: CliRunner, project: Path) -> None:
    result = cli(runner, project, "events", "replay", "feedfacecafebeef", "--dry-run")
    assert result.exit_code == 1
    assert "not in the event log: feedfacecafebeef" in result.output


def test_replay_without_a_running_bot_is_cancelled(runner: CliRunner, project: Path) -> None:
    hook = record("webhook", "github/push")
    seed(project, [hook])
    result = cli(runner, project, "events", "replay", hook.id, "--timeout", "0.2")
    assert result.exit_code == 1
    assert f"{hook.id}: cancelled: no running bot took the request within 0.2s" in result.output
    assert "is the bot running" in result.output

    async def states() -> list[str]:
        store = await open_store(load_config(project / "config", "dev").store.path)
        try:
            return [r.state for r in await store.replay_get([1])]
        finally:
            await store.close()

    assert asyncio.run(states()) == ["cancelled"]
