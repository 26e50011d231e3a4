"""A second transport beside IRC, in process (``tests/support/console.py``).

A ``!deploy`` typed in a console session is answered in that session, not
on IRC; the job's announcements reach the IRC channel (the real InspIRCd)
and the session; the same person on IRC and on the console is one user
record with the same flags.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from masterchief.bindings.event import ConsoleSession, Event
from tests.deploy.test_deploy_e2e import deploy_project
from tests.harness import TRUST_HOSTMASKS, client_mask, running_bot
from tests.servers import unique_name
from tests.support.console import ConsoleTransport


def bot_said(nick: str, text: str):  # type: ignore[no-untyped-def]
    return lambda ln: ln.command == "PRIVMSG" and ln.nick == nick and text in ln.text


async def test_a_deploy_typed_on_the_console_is_answered_there_and_announced_on_irc(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, irc_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = {**deploy_project(tmp_path, monkeypatch), "channels": ["#ops"]}
    watcher = await irc_client()
    await watcher.join("#ops")
    async with running_bot(
        tmp_path, ircd.host, ircd.port, deploy=deploy, users=TRUST_HOSTMASKS
    ) as app:
        nick = app.irc.nickname
        assert nick is not None
        console = ConsoleTransport(app.dispatcher.submit, app.command_prefix)
        app.outbox.add_transport(console)
        await app.users.add_user("alice", flags="o")
        alice = console.login("alice")

        # a refusal and a usage error: answered in the session
        alice.type("!deploy")
        usage = await alice.wait_for(lambda how, text: text.startswith("usage: !deploy"))
        assert usage == "usage: !deploy MODULE ENV [key=value ...]"
        alice.type("!modules")
        await alice.wait_for(lambda how, text: how == "private" and "3 modules: " in text)

        # the job: its lines in #ops on IRC, and in the session that asked
        alice.type("!deploy svc dev service=nginx")
        started = await watcher.wait_for(bot_said(nick, "started: !deploy svc dev"), 20)
        assert started.target == "#ops" and started.text.endswith("by alice")
        job = started.text.split()[1]
        done = await watcher.wait_for(bot_said(nick, f"job {job} svc/dev deploy "), 20)
        assert "succeeded" in done.text
        await alice.wait_for(lambda how, text: how == "announce" and f"job {job} started" in text)
        await alice.wait_for(lambda how, text: how == "announce" and done.text in text)
        record = app.jobs.jobs[job]
        assert (record.requester.handle, record.status) == ("alice", "succeeded")
        assert record.requester.nick is None  # nobody on IRC asked

    # nothing the session was told went to IRC
    told = {text for _, text in alice.lines if not text.startswith(f"job {job}")}
    assert told and not [ln for ln in watcher.lines if any(t in ln for t in told)]


async def test_the_same_person_on_irc_and_on_the_console_is_one_user(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, irc_client
) -> None:
    ident = unique_name("u")[:10]
    async with running_bot(tmp_path, ircd.host, ircd.port, users=TRUST_HOSTMASKS) as app:
        await app.users.add_user("alice", hostmasks=(client_mask(ident),), flags="o")
        await app.users.chattr("alice", "+m", channel="#ops", casemapping=app.casemapping)
        on_irc = await irc_client(username=ident)
        await on_irc.join("#ops")
        await on_irc.say("#ops", "!whoami")
        answer = await on_irc.wait_for(
            lambda ln: ln.command == "PRIVMSG" and ln.target == "#ops" and "you are" in ln.text, 15
        )
        assert "you are alice" in answer.text and "global flags +o" in answer.text

        console = ConsoleTransport(app.dispatcher.submit, app.command_prefix)
        session = console.login("alice")
        session.type("!whoami")
        text = await session.wait_for(lambda how, text: "you are" in text)
        assert "you are alice" in text and "global flags +o" in text

        # the resolver: both origins give the same record and the same flags
        irc_ev = Event(type="pub", key="!x", nick=on_irc.nick, uhost=f"{ident}@127.0.0.1")
        console_ev = Event(type="msg", key="x", peer=ConsoleSession("partyline", "9", "alice"))
        by_irc, by_console = app.resolve(irc_ev), app.resolve(console_ev)
        assert by_irc is not None and by_console is not None
        assert by_irc.user == by_console.user
        assert by_irc.global_flags() == by_console.global_flags() == "o"
        assert by_irc.channel_flags("#ops") == by_console.channel_flags("#ops") == "m"
