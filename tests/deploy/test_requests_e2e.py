"""Over real IRC (InspIRCd, Atheme for accounts): an approval after the TTL is
refused whatever the ticker's interval; a waiting request ends when its
requester quits, leaves the last shared channel, or is not visible at all;
job records are for known users (``deploy.job_flags``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from masterchief.runtime.compose import App
from tests.deploy.test_deploy_e2e import TRUST, bot, deploy_project, job_id, person, say
from tests.harness import running_bot, wait_until

__all__ = ["bot"]  # the shared fixture, imported for pytest


@pytest.fixture
async def slow_ticker_bot(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[App]:
    """The ticker (which also expires requests) runs every 60 s: only the
    check when ``!approve`` arrives can refuse a late approval."""
    deploy = {**deploy_project(tmp_path, monkeypatch), "progress_interval_s": 60}
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        yield app


async def test_an_approval_after_the_ttl_is_refused_and_the_job_expires(
    slow_ticker_bot, irc_client
) -> None:  # type: ignore[no-untyped-def]
    app = slow_ticker_bot
    boss = await person(app, irc_client, "m")
    other = await person(app, irc_client, "m")
    line = await say(boss, "!deploy quick prod service=api", r"job [0-9a-f]{6} .*needs 1 approval")
    job = job_id(line.text)
    assert "(expires in 1s)" in line.text
    expires_at = app.jobs.jobs[job].expires_at
    assert expires_at is not None
    await wait_until(lambda: time.time() > expires_at + 0.2, 15)
    assert app.jobs.jobs[job].status == "awaiting_approval"  # the ticker has not run
    line = await say(other, f"!approve {job}", f"{other.nick}: ")
    assert f"job {job} expired at " in line.text and "request it again" in line.text
    told = await other.wait_for(rf"PRIVMSG #ops :job {job} quick/prod deploy expired", 15)
    assert told.text.endswith("no approval in time")
    row = await app.store.job_get(job)
    assert row.status == "expired" and row.started_at is None and row.approvals == ()
    line = await say(other, f"!approve {job}", f"{other.nick}: ")
    assert line.text.endswith(f"job {job} is not waiting for approval (expired)")


async def test_a_requester_who_quits_irc_cancels_the_waiting_job(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    other = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc prod service=api", r"job [0-9a-f]{6} .*needs 1 approval")
    job = job_id(line.text)
    await boss.quit("gone home")
    told = await other.wait_for(rf"PRIVMSG #ops :job {job} svc/prod deploy cancelled", 15)
    assert told.text.endswith("the requester quit IRC")
    line = await say(other, f"!approve {job}", f"{other.nick}: ")
    assert line.text.endswith(f"job {job} is not waiting for approval (cancelled)")
    row = await bot.store.job_get(job)
    assert row.status == "cancelled" and row.started_at is None
    # told once, although the QUIT reached the bot as a sign event per shared channel
    await other.expect_none(rf"PRIVMSG #ops :job {job} svc/prod deploy cancelled", 1.0)


async def test_an_identified_requester_who_quits_cancels_the_waiting_job(  # type: ignore[no-untyped-def]
    bot, irc_client, make_account
) -> None:
    """The account case (Atheme): still identified right up to the QUIT."""
    acct = await make_account()
    await bot.users.add_user(acct.name, account=acct.name, flags="m")
    requester = await irc_client(acct.name + "_q", sasl=(acct.name, acct.password))
    await requester.join("#ops")
    other = await person(bot, irc_client, "m")
    await wait_until(lambda: (bot.irc.lookup_nick(requester.nick) or (None,))[0] == acct.name, 20)
    line = await say(
        requester, "!deploy svc prod service=api", r"job [0-9a-f]{6} .*needs 1 approval"
    )
    job = job_id(line.text)
    assert bot.jobs.jobs[job].requester.account == acct.name
    await requester.quit("laptop closed")
    told = await other.wait_for(rf"PRIVMSG #ops :job {job} svc/prod deploy cancelled", 15)
    assert told.text.endswith("the requester quit IRC")
    assert (await bot.store.job_get(job)).status == "cancelled"


async def test_a_requester_who_leaves_the_last_shared_channel_cancels_the_job(  # type: ignore[no-untyped-def]
    bot, irc_client
) -> None:
    boss = await person(bot, irc_client, "m")
    other = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc prod service=api", r"job [0-9a-f]{6} .*needs 1 approval")
    job = job_id(line.text)
    await boss.part("#ops", "brb")
    told = await other.wait_for(rf"PRIVMSG #ops :job {job} svc/prod deploy cancelled", 15)
    assert told.text.endswith("the requester left the channels I can see them on")
    assert (await bot.store.job_get(job)).status == "cancelled"


async def test_a_request_needing_approval_from_someone_the_bot_cannot_see_is_refused(  # type: ignore[no-untyped-def]
    bot, irc_client
) -> None:
    boss = await person(bot, irc_client, "m")
    await boss.part("#ops")
    await wait_until(lambda: not bot.irc.shares_channel(boss.nick), 15)
    boss.drain()
    await boss.say(bot.irc.nickname, "deploy svc prod service=api")
    line = await boss.wait_for(rf"^:\S+ (PRIVMSG|NOTICE) {boss.nick} :", 15)
    assert "join a channel I am on first" in line.text, line.text
    assert await bot.store.jobs_list() == []
    # without approval it runs: nothing waits on the requester being seen
    await boss.say(bot.irc.nickname, "deploy svc dev service=api")
    line = await boss.wait_for(rf"^:\S+ (PRIVMSG|NOTICE) {boss.nick} :job \w{{6}} svc/dev ", 15)
    assert "succeeded" in line.text or "started" in line.text, line.text


# --- job records are for known users ---------------------------------------------------


async def test_job_records_are_refused_to_strangers(bot, irc_client) -> None:  # type: ignore[no-untyped-def]
    boss = await person(bot, irc_client, "m")
    line = await say(boss, "!deploy svc dev service=nginx", r"job [0-9a-f]{6} svc/dev deploy ")
    job = job_id(line.text)
    stranger = await person(bot, irc_client)
    for command, what in (("!jobs all", "!jobs all"), (f"!job {job}", "!job")):
        line = await say(stranger, command, f"{stranger.nick}: ")
        assert f"{what} is for known users: no user record matches you" in line.text
        assert job not in line.text
    line = await say(stranger, "!jobs", f"{stranger.nick}: ")  # live jobs: still for everyone
    assert "no jobs running or waiting" in line.text
    known = await person(bot, irc_client, record=True)  # a record without flags
    line = await say(known, f"!job {job}", rf"{job} succeeded ")
    assert "deploy svc dev service=nginx" in line.text


async def test_job_flags_are_configurable(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, irc_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = {**deploy_project(tmp_path, monkeypatch), "job_flags": "o|o"}
    async with running_bot(tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST) as app:
        known = await person(app, irc_client, record=True)
        line = await say(known, "!jobs all", f"{known.nick}: ")
        assert line.text.endswith("you need global +o or +o on #ops for !jobs all")
        line = await say(known, "!job abcdef", f"{known.nick}: ")
        assert line.text.endswith("you need global +o or +o on #ops for !job")
        op = await person(app, irc_client, "o", chan="#ops")
        line = await say(op, "!jobs all", "no jobs on record")
        assert line
