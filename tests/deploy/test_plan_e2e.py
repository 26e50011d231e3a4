"""``!plan`` shows the plan over real IRC: a script's dry run, terraform's
``Plan:`` line and planned changes, helm diff, the real ansible-playbook's
changed tasks in check mode, and a long plan sent to the asker privately.
A job's "started" line comes before its progress and its result."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from tests.deploy.test_deploy_e2e import (
    TRUST,
    bot,
    deploy_project,
    job_id,
    person,
    say,
    tool_bot,
)
from tests.harness import running_bot

__all__ = ["bot", "tool_bot"]  # shared fixtures, imported for pytest


def _after(lines: list[str], start: str) -> list[str]:
    """The channel's lines from the first one starting with ``start`` on."""
    index = next(i for i, t in enumerate(lines) if t.startswith(start))
    return lines[index:]


def _channel(c) -> list[str]:  # type: ignore[no-untyped-def]
    return [ln.text for ln in c.lines if " PRIVMSG #ops :" in ln.raw]


async def test_a_short_dry_run_is_shown_in_the_channel(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    op = await person(bot, irc_client, "o", chan="#ops")
    line = await say(op, "!plan svc dev service=nginx", r"job [0-9a-f]{6} svc/dev plan succeeded")
    job = job_id(line.text)
    await op.wait_for(rf"PRIVMSG #ops :\[{job}\] done nginx", 15)
    shown = _after(_channel(op), f"job {job} svc/dev plan succeeded")
    assert shown[1:3] == [f"[{job}] step 1: plan nginx in dev", f"[{job}] done nginx"]
    started = _channel(op).index(f"job {job} started: !plan svc dev service=nginx by {op.handle}")
    assert started < _channel(op).index(shown[0])


async def test_a_long_plan_goes_to_the_asker_privately(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    op = await person(bot, irc_client, "o", chan="#ops")
    other = await person(bot, irc_client, "o", chan="#ops")
    line = await say(op, "!plan svc dev service=many", r"job [0-9a-f]{6} svc/dev plan succeeded")
    job = job_id(line.text)
    pointer = await op.wait_for(rf"PRIVMSG #ops :\[{job}\] ", 15)
    assert pointer.text == f"[{job}] 32 changes: the plan went to {op.nick} privately"
    rows = await op.wait_for_many(rf"PRIVMSG {op.nick} :\[{job}\] ", 21, 15)
    head = await op.wait_for(rf"PRIVMSG {op.nick} :job {job} svc/dev plan succeeded", 1)
    assert head.seq < rows[0].seq  # the result, then the plan
    assert [r.text for r in rows[:3]] == [
        f"[{job}] step 1: plan many in dev",
        f"[{job}] would touch /srv/file1",
        f"[{job}] would touch /srv/file2",
    ]
    assert rows[20].text == f"[{job}] ... 12 more (the job's last lines: !job {job})"
    # the channel saw no plan lines
    await other.expect_none(rf"PRIVMSG #ops :\[{job}\] would touch", 1.0)


async def test_terraform_plan_shows_its_plan_line_and_the_changes(tool_bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    op = await person(tool_bot, irc_client, "o", chan="#ops")
    line = await say(op, "!plan net dev location=westeurope", r"job [0-9a-f]{6} net/dev plan ")
    job = job_id(line.text)
    assert line.text.endswith(": Plan: 2 to add, 1 to change, 0 to destroy.")
    rows = await op.wait_for_many(rf"PRIVMSG #ops :\[{job}\] ", 3, 15)
    assert [r.text for r in rows] == [
        f"[{job}] azurerm_resource_group.rg: Plan to create",
        f"[{job}] azurerm_virtual_network.vnet: Plan to create",
        f"[{job}] azurerm_subnet.a: Plan to update in-place",
    ]


async def test_helm_plan_with_the_diff_plugin_shows_the_diff_summary(  # type: ignore[no-untyped-def]
    tool_bot, irc_client, tmp_path: Path
) -> None:
    (tmp_path / "modules" / "web" / ".fake-helm.json").write_text(json.dumps({"diff_plugin": True}))
    op = await person(tool_bot, irc_client, "o", chan="#ops")
    line = await say(op, "!plan web dev image_tag=1.4.2", r"job [0-9a-f]{6} web/dev plan ")
    job = job_id(line.text)
    assert line.text.endswith(": helm diff: 1 added, 0 changed, 0 removed")
    row = await op.wait_for(rf"PRIVMSG #ops :\[{job}\] ", 15)
    assert row.text == f"[{job}] ConfigMap apps/web-config added"


ANSIBLE_MANIFEST = """\
name: motd
version: 1.0.0
kind: ansible
entry: site.yml
environments: [dev]
flags: "n"
"""

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: write the motd
      copy: {{content: "hello", dest: "{dest}"}}
    - name: look around
      debug: {{msg: fine}}
"""


@pytest.mark.timeout(120)
async def test_ansible_plan_shows_the_tasks_that_would_change(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, irc_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ansible-playbook in check mode on the bot's own host (allowed
    for this module, requested by an owner); the copy would change, nothing is
    written."""
    deploy = deploy_project(tmp_path, monkeypatch)
    motd = tmp_path / "modules" / "motd"
    motd.mkdir()
    (motd / "module.yaml").write_text(ANSIBLE_MANIFEST)
    dest = tmp_path / "motd.txt"
    (motd / "site.yml").write_text(PLAYBOOK.format(dest=dest))
    conf = tmp_path / "config" / "modules" / "motd.yaml"
    conf.write_text(textwrap.dedent("allow_bot_host: true\n"))
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        owner = await person(app, irc_client, "n")
        line = await say(owner, "!plan motd dev", r"job [0-9a-f]{6} motd/dev plan ", timeout=90)
        assert re.search(r"plan succeeded in [\d.]+s: changed 1, failed 0$", line.text), line.text
        job = job_id(line.text)
        row = await owner.wait_for(rf"PRIVMSG #ops :\[{job}\] ", 15)
        assert row.text == f"[{job}] TASK [write the motd] changed: [localhost]"
        assert not dest.exists()


async def test_started_comes_before_progress_and_the_result(  # type: ignore[no-untyped-def]
    bot, irc_client, tmp_path: Path
) -> None:
    boss = await person(bot, irc_client, "m")
    for _ in range(3):
        gate = tmp_path / "gate"
        gate.unlink(missing_ok=True)
        line = await say(boss, "!deploy svc dev service=slow", r"job [0-9a-f]{6} ")
        job = job_id(line.text)
        assert line.text.startswith(f"job {job} started"), line.text  # nothing of it before
        await boss.wait_for(rf"PRIVMSG #ops :\[{job} svc/dev \S+\] .*waiting \d+", 15)
        gate.touch()
        await boss.wait_for(rf"PRIVMSG #ops :job {job} svc/dev deploy succeeded", 15)
        mine = [t for t in _channel(boss) if job in t]
        assert mine[0].startswith(f"job {job} started")
        assert mine[-1].startswith(f"job {job} svc/dev deploy succeeded")
