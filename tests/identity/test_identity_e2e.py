"""Who someone is, end to end over the real InspIRCd + Atheme network (issue 8):

* item 2: a stranger who sets his username to match a hostmask record cannot
  approve a deploy or use a privileged command where the network has services
  accounts; an account record still can; ``users.hostmask_flags_on_account_networks``
  gives specific hostmask records their flags back (weak ones never);
* item 8: accounts and handles compare under the server's CASEMAPPING
  (rfc1459 here: an account ``X{1}`` is the record's ``x[1]``);
* item 10: a user added by ``masterchief user add`` (another process, the same
  store) is seen by the running bot within 2 s, and ``!rehash`` re-reads users.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from masterchief.runtime.compose import App
from tests.deploy.test_deploy_e2e import deploy_project
from tests.harness import TRUST_HOSTMASKS, client_mask, running_bot, wait_until
from tests.servers import unique_name

BIN = Path(sys.executable).parent / "masterchief"


async def said(c, text: str, expect: str, *, target: str = "#ops", timeout: float = 15):  # type: ignore[no-untyped-def]
    """``c`` says ``text`` on ``target``; the bot's first line to ``c`` matching ``expect``."""
    c.drain()
    await c.say(target, text)
    nick = re.escape(c.nick)
    return await c.wait_for(rf"^:\S+ (PRIVMSG|NOTICE) (#ops|{nick}) :{expect}", timeout)


def job_of(text: str) -> str:
    words = text.split()
    return words[words.index("job") + 1]


@pytest.fixture
async def accounts(make_account):  # type: ignore[no-untyped-def]
    boss, ann = await asyncio.gather(make_account(), make_account())
    return boss, ann


def deploy_bot(tmp_path: Path, ircd: Any, mp: pytest.MonkeyPatch, **over: Any) -> Any:
    """A bot with the deploy test modules (``svc``: prod needs one +m approval)."""
    return running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy_project(tmp_path, mp), **over)


async def test_a_stranger_with_carols_username_cannot_approve_or_command(
    tmp_path: Path, ircd, irc_client, accounts, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    boss_acct, ann_acct = accounts
    weak_ident, strong_ident = unique_name("carol")[:10], unique_name("cara")[:10]
    async with deploy_bot(tmp_path, ircd, monkeypatch) as app:
        assert app.irc.accounts_available
        assert not app.config.users.hostmask_flags_on_account_networks  # the default
        # carol: the README's old example, a record written before weak masks
        # were refused; cara: a specific mask, but on a network with accounts
        await app.users.add_user("carol", hostmasks=(f"*!{weak_ident}@*",), flags="m")
        await app.users.add_user("cara", hostmasks=(client_mask(strong_ident),), flags="m")
        await app.users.add_user("boss", account=boss_acct.name, flags="m")
        await app.users.add_user("ann", account=ann_acct.name, flags="m")
        boss, ann, weak, strong = await asyncio.gather(
            irc_client(boss_acct.name + "_", sasl=(boss_acct.name, boss_acct.password)),
            irc_client(ann_acct.name + "_", sasl=(ann_acct.name, ann_acct.password)),
            irc_client(username=weak_ident),
            irc_client(username=strong_ident),
        )
        for c in (boss, ann, weak, strong):
            await c.join("#ops")

        line = await said(boss, "!deploy svc prod service=api", r"job \S+ .*needs 1 approval")
        job = job_of(line.text)
        # the strangers match carol's and cara's records by hostmask...
        line = await said(weak, f"!approve {job}", f"{weak.nick}: ")
        weak_why = f"by the weak hostmask *!{weak_ident}@*, whose nick and ident anyone can choose"
        strong_why = f"by hostmask {client_mask(strong_ident)} on a network with services accounts"
        assert (
            line.text == f"{weak.nick}: you matched carol {weak_why}: that cannot approve deploys"
        )
        line = await said(strong, f"!approve {job}", f"{strong.nick}: ")
        assert (
            line.text
            == f"{strong.nick}: you matched cara {strong_why}: that cannot approve deploys"
        )
        # ...and hold nothing above +v: no deploys, no privileged built-ins
        line = await said(weak, "!deploy svc dev service=api", f"{weak.nick}: ")
        assert line.text.endswith("you need global +o or +o on #ops to deploy svc")
        line = await said(strong, "!rehash", f"{strong.nick}: ")
        assert (
            line.text == f"{strong.nick}: you need global +m for !rehash (you matched {strong_why})"
        )
        line = await said(weak, "!whoami", f"{weak.nick}: ")
        assert line.text == (
            f"{weak.nick}: you are carol (account none), global flags +v, no flags on #ops; "
            f"you matched {weak_why}: flags above +v and approvals do not count"
        )
        row = await app.store.job_get(job)
        assert row is not None and row.status == "awaiting_approval"
        assert row.approvals == ()
        # someone identified by services still approves, and the job runs
        line = await said(ann, f"!approve {job}", rf"job {job} svc/prod deploy ")
        assert "succeeded" in line.text
        row = await app.store.job_get(job)
        assert [a.handle for a in row.approvals] == ["ann"]


async def test_hostmask_flags_on_account_networks_trusts_specific_masks_only(
    tmp_path: Path, ircd, irc_client, make_account, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    boss_acct = await make_account()
    weak_ident, strong_ident = unique_name("carol")[:10], unique_name("cara")[:10]
    async with deploy_bot(tmp_path, ircd, monkeypatch, users=TRUST_HOSTMASKS) as app:
        assert app.irc.accounts_available
        await app.users.add_user("carol", hostmasks=(f"*!{weak_ident}@*",), flags="m")
        await app.users.add_user("cara", hostmasks=(client_mask(strong_ident),), flags="m")
        await app.users.add_user("boss", account=boss_acct.name, flags="m")
        boss, weak, strong = await asyncio.gather(
            irc_client(boss_acct.name + "_", sasl=(boss_acct.name, boss_acct.password)),
            irc_client(username=weak_ident),
            irc_client(username=strong_ident),
        )
        for c in (boss, weak, strong):
            await c.join("#ops")
        line = await said(boss, "!deploy svc prod service=api", r"job \S+ .*needs 1 approval")
        job = job_of(line.text)
        line = await said(weak, f"!approve {job}", f"{weak.nick}: ")
        assert "by the weak hostmask" in line.text and "cannot approve" in line.text
        line = await said(strong, f"!approve {job}", rf"job {job} svc/prod deploy ")
        assert "succeeded" in line.text
        line = await said(strong, "!whoami", f"{strong.nick}: ")
        assert line.text == (
            f"{strong.nick}: you are cara (account none), global flags +m, no flags on #ops"
        )


async def test_adduser_writes_ident_and_host_and_refuses_rfc1459_twins(
    tmp_path: Path, ircd, irc_client, irc_network
) -> None:  # type: ignore[no-untyped-def]
    # rfc1459 characters in the account: the bot must fold them like the server
    name = f"E{unique_name('r')[:9]}{{1}}"
    acct = await asyncio.to_thread(
        irc_network.services.register, name, None, f"{name[:-3]}@example.org"
    )
    record_account = acct.name.lower().replace("{", "[").replace("}", "]")
    assert record_account != acct.name.lower()
    async with running_bot(tmp_path, ircd.host, ircd.port) as app:
        assert app.irc.casemapping == "rfc1459"  # InspIRCd 3's default
        await app.users.add_user("erin[1]", account=record_account, flags="m")
        ident = unique_name("nw")[:10]
        erin, newbie = await asyncio.gather(
            irc_client(acct.name + "_", sasl=(acct.name, acct.password)),
            irc_client(username=ident),
        )
        for c in (erin, newbie):
            await c.join("#ops")
        # the server tags erin with the account as registered, ERIN-style
        line = await said(erin, "!whoami", re.escape(f"{erin.nick}: "))
        assert line.text == (
            f"{erin.nick}: you are erin[1] (account {acct.name}), global flags +m, no flags on #ops"
        )
        await wait_until(lambda: app.irc.lookup_nick(newbie.nick) is not None, 15)
        line = await said(erin, f"!adduser ERIN{{1}} {newbie.nick}", "")
        assert line.text == (
            "handle 'ERIN{1}' already exists as 'erin[1]' "
            "(to IRC they are one name: case, and [ ] \\ ~ are { } | ^)"
        )
        line = await said(erin, f"!adduser newbie {newbie.nick}", "added ")
        assert line.text == (
            f"added newbie with hostmask *!{ident}@127.0.0.1 ({newbie.nick} is not logged in: "
            "until the record has an account, it carries no flags above +v here)"
        )
        user = app.users.get("newbie")
        assert user is not None and user.hostmasks == (f"*!{ident}@127.0.0.1",)


# --- item 10: the CLI and the running bot share the store -----------------------------------


def write_cli_config(tmp_path: Path, app: App) -> Path:
    """A config dir for the CLI naming the running bot's store."""
    cfg = tmp_path / "cli-config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "global" / "config.yaml").write_text(
        yaml.safe_dump({"store": {"path": str(Path(app.config.store.path).resolve())}})
    )
    return cfg


async def cli(cfg: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(BIN), *args, "--config-dir", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MASTERCHIEF_")},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@pytest.fixture
async def ops_bot(tmp_path: Path, ircd) -> AsyncIterator[App]:  # type: ignore[no-untyped-def]
    async with running_bot(tmp_path, ircd.host, ircd.port) as app:
        app.table.bind("pub", "o|o", "!secret", lambda ev: ev.reply(f"{ev.nick}: for ops only"))
        yield app


async def test_a_user_added_with_the_cli_is_seen_within_2_s(
    tmp_path: Path, ops_bot: App, irc_client, make_account
) -> None:  # type: ignore[no-untyped-def]
    app = ops_bot
    acct = await make_account()
    newbie = await irc_client(acct.name + "_", sasl=(acct.name, acct.password))
    await newbie.join("#ops")
    line = await said(newbie, "!secret", f"{newbie.nick}: ")
    assert line.text.endswith("(no user record matches you)")
    cfg = write_cli_config(tmp_path, app)
    out = await cli(cfg, "user", "add", "newbie", "--account", acct.name, "--flags", "o")
    assert out.startswith("added newbie: flags +o")
    added = time.monotonic()  # the CLI has committed and exited
    await wait_until(lambda: app.users.get("newbie") is not None, 15)
    seen_after = time.monotonic() - added
    print(f"the bot saw the user added by the CLI {seen_after:.3f}s after it exited")
    assert seen_after < 2.0, f"the bot saw the new user after {seen_after:.2f}s"
    line = await said(newbie, "!secret", f"{newbie.nick}: ")
    assert line.text == f"{newbie.nick}: for ops only"
    # a change of flags travels the same way
    await cli(cfg, "user", "chattr", "newbie", "-o")
    await wait_until(lambda: app.users.get("newbie").flags == "", 15)  # type: ignore[union-attr]
    line = await said(newbie, "!secret", f"{newbie.nick}: ")
    assert line.text == f"{newbie.nick}: you need global +o or +o on #ops for !secret"


async def test_rehash_rereads_users(tmp_path: Path, ops_bot: App, irc_client, make_account) -> None:  # type: ignore[no-untyped-def]
    app = ops_bot
    boss_acct, acct = await asyncio.gather(make_account(), make_account())
    await app.users.add_user("boss", account=boss_acct.name, flags="m")
    boss, newbie = await asyncio.gather(
        irc_client(boss_acct.name + "_", sasl=(boss_acct.name, boss_acct.password)),
        irc_client(acct.name + "_", sasl=(acct.name, acct.password)),
    )
    for c in (boss, newbie):
        await c.join("#ops")
    # A change the version counter does not show (as when a backup is restored
    # over the file, counter and all), written in one transaction.
    with closing(sqlite3.connect(app.config.store.path)) as conn, conn:
        [(version,)] = conn.execute("SELECT version FROM users_version").fetchall()
        conn.execute(
            "INSERT INTO users (handle, account, flags, created_at) VALUES (?, ?, 'o', 'now')",
            ("newbie", acct.name),
        )
        conn.execute("UPDATE users_version SET version = ?", (version,))
    assert await app.users.refresh() is False  # polling cannot see it...
    assert app.users.get("newbie") is None
    await said(boss, "!rehash", "rehash: ")  # ...!rehash re-reads
    await wait_until(lambda: app.users.get("newbie") is not None, 15)
    line = await said(newbie, "!secret", f"{newbie.nick}: ")
    assert line.text == f"{newbie.nick}: for ops only"
