"""The event log end to end: a webhook through the running bot is recorded;
``events replay --dry-run`` says what would fire and changes nothing; a real
replay re-dispatches it marked as a replay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from click.testing import CliRunner

from masterchief.cli import main
from masterchief.config.engine import load_config
from masterchief.eventlog.query import request_replays
from tests.harness import bot_config_data, running_bot, wait_until
from tests.sources.webhooks.signing import github_headers

SECRET = "replay-e2e-github-secret"
PUSH = Path(__file__).parent / "sources" / "webhooks" / "payloads" / "github_push.json"

SCRIPT = """\
from pathlib import Path
from masterchief import bind

OUT = Path(__file__).with_name("seen.txt")

@bind("webhook", "-|-", "github/push")
def on_push(ev):
    with OUT.open("a") as fh:
        fh.write(f"{ev.id} replay_of={ev.replay_of} ref={ev.payload['ref']}\\n")
"""


async def test_recorded_webhook_dry_run_then_replay(
    tmp_path: Path, ircd: Any, irc_client: Any
) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "onpush.py").write_text(SCRIPT)
    data = bot_config_data(
        tmp_path,
        ircd.host,
        ircd.port,
        webhooks={"github": {"secret": SECRET, "channels": ["#ops"]}},
    )
    (tmp_path / "config" / "global").mkdir(parents=True)
    (tmp_path / "config" / "global" / "config.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "config")
    seen = tmp_path / "scripts" / "seen.txt"
    watcher = await irc_client()
    await watcher.join("#ops")
    body = PUSH.read_bytes()
    ref = json.loads(body)["ref"]

    async with running_bot(tmp_path, ircd.host, ircd.port, config=config) as app:
        assert app.web is not None
        url = f"http://127.0.0.1:{app.web.port}/webhooks/github"
        headers = github_headers(SECRET, body)
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers=headers) as resp,
        ):
            assert resp.status == 202
        await wait_until(lambda: seen.exists() and seen.read_text().count("\n") == 1, 20)
        announced = await watcher.wait_for(r"PRIVMSG #ops :\[github\] .* pushed ", 10)

        async def logged() -> list[Any]:
            await app.eventlog.flush()
            return [
                r
                for r in await app.store.event_log_page(types=("webhook",))
                if r.key == "github/push"
            ]

        rows: list[Any] = []
        async with asyncio.timeout(10):
            while not rows:
                rows = await logged()
        original = rows[0]
        assert original.replay_of is None and original.outcome == "fired"
        before = await app.store.event_log_count()

        # dry run, in a thread (it runs its own event loop), while the bot runs
        result = await asyncio.to_thread(
            CliRunner().invoke,
            main,
            [
                "events",
                "replay",
                original.id,
                "--dry-run",
                "--config-dir",
                str(tmp_path / "config"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert f"{original.id}  webhook  github/push" in result.output
        assert "would fire: webhook -|- github/push -> " in result.output
        assert "on_push [script:" in result.output
        await app.eventlog.flush()
        assert await app.store.event_log_count() == before
        assert seen.read_text().count("\n") == 1  # nothing ran
        await watcher.expect_none(r"PRIVMSG #ops :\[github\] .* pushed ", 0.5)

        # a real replay: the running bot re-dispatches it, marked as a replay
        done = await request_replays(app.store, [original.id], timeout=10)
        assert [r.state for r in done] == ["done"]
        await wait_until(lambda: seen.read_text().count("\n") == 2, 20)
        second = seen.read_text().splitlines()[1]
        assert f"replay_of={original.id}" in second and f"ref={ref}" in second
        again = await watcher.wait_for(r"PRIVMSG #ops :\[github\] .* pushed ", 10)
        assert again.text == announced.text

        async with asyncio.timeout(10):
            while not any(r.replay_of == original.id for r in await logged()):
                pass
