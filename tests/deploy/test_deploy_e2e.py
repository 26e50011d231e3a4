"""!deploy and friends through the real IRC server: permissions, parameters,
approvals, the lease, cancel, timeout, redaction."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from tests.harness import running_bot, wait_until
from tests.procs import job_pids
from tests.servers import unique_name

ROOT = Path(__file__).resolve().parents[2]
SECRET = "tok-3f9a-very-secret-value"

RUN_SH = """\
#!/bin/sh
set -eu
mode=run
if [ "${1:-}" = "--dry-run" ]; then mode=plan; fi
svc="$MC_PARAM_SERVICE"
echo "step 1: $mode $svc in $MC_ENV"
case "$svc" in
  slow) i=0; while [ ! -e "$MC_VAR_GATE" ]; do i=$((i+1)); echo "waiting $i"; sleep 0.05; done ;;
  leak) echo "connecting with token=$MC_VAR_TOKEN"; exit 3 ;;
  fork) sleep 300 & setsid sleep 301 & echo "forked"; wait ;;
  hang) while :; do sleep 0.1; done ;;
esac
echo "done $svc"
"""

MANIFEST = """\
name: {name}
version: 1.0.0
kind: script
description: restart a service (test module)
entry: run.sh
environments: [dev, prod]
flags: "o|o"
approval: {{prod: {{approvers: 1, flags: "m|m", ttl_s: {ttl}}}}}
timeout_s: {timeout}
parameters:
  service: {{type: string, pattern: '^[a-z0-9-]+$', required: true}}
  version: {{type: string, pattern: '^[0-9]+\\.[0-9]+\\.[0-9]+$'}}
"""


def write_module(root: Path, name: str, *, ttl: float = 300, timeout: float = 60) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "module.yaml").write_text(MANIFEST.format(name=name, ttl=ttl, timeout=timeout))
    (d / "run.sh").write_text(RUN_SH)
    (d / "run.sh").chmod(0o755)


@pytest.fixture
async def bot(tmp_path: Path, ircd, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MC_E2E_TOKEN", SECRET)
    modules = tmp_path / "modules"
    write_module(modules, "svc")
    write_module(modules, "quick", ttl=1)
    write_module(modules, "hang", timeout=1)
    conf = tmp_path / "config" / "modules"
    conf.mkdir(parents=True)
    for name in ("svc", "quick", "hang"):
        (conf / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""\
                gate: {tmp_path / "gate"}
                token: "${{env:MC_E2E_TOKEN}}"
                """
            )
        )
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "deploy_alerts.py", tmp_path / "scripts")
    async with running_bot(
        tmp_path,
        ircd.host,
        ircd.port,
        deploy={
            "modules": [str(modules)],
            "work_dir": str(tmp_path / "jobs"),
            "channels": [],
            "progress_interval_s": 0.5,
            "kill_grace_s": 1,
        },
    ) as app:
        yield app


async def person(app, irc_client, flags: str = "", chan: str | None = None):  # type: ignore[no-untyped-def]
    ident = unique_name("u")[:10]
    if flags or chan:
        await app.users.add_user(ident, hostmasks=(f"*!{ident}@*",), flags="" if chan else flags)
        if chan:
            await app.users.chattr(ident, "+" + flags, channel=chan, casemapping=app.casemapping)
    c = await irc_client(username=ident)
    await c.join("#ops")
    c.handle = ident
    return c


async def say(c, text: str, expect: str, *, timeout: float = 15):  # type: ignore[no-untyped-def]
    c.drain()
    await c.say("#ops", text)
    return await c.wait_for(rf"^:\S+ (PRIVMSG|NOTICE) (#ops|{c.nick}) :{expect}", timeout)


def job_id(text: str) -> str:
    m = re.search(r"job ([0-9a-f]{6})", text)
    assert m, text
    return m.group(1)


async def test_permission_matrix(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    nobody = await person(bot, irc_client)
    line = await say(nobody, "!plan svc dev service=nginx", f"{nobody.nick}: ")
    assert "no user record matches you" in line.text
    elsewhere = await person(bot, irc_client, "o", chan="#elsewhere")
    line = await say(elsewhere, "!plan svc dev service=nginx", f"{elsewhere.nick}: ")
    assert line.text.endswith("you need global +o or +o on #ops to plan svc")
    op = await person(bot, irc_client, "o", chan="#ops")
    line = await say(op, "!plan svc dev service=nginx", r"job [0-9a-f]{6} svc/dev plan ")
    assert "succeeded" in line.text
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc dev service=nginx", r"job [0-9a-f]{6} svc/dev deploy ")
    assert "succeeded" in line.text
    row = await bot.store.job_get(job_id(line.text))
    assert row["requester"] == boss.handle and row["status"] == "succeeded"
    assert any("done nginx" in t for t in row["tail"])


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ("service=nginx version=1.0; rm -rf /", "'rm' is not name=value"),
        ("service=nginx version=1.0;rm", "version"),
        ("service=$(reboot)", "service"),
        ("service=nginx --kubeconfig=/tmp/x", "--kubeconfig"),
        ("service=nginx colour=blue", "colour"),
        ("service=NGINX", "service"),
        ("", "service"),
    ],
)
async def test_bad_parameters_are_refused_before_anything_runs(
    bot, irc_client, args: str, reason: str
) -> None:  # type: ignore[no-untyped-def]
    op = await person(bot, irc_client, "o", chan="#ops")
    line = await say(op, f"!deploy svc dev {args}".rstrip(), f"{op.nick}: ")
    assert reason in line.text
    assert await bot.store.jobs_list() == []
    line = await say(op, "!deploy svc staging service=nginx", f"{op.nick}: ")
    assert "staging" in line.text


async def test_approval_by_requester_refused_by_someone_else_runs(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    other = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc prod service=api", r"job [0-9a-f]{6} .*needs 1 approval")
    job = job_id(line.text)
    assert f"!approve {job}" in line.text
    line = await say(boss, f"!approve {job}", f"{boss.nick}: ")
    assert "someone else must approve it" in line.text
    op = await person(bot, irc_client, "o", chan="#ops")
    line = await say(op, f"!approve {job}", f"{op.nick}: ")
    assert "you need global +m or +m on #ops to approve" in line.text
    line = await say(other, f"!approve {job}", rf"job {job} svc/prod deploy ")
    assert "succeeded" in line.text
    row = await bot.store.job_get(job)
    assert [a["handle"] for a in row["approvals"]] == [other.handle]


async def test_approval_expires(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy quick prod service=api", r"job [0-9a-f]{6} .*needs 1 approval")
    job = job_id(line.text)
    line = await boss.wait_for(rf"PRIVMSG #ops :job {job} quick/prod deploy expired", 10)
    row = await bot.store.job_get(job)
    assert row["status"] == "expired" and row["started_at"] is None


async def test_second_deploy_to_the_same_environment_is_refused_naming_the_holder(
    bot, irc_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc dev service=slow", r"job [0-9a-f]{6} started")
    first = job_id(line.text)
    line = await say(
        boss, "!deploy svc dev service=other", r"job [0-9a-f]{6} svc/dev deploy refused"
    )
    assert f"job {first}" in line.text and boss.handle in line.text
    # another environment is not blocked by it
    progress = await boss.wait_for(rf"PRIVMSG #ops :\[{first} svc/dev \S+\] .*waiting \d+", 10)
    assert progress
    (tmp_path / "gate").touch()
    line = await boss.wait_for(rf"PRIVMSG #ops :job {first} svc/dev deploy succeeded", 15)
    assert line


async def test_cancel_kills_the_whole_process_group(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc dev service=fork", r"job [0-9a-f]{6} started")
    job = job_id(line.text)
    await wait_until(lambda: len(job_pids(job)) >= 3, 20)
    await say(boss, f"!cancel {job}", f"{boss.nick}: job {job}: cancelling")
    line = await boss.wait_for(rf"PRIVMSG #ops :job {job} svc/dev deploy cancelled", 15)
    assert job_pids(job) == set()
    assert (await bot.store.job_get(job))["status"] == "cancelled"


async def test_timeout_stops_the_job(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy hang dev service=hang", r"job [0-9a-f]{6} started")
    job = job_id(line.text)
    line = await boss.wait_for(rf"PRIVMSG #ops :job {job} hang/dev deploy timed out", 15)
    assert job_pids(job) == set()
    assert (await bot.store.job_get(job))["status"] == "timed_out"


async def test_a_secret_printed_by_a_failing_job_is_masked_everywhere(
    bot, irc_client, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    boss.drain()
    await boss.say("#ops", "!deploy svc dev service=leak")
    line = await boss.wait_for(r"PRIVMSG #ops :job [0-9a-f]{6} svc/dev deploy failed", 15)
    job = job_id(line.text)
    hint = await boss.wait_for(rf"PRIVMSG #ops :{boss.nick}: your deploy of svc to dev failed", 10)
    assert hint.text.endswith(f"!job {job} shows the last lines")  # scripts/deploy_alerts.py
    await boss.say("#ops", f"!job {job}")
    shown = await boss.wait_for(rf"NOTICE {boss.nick} :\| connecting with token=", 10)
    assert shown.text.endswith("token=***")
    row = await bot.store.job_get(job)
    assert row["exit_code"] == 3
    assert any(t.endswith("token=***") for t in row["tail"])
    everything = repr(row) + "".join(str(ln) for ln in boss.lines) + caplog.text
    assert SECRET not in everything


async def test_requester_logging_out_cancels_the_waiting_job(bot, irc_client, make_account) -> None:  # type: ignore[no-untyped-def]
    acct = await make_account()
    await bot.users.add_user(acct.name, account=acct.name, flags="m")
    requester = await irc_client(acct.name + "_r", sasl=(acct.name, acct.password))
    await requester.join("#ops")
    await wait_until(lambda: (bot.irc.lookup_nick(requester.nick) or (None,))[0] == acct.name, 20)
    line = await say(
        requester, "!deploy svc prod service=api", r"job [0-9a-f]{6} .*needs 1 approval"
    )
    job = job_id(line.text)
    assert f"by {acct.name})" in line.text
    await requester.say("NickServ", "LOGOUT")
    line = await requester.wait_for(rf"PRIVMSG #ops :job {job} svc/prod deploy cancelled", 15)
    assert "lost their account" in line.text
    row = await bot.store.job_get(job)
    assert row["status"] == "cancelled" and row["started_at"] is None


async def test_an_approval_is_bound_to_the_module_content(bot, irc_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    other = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc prod service=api", r"job [0-9a-f]{6} .*needs 1 approval")
    job = job_id(line.text)
    script = tmp_path / "modules" / "svc" / "run.sh"
    script.write_text(
        script.read_text().replace('echo "done $svc"', 'echo "done $svc"; echo changed')
    )
    line = await say(other, f"!approve {job}", f"{other.nick}: ")
    assert f"job {job} cancelled" in line.text and "changed since it was requested" in line.text
    row = await bot.store.job_get(job)
    assert row["status"] == "cancelled" and row["started_at"] is None


@pytest.mark.timeout(180)
async def test_plan_baseline_dev_runs_ansible_check_mode_on_localhost(
    tmp_path: Path, ircd, irc_client
) -> None:  # type: ignore[no-untyped-def]
    """The shipped baseline module: ``!plan baseline dev`` is ansible-playbook
    --check --diff against localhost (local connection), progress in the channel."""
    shutil.copytree(ROOT / "config" / "modules", tmp_path / "config" / "modules")
    async with running_bot(
        tmp_path,
        ircd.host,
        ircd.port,
        deploy={
            "modules": [str(ROOT / "modules")],
            "work_dir": str(tmp_path / "jobs"),
            "progress_interval_s": 1,
        },
    ) as app:
        assert app.modules.current.get("baseline") is not None, app.modules.current.errors
        op = await person(app, irc_client, "o", chan="#ops")
        line = await say(op, "!plan baseline dev", r"job [0-9a-f]{6} started: !plan baseline dev")
        job = job_id(line.text)
        task = await op.wait_for(rf"PRIVMSG #ops :\[{job} baseline/dev \S+\] TASK \[", 60)
        assert task
        line = await op.wait_for(rf"PRIVMSG #ops :job {job} baseline/dev plan ", 150)
        assert "succeeded" in line.text and "failed 0" in line.text, line.text
        row = await app.store.job_get(job)
        assert row["status"] == "succeeded" and row["exit_code"] == 0
