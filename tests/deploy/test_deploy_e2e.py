"""!deploy and friends through the real IRC server: permissions, parameters,
approvals and denials, the lease, cancel, timeout, redaction, !modules, !jobs,
module reload on !rehash, and terraform/helm stand-ins found on the bot's PATH."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from masterchief.deploy.catalog import ModuleLoader
from masterchief.runtime.compose import App
from tests.harness import running_bot, wait_until
from tests.procs import job_pids
from tests.servers import unique_name

ROOT = Path(__file__).resolve().parents[2]
# The test people are hostmask records (no services account): on this network,
# which has accounts, they carry flags only when the config says so.
TRUST = {"hostmask_flags_on_account_networks": True}
FAKEBIN = Path(__file__).resolve().parent / "fakebin"
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
  many) n=0; while [ $n -lt 30 ]; do n=$((n+1)); echo "would touch /srv/file$n"; done ;;
  fork4)
    d="$MC_VAR_GATE.$MC_JOB_ID"; mkdir -p "$d"
    /bin/sh -c 'echo $$ > "$1/background"; exec sleep 300' sh "$d" &
    setsid /bin/sh -c 'echo $$ > "$1/setsid"; exec sleep 300' sh "$d" &
    setsid env -i /bin/sh -c 'echo $$ > "$1/setsid_env_i"; exec sleep 300' sh "$d" &
    nohup /bin/sh -c 'echo $$ > "$1/nohup"; exec sleep 300' sh "$d" >/dev/null 2>&1 &
    for n in background setsid setsid_env_i nohup; do
      while [ ! -s "$d/$n" ]; do sleep 0.02; done
    done
    echo "forked 4"; while :; do sleep 0.1; done ;;
esac
echo "done $svc"
"""

MANIFEST = """\
name: {name}
version: 1.0.0
kind: script
description: restart a service (test module)
entry: run.sh
environments: [dev, qa, prod]
flags: "o|o"
approval: {{prod: {{approvers: 1, flags: "m|m", ttl_s: {ttl}}}}}
timeout_s: {timeout}
script: {{changes_bot_host: false}}  # a test script: not the rule for the bot's host
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


def deploy_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Modules svc, quick (approval TTL 1 s), hang (timeout 1 s), their config
    (a secret token from the environment) and the deploy_alerts script; returns
    the ``deploy`` config section."""
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
    return {
        "modules": [str(modules)],
        "work_dir": str(tmp_path / "jobs"),
        "channels": [],
        "progress_interval_s": 0.5,
        "kill_grace_s": 1,
    }


@pytest.fixture
async def bot(tmp_path: Path, ircd, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:  # type: ignore[no-untyped-def]
    deploy = deploy_project(tmp_path, monkeypatch)
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        yield app


async def person(
    app, irc_client, flags: str = "", chan: str | None = None, *, record: bool = False
):  # type: ignore[no-untyped-def]
    """A client on #ops; a user record when ``flags``, ``chan`` or ``record``
    (``record`` alone: a known user without any flags)."""
    ident = unique_name("u")[:10]
    if flags or chan or record:
        await app.users.add_user(
            ident, hostmasks=(f"*!{ident}@127.0.0.1",), flags="" if chan else flags
        )
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
    flagless = await person(bot, irc_client, record=True)
    user = bot.users.get(flagless.handle)
    assert user is not None and user.flags == "" and not user.chanflags
    line = await say(flagless, "!plan svc dev service=nginx", f"{flagless.nick}: ")
    assert line.text.endswith("you need global +o or +o on #ops to plan svc")
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
    assert row.requester == boss.handle and row.status == "succeeded"
    assert any("done nginx" in t for t in row.tail)


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
    assert [a.handle for a in row.approvals] == [other.handle]


async def test_approval_expires(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy quick prod service=api", r"job [0-9a-f]{6} .*needs 1 approval")
    job = job_id(line.text)
    line = await boss.wait_for(rf"PRIVMSG #ops :job {job} quick/prod deploy expired", 10)
    row = await bot.store.job_get(job)
    assert row.status == "expired" and row.started_at is None


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
    # another environment is not blocked by it: svc/qa runs to its end meanwhile
    line = await say(boss, "!deploy svc qa service=other", r"job [0-9a-f]{6} svc/qa deploy ")
    assert "succeeded" in line.text, line.text
    assert bot.jobs.jobs[first].status == "running"
    leases = {r.name: r.holder for r in await bot.store.leases()}
    assert leases == {"deploy:svc/dev": first}  # qa's lease was released at its end
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
    assert (await bot.store.job_get(job)).status == "cancelled"


FORMS = ("background", "setsid", "setsid_env_i", "nohup")


def _grandchildren(tmp_path: Path, job: str) -> dict[str, int]:
    """The pids the fork4 case's grandchildren wrote (one per way of leaving)."""
    folder = tmp_path / f"gate.{job}"
    return {n: int((folder / n).read_text()) for n in FORMS if (folder / n).exists()}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


async def test_cancel_and_timeout_reach_every_grandchild(bot, irc_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``cmd &``, ``setsid cmd``, ``setsid env -i cmd`` (out of the group and
    without the job's marker) and ``nohup cmd &``: all gone after !cancel and
    after the timeout."""
    conf = tmp_path / "config" / "modules"
    (conf / "forks.yaml").write_text((conf / "svc.yaml").read_text())
    write_module(tmp_path / "modules", "forks", timeout=6)
    await wait_until(lambda: bot.modules.current.get("forks") is not None, 20)
    boss = await person(bot, irc_client, "m")
    for how in ("cancel", "timeout"):
        module = "svc" if how == "cancel" else "forks"
        line = await say(boss, f"!deploy {module} dev service=fork4", r"job [0-9a-f]{6} started")
        job = job_id(line.text)
        await boss.wait_for(rf"PRIVMSG #ops :\[{job} {module}/dev \S+\] .*forked 4", 20)
        pids = _grandchildren(tmp_path, job)
        assert sorted(pids) == sorted(FORMS) and all(_alive(p) for p in pids.values())
        if how == "cancel":
            await say(boss, f"!cancel {job}", f"{boss.nick}: job {job}: cancelling")
            end = "cancelled"
        else:
            end = "timed out"
        await boss.wait_for(rf"PRIVMSG #ops :job {job} {module}/dev deploy {end}", 20)
        alive = {n: p for n, p in pids.items() if _alive(p)}
        for pid in alive.values():  # do not leave them behind if the sweep failed
            os.kill(pid, 9)
        assert alive == {}, how
        assert job_pids(job) == set()


async def test_timeout_stops_the_job(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy hang dev service=hang", r"job [0-9a-f]{6} started")
    job = job_id(line.text)
    line = await boss.wait_for(rf"PRIVMSG #ops :job {job} hang/dev deploy timed out", 15)
    assert job_pids(job) == set()
    assert (await bot.store.job_get(job)).status == "timed_out"


async def test_a_secret_printed_by_a_failing_job_is_masked_everywhere(
    bot, irc_client, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="masterchief")  # every level of every bot logger
    boss = await person(bot, irc_client, "m")
    boss.drain()
    await boss.say("#ops", "!deploy svc dev service=leak")
    line = await boss.wait_for(r"PRIVMSG #ops :job [0-9a-f]{6} svc/dev deploy failed", 15)
    job = job_id(line.text)
    hint = await boss.wait_for(rf"PRIVMSG #ops :{boss.nick}: your deploy of svc to dev failed", 10)
    assert hint.text.endswith(f"!job {job} shows the last lines")  # scripts/deploy_alerts.py
    await boss.say("#ops", f"!job {job}")
    shown = await boss.wait_for(rf"PRIVMSG {boss.nick} :\| connecting with token=", 10)
    assert shown.text.endswith("token=***")
    # the job record: its tail holds the line, masked
    row = await bot.store.job_get(job)
    assert row.exit_code == 3
    assert "connecting with token=***" in row.tail
    # the event log: the command and the job's deploy.* events, none with the secret
    await bot.eventlog.flush()
    logged = await bot.store.event_log_page(limit=1000)
    deploys = [(r.key, json.loads(r.payload)["payload"]) for r in logged if r.type == "event"]
    mine = {key: data for key, data in deploys if isinstance(data, dict) and data.get("id") == job}
    assert set(mine) == {"deploy.requested", "deploy.started", "deploy.finished"}
    # its news went the announcements' road (deploy.announce), logged too
    assert any(key == "deploy.announce" and f"job='{job}'" in str(data) for key, data in deploys)
    finished = mine["deploy.finished"]
    assert finished["status"] == "failed" and finished["exit_code"] == 3
    assert any(r.type == "pub" and "service=leak" in r.payload for r in logged)
    stored = "".join(f"{r.origin}{r.payload}" for r in logged)
    everything = repr(row) + stored + "".join(str(ln) for ln in boss.lines) + caplog.text
    assert SECRET not in everything


async def test_a_vault_secret_in_module_config_reaches_the_job_and_is_masked(
    bot, irc_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """``${vault:...}`` in config/modules/dev/svc.yaml, through the app's vault client."""
    vaulted = "vault-e2e-value-8c1d"

    class Vault:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def get_secret(self, name: str) -> Any:
            self.calls.append(name)
            return type("S", (), {"value": vaulted})()

    vault = Vault()
    bot.vault_client = vault  # read at each job start, like the module config files
    (tmp_path / "config" / "modules" / "dev").mkdir()
    (tmp_path / "config" / "modules" / "dev" / "svc.yaml").write_text("token: ${vault:svc-token}\n")
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc dev service=leak", r"job [0-9a-f]{6} svc/dev deploy ")
    assert "failed" in line.text and "could not run" not in line.text, line.text
    job = job_id(line.text)
    assert vault.calls == ["svc-token"]
    row = await bot.store.job_get(job)
    assert "connecting with token=***" in row.tail  # the vault value, masked
    assert vaulted not in repr(row) + "".join(str(ln) for ln in boss.lines)


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
    assert row.status == "cancelled" and row.started_at is None


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
    assert row.status == "cancelled" and row.started_at is None


@pytest.mark.timeout(180)
async def test_plan_baseline_dev_runs_ansible_check_mode_on_localhost(
    tmp_path: Path, ircd, irc_client
) -> None:  # type: ignore[no-untyped-def]
    """The shipped baseline module, its dev inventory pointed at this machine
    (local connection) and ``allow_bot_host: true``: an op is refused, an
    owner's ``!plan baseline dev`` is ansible-playbook --check --diff against
    localhost, progress in the channel."""
    shutil.copytree(ROOT / "modules", tmp_path / "modules")
    shutil.copytree(ROOT / "config" / "modules", tmp_path / "config" / "modules")
    (tmp_path / "modules" / "ansible" / "inventories" / "dev.ini").write_text(
        "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"
        "[docker]\n[kubernetes]\n"
    )
    with (tmp_path / "config" / "modules" / "baseline.yaml").open("a") as fh:
        fh.write("\nallow_bot_host: true\n")
    async with running_bot(
        tmp_path,
        ircd.host,
        ircd.port,
        deploy={
            "modules": [str(tmp_path / "modules")],
            "work_dir": str(tmp_path / "jobs"),
            "progress_interval_s": 1,
        },
        users=TRUST,
    ) as app:
        assert app.modules.current.get("baseline") is not None, app.modules.current.errors
        op = await person(app, irc_client, "o", chan="#ops")
        line = await say(op, "!plan baseline dev", f"{op.nick}: ")
        assert line.text.endswith("only a global owner (+n) may run it"), line.text
        op = await person(app, irc_client, "n")
        line = await say(op, "!plan baseline dev", r"job [0-9a-f]{6} started: !plan baseline dev")
        job = job_id(line.text)
        task = await op.wait_for(rf"PRIVMSG #ops :\[{job} baseline/dev \S+\] TASK \[", 60)
        assert task
        line = await op.wait_for(rf"PRIVMSG #ops :job {job} baseline/dev plan ", 150)
        assert "succeeded" in line.text and "failed 0" in line.text, line.text
        row = await app.store.job_get(job)
        assert row.status == "succeeded" and row.exit_code == 0


# --- !modules, !jobs, !deny ------------------------------------------------------------


async def test_modules_lists_every_module_with_version_kind_and_environments(
    bot, irc_client
) -> None:  # type: ignore[no-untyped-def]
    someone = await person(bot, irc_client)  # no user record: listing is for everyone
    line = await say(someone, "!modules", "3 modules: ")
    assert line.text == (
        "3 modules: hang 1.0.0 (script: dev,qa,prod); quick 1.0.0 (script: dev,qa,prod); "
        "svc 1.0.0 (script: dev,qa,prod)"
    )
    assert line.raw.split()[1:3] == ["PRIVMSG", someone.nick]  # told privately


async def test_jobs_shows_live_jobs_and_jobs_all_the_history(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!jobs", f"{boss.nick}: ")
    assert line.text == f"{boss.nick}: no jobs running or waiting (!jobs all for history)"
    line = await say(boss, "!deploy svc dev service=nginx", r"job [0-9a-f]{6} svc/dev deploy ")
    done = job_id(line.text)
    assert "succeeded" in line.text
    line = await say(boss, "!deploy svc prod service=api", r"job [0-9a-f]{6} .*needs 1 approval")
    waiting = job_id(line.text)
    line = await say(boss, "!jobs", rf"{waiting} ")
    assert line.raw.split()[1:3] == ["PRIVMSG", boss.nick]  # privately
    assert f"{waiting} awaiting_approval" in line.text
    assert "deploy svc prod service=api" in line.text and f"by {boss.handle} at" in line.text
    await say(boss, "!modules", "3 modules: ")  # answered after the whole !jobs list
    assert not any(f"PRIVMSG {boss.nick} :{done} " in ln for ln in boss.lines)  # done: not live
    boss.drain()
    await boss.say("#ops", "!jobs all")
    rows = await boss.wait_for_many(rf"PRIVMSG {boss.nick} :[0-9a-f]{{6}} ", 2, 15)
    assert rows[0].text.startswith(f"{waiting} awaiting_approval")  # newest first
    assert rows[1].text.startswith(f"{done} succeeded")
    assert "deploy svc dev service=nginx" in rows[1].text and " — succeeded in " in rows[1].text


async def test_deny_with_a_reason_answers_the_denier_and_tells_the_channel(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    other = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc prod service=api", r"job [0-9a-f]{6} .*needs 1 approval")
    job = job_id(line.text)
    boss.drain()
    line = await say(other, f"!deny {job} not during the freeze", f"{other.nick}: ")
    assert line.text == (
        f"{other.nick}: job {job} (!deploy svc prod service=api) denied by {other.handle}: "
        "not during the freeze"
    )
    told = await boss.wait_for(rf"PRIVMSG #ops :job {job} svc/prod deploy denied", 15)
    assert told.text.endswith(f"denied by {other.handle}: not during the freeze")
    row = await bot.store.job_get(job)
    assert row.status == "denied" and row.started_at is None
    assert row.reason == f"denied by {other.handle}: not during the freeze"
    line = await say(other, f"!approve {job}", f"{other.nick}: ")
    assert line.text.endswith(f"job {job} is not waiting for approval (denied)")


# --- module reload on !rehash ------------------------------------------------------------


async def _no_polling(self: ModuleLoader, interval: float = 1.0) -> None:
    await asyncio.Event().wait()  # until the app stops: only !rehash reloads modules


async def test_rehash_reloads_an_edited_module_without_a_restart(
    tmp_path: Path, ircd, irc_client, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # The watcher would pick the edit up within a second; off, so that what
    # the test sees is the !rehash.
    monkeypatch.setattr(ModuleLoader, "watch", _no_polling)
    deploy = deploy_project(tmp_path, monkeypatch)
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        boss = await person(app, irc_client, "m")
        line = await say(boss, "!deploy svc test service=nginx", f"{boss.nick}: ")
        assert line.text.endswith("svc has no environment 'test' (environments: dev, qa, prod)")
        manifest = tmp_path / "modules" / "svc" / "module.yaml"
        text = manifest.read_text()
        manifest.write_text(
            text.replace("version: 1.0.0", "version: 1.1.0").replace(
                "environments: [dev, qa, prod]", "environments: [dev, qa, prod, test]"
            )
        )
        line = await say(boss, "!rehash", "rehash: modules reloaded: ")
        assert line.text == "rehash: modules reloaded: svc"
        line = await say(boss, "!modules", "3 modules: ")
        assert "svc 1.1.0 (script: dev,qa,prod,test)" in line.text
        line = await say(
            boss, "!deploy svc test service=nginx", r"job [0-9a-f]{6} svc/test deploy "
        )
        assert "succeeded" in line.text, line.text
        row = await app.store.job_get(job_id(line.text))
        assert row.module_version == "1.1.0" and "done nginx" in row.tail


# --- stand-in terraform and helm on the bot's PATH -------------------------------------

TF_MANIFEST = """\
name: net
version: 1.0.0
kind: terraform
entry: .
environments: [dev]
flags: "o|o"
parameters:
  location: {type: string, pattern: '^[a-z][a-z0-9]{2,31}$', required: true}
terraform: {workspace: true}
"""

HELM_MANIFEST = """\
name: web
version: 1.0.0
kind: kubernetes
entry: chart
environments: [dev]
flags: "o|o"
parameters:
  image_tag: {type: string, pattern: '^[a-z0-9.]+$', required: true}
kubernetes: {namespace: apps}
"""


def calls(folder: Path) -> list[dict[str, Any]]:
    """What the stand-in recorded (``.fake-calls.jsonl`` in its working folder)."""
    path = folder / ".fake-calls.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
async def tool_bot(tmp_path: Path, ircd, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:  # type: ignore[no-untyped-def]
    """A bot whose PATH starts with tests/deploy/fakebin, with a terraform and a helm module."""
    net = tmp_path / "modules" / "net"
    net.mkdir(parents=True)
    (net / "module.yaml").write_text(TF_MANIFEST)
    (net / "main.tf").write_text("# the stand-in reads .fake-terraform.json instead\n")
    plan = {"resources": ["azurerm_resource_group.rg", "azurerm_virtual_network.vnet"]}
    (net / ".fake-terraform.json").write_text(json.dumps({**plan, "change": ["azurerm_subnet.a"]}))
    web = tmp_path / "modules" / "web"
    (web / "chart").mkdir(parents=True)
    (web / "module.yaml").write_text(HELM_MANIFEST)
    (web / "chart" / "Chart.yaml").write_text("apiVersion: v2\nname: web\nversion: 0.1.0\n")
    monkeypatch.setenv("PATH", f"{FAKEBIN}:{os.environ.get('PATH', '')}")
    monkeypatch.setenv("MC_E2E_TOKEN", SECRET)  # the bot's environment stays its own
    deploy = {
        "modules": [str(tmp_path / "modules")],
        "work_dir": str(tmp_path / "jobs"),
        "progress_interval_s": 0.5,
        "kill_grace_s": 1,
    }
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        yield app


async def test_terraform_plan_and_deploy_run_the_terraform_on_path(
    tool_bot, irc_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    op = await person(tool_bot, irc_client, "o", chan="#ops")
    line = await say(op, "!plan net dev location=westeurope", r"job [0-9a-f]{6} net/dev plan ")
    assert re.fullmatch(
        r"job \w{6} net/dev plan succeeded in [\d.]+s: Plan: 2 to add, 1 to change, 0 to destroy\.",
        line.text,
    )
    line = await say(op, "!deploy net dev location=westeurope", r"job [0-9a-f]{6} net/dev deploy ")
    assert re.fullmatch(
        r"job \w{6} net/dev deploy succeeded in [\d.]+s: changed 3, failed 0", line.text
    )
    row = await tool_bot.store.job_get(job_id(line.text))
    assert row.status == "succeeded" and "terraform apply" in row.tail
    assert "azurerm_subnet.a: Creation complete after 0s [id=42]" in row.tail
    folder = tmp_path / "modules" / "net"
    argvs = [c["argv"][0] for c in calls(folder)]
    assert argvs == ["init", "workspace", "plan"] * 2 + ["apply"]
    apply = calls(folder)[-1]
    # found on the bot's PATH, run with the scrubbed environment (its folder first)
    assert apply["env"]["PATH"].split(":")[0] == str(FAKEBIN)
    assert "MC_E2E_TOKEN" not in apply["env"] and "PYTEST_CURRENT_TEST" not in apply["env"]
    (var_file,) = calls(folder)[-2]["files"].values()
    assert json.loads(var_file["content"]) == {"location": "westeurope"}


async def test_helm_plan_and_deploy_run_the_helm_on_path(
    tool_bot, irc_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    op = await person(tool_bot, irc_client, "o", chan="#ops")
    line = await say(op, "!plan web dev image_tag=1.4.2", r"job [0-9a-f]{6} web/dev plan ")
    assert re.fullmatch(
        r"job \w{6} web/dev plan succeeded in [\d.]+s: helm template: 2 objects rendered "
        r"\(no helm-diff plugin: what would change is not known\)",
        line.text,
    )
    plan = await tool_bot.store.job_get(job_id(line.text))
    assert plan is not None
    assert '  image_tag: "1.4.2"' in plan.tail  # helm template, the value as data
    line = await say(op, "!deploy web dev image_tag=1.4.2", r"job [0-9a-f]{6} web/dev deploy ")
    assert re.fullmatch(r"job \w{6} web/dev deploy succeeded in [\d.]+s", line.text), line.text
    row = await tool_bot.store.job_get(job_id(line.text))
    assert "STATUS: deployed" in row.tail and "NAMESPACE: apps" in row.tail
    argvs = [c["argv"][:2] for c in calls(tmp_path / "modules" / "web")]
    assert argvs == [["plugin", "list"], ["template", "web"], ["upgrade", "--install"]]


# --- deploy.progress Events for scripts ----------------------------------------------------

PROGRESS_SCRIPT = """\
import json

from masterchief import Event, bind

OUT = {out!r}


@bind("event", "-|-", "deploy.progress")
def record(ev: Event) -> None:
    with open(OUT, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({{"text": ev.text, "payload": ev.payload}}) + "\\n")
"""


async def test_a_deploy_progress_binding_gets_the_output_lines_redacted(
    bot, irc_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "progress.jsonl"
    (tmp_path / "scripts" / "progress_probe.py").write_text(PROGRESS_SCRIPT.format(out=str(out)))
    results = bot.scripts.load_all()
    assert all(r.ok for r in results), [str(r) for r in results]
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc dev service=leak", r"job [0-9a-f]{6} svc/dev deploy failed")
    job = job_id(line.text)

    def received() -> list[dict[str, Any]]:
        lines = out.read_text(encoding="utf-8").splitlines() if out.exists() else []
        return [json.loads(ln) for ln in lines]

    await wait_until(lambda: any("connecting" in r["text"] for r in received()), 15)
    got = [r for r in received() if r["payload"]["job"] == job]
    texts = [r["text"] for r in got]
    assert "step 1: run leak in dev" in texts and "connecting with token=***" in texts
    leak = next(r["payload"] for r in got if r["text"].startswith("connecting"))
    assert leak == {
        "job": job,
        "module": "svc",
        "env": "dev",
        "kind": "line",
        "line": "connecting with token=***",
    }
    assert SECRET not in out.read_text(encoding="utf-8")
