"""Through the real bot and InspIRCd: a parameter full of Jinja runs nothing and
prints no secret (the real ansible-playbook), the shipped examples never touch
the bot's host, and a module aimed at the bot's host needs
``allow_bot_host: true`` plus a global owner."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from masterchief.runtime.compose import App
from tests.harness import running_bot
from tests.servers import unique_name

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-H1a-9f3e-api-secret"
TRUST = {"hostmask_flags_on_account_networks": True}


def deploy_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "modules": [str(tmp_path / "modules")],
        "work_dir": str(tmp_path / "jobs"),
        "channels": [],
        "progress_interval_s": 0.5,
        "kill_grace_s": 1,
    }


async def person(app: App, irc_client: Any, flags: str, chan: str | None = None) -> Any:
    """A client on #ops with global ``flags`` (or ``flags`` on ``chan``)."""
    ident = unique_name("u")[:10]
    await app.users.add_user(
        ident, hostmasks=(f"*!{ident}@127.0.0.1",), flags="" if chan else flags
    )
    if chan:
        await app.users.chattr(ident, "+" + flags, channel=chan, casemapping=app.casemapping)
    c = await irc_client(username=ident)
    await c.join("#ops")
    return c


async def say(c: Any, text: str, expect: str, *, timeout: float = 20) -> Any:
    c.drain()
    await c.say("#ops", text)
    return await c.wait_for(rf"^:\S+ (PRIVMSG|NOTICE) (#ops|{c.nick}) :{expect}", timeout)


# --- parameters are data -----------------------------------------------------------

TMPL_MANIFEST = """\
name: tmpl
version: 1.0.0
kind: ansible
entry: site.yml
environments: [dev]
flags: "o|o"
parameters:
  version: {type: string, max_length: 200}
  probe: {type: string, max_length: 200}
ansible: {inventory: {dev: hosts.ini}}
"""

TMPL_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: show the version
      debug:
        msg: "version={{ version | default('') }} probe={{ probe | default('') }}"
"""


@pytest.fixture
async def tmpl_bot(
    tmp_path: Path, ircd: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[App]:
    monkeypatch.setenv("MC_H1A_TOKEN", TOKEN)
    mod = tmp_path / "modules" / "tmpl"
    mod.mkdir(parents=True)
    (mod / "module.yaml").write_text(TMPL_MANIFEST)
    (mod / "site.yml").write_text(TMPL_PLAYBOOK)
    # A documentation address: debug runs on the controller, nothing connects.
    (mod / "hosts.ini").write_text("target-1 ansible_host=192.0.2.10\n")
    conf = tmp_path / "config" / "modules"
    conf.mkdir(parents=True)
    (conf / "tmpl.yaml").write_text('api_token: "${env:MC_H1A_TOKEN}"\n')
    deploy = deploy_config(tmp_path)
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        yield app


@pytest.mark.timeout(120)
async def test_plan_with_jinja_parameters_runs_nothing_and_prints_no_secret(
    tmpl_bot: App, irc_client: Any, tmp_path: Path
) -> None:
    op = await person(tmpl_bot, irc_client, "o", chan="#ops")
    marker = tmp_path / "PWNED"
    attacks = [
        f"version={{{{lookup('pipe','touch${{IFS}}{marker}')}}}}",
        "probe={{api_token|reverse}}",
        "probe={{api_token|upper}}",
        "probe={{api_token|list|join('.')}}",
        "version=$(id) probe=`id`",
    ]
    for words in attacks:
        line = await say(op, f"!plan tmpl dev {words}", r"job [0-9a-f]{6} tmpl/dev plan ")
        assert "succeeded" in line.text, line.text
    assert not marker.exists()
    rows = await tmpl_bot.store.jobs_list()
    assert len(rows) == len(attacks)
    tails = [t for r in rows for t in (await tmpl_bot.store.job_get(r.id)).tail]
    assert any("probe={{api_token|reverse}}" in t for t in tails), tails
    assert any("version={{lookup('pipe','touch${IFS}" in t for t in tails), tails
    seen = "\n".join([*op.lines, *tails])
    for form in (TOKEN, TOKEN[::-1], TOKEN.upper(), ".".join(TOKEN)):
        assert form not in seen


# --- the bot's own host ------------------------------------------------------------


@pytest.fixture
async def shipped_bot(tmp_path: Path, ircd: Any) -> AsyncIterator[App]:
    """The shipped modules and module config, copied as they are."""
    shutil.copytree(ROOT / "modules", tmp_path / "modules")
    shutil.copytree(ROOT / "config" / "modules", tmp_path / "config" / "modules")
    deploy = deploy_config(tmp_path)
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        yield app


@pytest.mark.timeout(120)
async def test_fresh_config_never_touches_the_bot_host(shipped_bot: App, irc_client: Any) -> None:
    op = await person(shipped_bot, irc_client, "o", chan="#ops")
    for mode in ("deploy", "plan"):
        line = await say(op, f"!{mode} baseline dev", f"{op.nick}: ")
        assert line.text.endswith(
            "baseline dev: the inventory modules/ansible/inventories/dev.ini lists no hosts; "
            "add this environment's machines to it (see the comments in that file)"
        ), line.text
    line = await say(op, "!deploy baseline dev limit=localhost", f"{op.nick}: ")
    assert "lists no hosts" in line.text
    owner = await person(shipped_bot, irc_client, "n")
    line = await say(owner, "!deploy restart-service dev service=nginx", f"{owner.nick}: ")
    assert line.text.endswith(
        "restart-service dev would run on the bot's own host (a script always runs there): "
        "refused; that needs allow_bot_host: true in config/modules/restart-service.yaml "
        "and a global owner (+n) to ask"
    ), line.text
    assert await shipped_bot.store.jobs_list() == []


LOCAL_MANIFEST = """\
name: {name}
version: 1.0.0
kind: ansible
entry: site.yml
environments: [dev]
flags: "o|o"
{inventory}
"""

LOCAL_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: touch
      file: {{path: "{marker}", state: touch}}
"""


@pytest.fixture
async def local_bot(tmp_path: Path, ircd: Any) -> AsyncIterator[App]:
    """Modules ``here`` (inventory: localhost, local connection), ``loop``
    (ansible_host=127.0.0.1), ``bare`` (no inventory: -i localhost,), and
    ``here-ok``, like ``here`` with ``allow_bot_host: true``."""
    inventories = {
        "here": "localhost ansible_connection=local ansible_python_interpreter=auto_silent\n",
        "loop": "box ansible_host=127.0.0.1\n",
        "bare": None,
        "here-ok": "localhost ansible_connection=local ansible_python_interpreter=auto_silent\n",
    }
    conf = tmp_path / "config" / "modules"
    conf.mkdir(parents=True)
    for name, inventory in inventories.items():
        mod = tmp_path / "modules" / name
        mod.mkdir(parents=True)
        section = "ansible: {inventory: {dev: hosts.ini}}" if inventory else ""
        (mod / "module.yaml").write_text(LOCAL_MANIFEST.format(name=name, inventory=section))
        (mod / "site.yml").write_text(LOCAL_PLAYBOOK.format(marker=tmp_path / f"ran-{name}"))
        if inventory:
            (mod / "hosts.ini").write_text(inventory)
    (conf / "here-ok.yaml").write_text("allow_bot_host: true\n")
    deploy = deploy_config(tmp_path)
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        yield app


@pytest.mark.timeout(120)
async def test_a_module_on_the_bot_host_needs_the_setting_and_an_owner(
    local_bot: App, irc_client: Any, tmp_path: Path
) -> None:
    op = await person(local_bot, irc_client, "o", chan="#ops")
    owner = await person(local_bot, irc_client, "n")
    refused = "refused; that needs allow_bot_host: true in config/modules/{} and a global owner"
    for who in (op, owner):
        for name, found in (
            ("here", "localhost: a local connection"),
            ("loop", "box: a loopback address"),
            ("bare", "localhost: no inventory for this environment"),
        ):
            line = await say(who, f"!deploy {name} dev", f"{who.nick}: ")
            assert f"{name} dev would run on the bot's own host ({found}" in line.text
            assert refused.format(f"{name}.yaml") in line.text
    line = await say(op, "!deploy here-ok dev", f"{op.nick}: ")
    assert line.text.endswith("only a global owner (+n) may run it"), line.text
    assert await local_bot.store.jobs_list() == []
    for name in ("here", "loop", "bare", "here-ok"):
        assert not (tmp_path / f"ran-{name}").exists()
    # With the setting, an owner may: the positive control that the run works.
    line = await say(owner, "!deploy here-ok dev", r"job [0-9a-f]{6} here-ok/dev deploy ")
    assert "succeeded" in line.text, line.text
    assert (tmp_path / "ran-here-ok").exists()


# --- re-checked when an approved job starts --------------------------------------------

GATED_MANIFEST = """\
name: {name}
version: 1.0.0
kind: ansible
entry: site.yml
environments: [dev, prod]
flags: "o|o"
approval: {{prod: {{approvers: 1, flags: "m|m", ttl_s: 300}}}}
timeout_s: 30
ansible: {{inventory: {{prod: hosts.ini}}}}
"""


@pytest.fixture
async def gated_bot(tmp_path: Path, ircd: Any) -> AsyncIterator[App]:
    """A bot started with --env dev; prod needs one approval (+m).  ``gated``:
    prod inventory is localhost (local connection), allowed by the *prod*
    overlay ``config/modules/prod/gated.yaml``; ``remote``: prod inventory is
    a documentation address, no module config."""
    inventories = {
        "gated": "localhost ansible_connection=local ansible_python_interpreter=auto_silent\n",
        "remote": "target-1 ansible_host=192.0.2.10\n",
    }
    for name, inventory in inventories.items():
        mod = tmp_path / "modules" / name
        mod.mkdir(parents=True)
        (mod / "module.yaml").write_text(GATED_MANIFEST.format(name=name))
        (mod / "site.yml").write_text(LOCAL_PLAYBOOK.format(marker=tmp_path / f"ran-{name}"))
        (mod / "hosts.ini").write_text(inventory)
    conf = tmp_path / "config" / "modules" / "prod"
    conf.mkdir(parents=True)
    (conf / "gated.yaml").write_text("allow_bot_host: true\n")
    deploy = deploy_config(tmp_path)
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        assert app.config.env == "dev"
        yield app


async def _request_and_approve(
    app: App, requester: Any, approver: Any, command: str, edit: Callable[[], object]
) -> str:
    """``command`` waits for approval; ``edit`` runs; the approval's outcome line."""
    line = await say(requester, command, r"job [0-9a-f]{6} .*needs 1 approval")
    m = re.search(r"job ([0-9a-f]{6})", line.text)
    assert m is not None, line.text
    job = m.group(1)
    edit()
    where = command.split()[1] + "/" + command.split()[2]
    line = await say(approver, f"!approve {job}", rf"job {job} {where} deploy ")
    return line.text


@pytest.mark.timeout(180)
async def test_an_approved_job_rechecks_the_module_config_before_it_starts(
    gated_bot: App, irc_client: Any, tmp_path: Path
) -> None:
    owner = await person(gated_bot, irc_client, "n")
    boss = await person(gated_bot, irc_client, "m")
    setting = tmp_path / "config" / "modules" / "prod" / "gated.yaml"
    # allow_bot_host (from the prod overlay) removed while the job waited
    text = await _request_and_approve(
        gated_bot, owner, boss, "!deploy gated prod",
        lambda: setting.write_text("allow_bot_host: false\n"),
    )  # fmt: skip
    assert "refused: re-checked before starting: gated prod would run on the bot's own host " in (
        text
    ), text
    assert "(localhost: a local connection" in text and "allow_bot_host: true" in text, text
    assert not (tmp_path / "ran-gated").exists()
    # a host override that points at the bot's host added while the job waited
    override = tmp_path / "config" / "modules" / "prod" / "remote.yaml"
    text = await _request_and_approve(
        gated_bot, owner, boss, "!deploy remote prod",
        lambda: override.write_text("ansible_host: 127.0.0.1\n"),
    )  # fmt: skip
    assert "refused: re-checked before starting: remote prod would run on the bot's own host " in (
        text
    ), text
    assert "(target-1: a loopback address" in text, text
    rows = {r.module: r for r in await gated_bot.store.jobs_list()}
    assert rows["gated"].status == rows["remote"].status == "refused"
    assert rows["gated"].started_at is None and rows["remote"].started_at is None
    # Positive control: allowed again, unchanged between request and approval, it runs.
    setting.write_text("allow_bot_host: true\n")
    text = await _request_and_approve(
        gated_bot, owner, boss, "!deploy gated prod", lambda: None
    )  # fmt: skip
    assert "succeeded" in text, text
    assert (tmp_path / "ran-gated").exists()
