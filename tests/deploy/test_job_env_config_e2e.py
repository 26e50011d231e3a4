"""Through the real bot and InspIRCd: a job's module config is merged for the
job's environment (``!deploy MODULE ENV``), not for the ``--env`` the bot was
started with -- the variables the tool gets, the secrets it redacts -- and
``!rehash`` checks every environment's overlay."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from masterchief.runtime.compose import App
from tests.harness import running_bot
from tests.servers import unique_name

BASE_TOKEN = "tok-base-7c21-secret"
PROD_TOKEN = "tok-prod-d04e-secret"
TRUST = {"hostmask_flags_on_account_networks": True}

MANIFEST = """\
name: envcfg
version: 1.0.0
kind: script
entry: run.sh
environments: [dev, prod]
flags: "o|o"
script: {changes_bot_host: false}
"""

RUN_SH = """\
#!/bin/sh
echo "in $MC_ENV region=${MC_VAR_REGION:-none} token=${MC_VAR_TOKEN:-none}"
"""


@pytest.fixture
async def env_bot(tmp_path: Path, ircd: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("MC_ENVCFG_BASE", BASE_TOKEN)
    monkeypatch.setenv("MC_ENVCFG_PROD", PROD_TOKEN)
    mod = tmp_path / "modules" / "envcfg"
    mod.mkdir(parents=True)
    (mod / "module.yaml").write_text(MANIFEST)
    (mod / "run.sh").write_text(RUN_SH)
    (mod / "run.sh").chmod(0o755)
    conf = tmp_path / "config" / "modules"
    (conf / "dev").mkdir(parents=True)
    (conf / "prod").mkdir()
    (conf / "envcfg.yaml").write_text('region: base\ntoken: "${env:MC_ENVCFG_BASE}"\n')
    (conf / "dev" / "envcfg.yaml").write_text("region: dev\n")
    (conf / "prod" / "envcfg.yaml").write_text('region: prod\ntoken: "${env:MC_ENVCFG_PROD}"\n')
    deploy = {
        "modules": [str(tmp_path / "modules")],
        "work_dir": str(tmp_path / "jobs"),
        "channels": [],
        "progress_interval_s": 0.5,
        "kill_grace_s": 1,
    }
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        assert app.config.env == "dev"  # the bot's own --env
        yield app


async def _operator(app: App, irc_client: Any) -> Any:
    ident = unique_name("u")[:10]
    await app.users.add_user(ident, hostmasks=(f"*!{ident}@127.0.0.1",), flags="o")
    c = await irc_client(username=ident)
    await c.join("#ops")
    return c


@pytest.mark.timeout(120)
async def test_a_job_gets_its_own_environments_module_config(env_bot: App, irc_client: Any) -> None:
    op = await _operator(env_bot, irc_client)
    for env, region in (("prod", "prod"), ("dev", "dev")):
        op.drain()
        await op.say("#ops", f"!deploy envcfg {env}")
        line = await op.wait_for(
            rf"^:\S+ PRIVMSG #ops :job ([0-9a-f]{{6}}) envcfg/{env} deploy ", 20
        )
        assert "succeeded" in line.text, line.text
        m = re.search(r"job ([0-9a-f]{6})", line.text)
        assert m is not None
        row = await env_bot.store.job_get(m.group(1))
        tail = "\n".join(row.tail)
        # prod: its overlay's region and its own secret (redacted: registered
        # when the prod overlay was loaded); dev: no token of its own, the base one
        assert f"in {env} region={region} token=***" in tail, tail
        assert BASE_TOKEN not in tail and PROD_TOKEN not in tail
    assert not [ln.raw for ln in op.lines if BASE_TOKEN in ln.raw or PROD_TOKEN in ln.raw]


@pytest.mark.timeout(120)
async def test_rehash_reports_a_broken_overlay_of_another_environment(
    env_bot: App, irc_client: Any, tmp_path: Path
) -> None:
    ident = unique_name("m")[:10]
    await env_bot.users.add_user(ident, hostmasks=(f"*!{ident}@127.0.0.1",), flags="m")
    boss = await irc_client(username=ident)
    await boss.join("#ops")
    me = env_bot.irc.nickname
    await boss.say("#ops", "!rehash")  # the positive control: every overlay is valid
    await boss.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :rehash: ", 20)
    # The bot runs with --env dev; the broken file is prod's overlay.
    conf = tmp_path / "config" / "modules"
    (conf / "prod" / "envcfg.yaml").write_text("allow_bot_host: sometimes\n")
    boss.drain()
    await boss.say("#ops", "!rehash")
    await boss.wait_for(
        rf"^:{me}!\S+ PRIVMSG #ops :rehash: the module config of envcfg is invalid", 20
    )
    told = await boss.wait_for(
        rf"^:{me}!\S+ (PRIVMSG|NOTICE) {boss.nick} :rehash: .*prod/envcfg.yaml: allow_bot_host",
        20,
    )
    assert "true or false" in told.text, told.text
    invalid = [ln for ln in boss.lines if "the module config of envcfg is invalid" in ln.text]
    assert len(invalid) == 1, invalid  # the first !rehash found nothing wrong
