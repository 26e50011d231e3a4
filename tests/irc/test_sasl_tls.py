"""Logging in with SASL (Atheme behind InspIRCd) and connecting over TLS, for
real: a good login, refused credentials (in-process and through the CLI), a
server without SASL, services that vanish across a reconnect, a self-signed
certificate refused by default and accepted with ``tls_ca_file``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from masterchief.config.engine import build_config
from masterchief.irc.supervisor import SaslFailed
from masterchief.runtime.compose import App
from tests.harness import bot_config_data, running_bot, wait_until
from tests.servers import unique_name

BIN = Path(sys.executable).parent / "masterchief"


def sasl_over(username: str) -> dict[str, Any]:
    return {"irc": {"sasl": {"username": username, "password": "${env:MC_SASL_PASSWORD}"}}}


def messages(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [r.getMessage() for r in caplog.records if rx.search(r.getMessage())]


async def whois_account(client, nick: str) -> str | None:  # type: ignore[no-untyped-def]
    """The account the server says ``nick`` is logged in as (330), else None."""
    await client.send_raw(f"WHOIS {nick}")
    line = await client.wait_for(
        lambda ln: ln.command in ("330", "318") and len(ln.params) > 1 and ln.params[1] == nick
    )
    if line.command == "318":
        return None
    await client.wait_for(lambda ln: ln.command == "318" and ln.params[1] == nick)
    return str(line.params[2])


# --------------------------------------------------------------------------- SASL


async def test_sasl_login_with_password_from_env(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, irc_client, make_account
) -> None:
    acct = await make_account()
    watcher = asyncio.create_task(irc_client())  # registers on the same server tick
    async with running_bot(
        tmp_path,
        ircd.host,
        ircd.port,
        environ={"MC_SASL_PASSWORD": acct.password},
        **sasl_over(acct.name),
    ) as app:
        assert app.irc is not None
        assert app.irc.account == acct.name  # 900 during registration
        c = await watcher
        assert await whois_account(c, app.irc.nickname) == acct.name


async def test_wrong_sasl_password_stops_the_bot(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, make_account, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="masterchief")
    acct = await make_account()
    failed: list[BaseException] = []
    try:
        async with running_bot(
            tmp_path,
            ircd.host,
            ircd.port,
            environ={"MC_SASL_PASSWORD": acct.password + "-wrong"},
            **sasl_over(acct.name),
        ):
            pytest.fail("the bot connected with a wrong SASL password")
    except* SaslFailed as group:
        failed.extend(group.exceptions)
    assert [str(e) for e in failed] == ["SASL authentication failed (904)"]
    assert messages(caplog, r"SASL authentication failed \(904\): stopping")
    assert not messages(caplog, r"^connected to ")  # never registered, never retried
    assert not messages(caplog, r"^reconnecting in ")


async def test_cli_exits_3_on_refused_sasl_without_showing_the_password(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, make_account
) -> None:
    acct = await make_account()
    wrong = f"wrong-{unique_name('pw')}"
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    (tmp_path / "scripts").mkdir()
    (cfg / "global" / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "irc": {
                    "host": ircd.host,
                    "port": ircd.port,
                    "nick": unique_name("mc"),
                    "channels": ["#ops"],
                    "sasl": {"username": acct.name, "password": "${env:MC_SASL_PASSWORD}"},
                },
                "bot": {"scripts": ["scripts"]},
                "store": {"path": "var/mc.db"},
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        str(BIN),
        "run",
        "--config-dir",
        str(cfg),
        env={**os.environ, "MC_SASL_PASSWORD": wrong},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = (out + err).decode(errors="replace")
    assert proc.returncode == 3, text
    assert "error: SASL authentication failed (904)" in err.decode().splitlines()
    plain = f"{acct.name}\0{acct.name}\0{wrong}".encode()
    for leak in (
        wrong,
        base64.b64encode(plain).decode(),
        base64.b64encode(wrong.encode()).decode(),
    ):
        assert leak not in text


async def test_sasl_configured_but_server_has_no_sasl_is_fatal(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd_factory, irc_client
) -> None:
    server = ircd_factory("unlimited", services=False)  # no services: no sasl cap
    watcher = await irc_client(server=server)
    await watcher.join("#ops")
    nick = unique_name("mc")
    failed: list[BaseException] = []
    try:
        async with running_bot(
            tmp_path, server.host, server.port, nick=nick, environ={"MC_SASL_PASSWORD": "x" * 12},
            **sasl_over("nobody"),
        ):  # fmt: skip
            pytest.fail("the bot went on without a SASL login")
    except* SaslFailed as group:
        failed.extend(group.exceptions)
    assert len(failed) == 1 and "SASL login did not complete" in str(failed[0])
    # it left right after 001: never joined, never said anything
    assert not [ln for ln in watcher.lines if ln.nick == nick]
    await watcher.send_raw(f"WHOIS {nick}")
    await watcher.wait_for(lambda ln: ln.command == "401" and ln.params[1] == nick)


async def test_services_gone_after_a_reconnect_delays_the_bot_but_never_unauthenticated(  # type: ignore[no-untyped-def]
    tmp_path: Path, network_factory, make_account, irc_client, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="masterchief")
    net = network_factory("unlimited")
    acct = await make_account(network=net)
    async with running_bot(
        tmp_path,
        net.host,
        net.port,
        environ={"MC_SASL_PASSWORD": acct.password},
        **sasl_over(acct.name),
    ) as app:
        assert app.irc is not None and app.irc.account == acct.name
        # Services leave (saving their database) and the ircd crashes: the bot
        # comes back to a server that offers no SASL.
        await asyncio.to_thread(net.services.stop)
        await asyncio.to_thread(net.ircd.restart, kill=True)
        await wait_until(lambda: len(messages(caplog, r"dropping the connection")) >= 1, 15)
        assert app.irc.connects == 1 and not app.irc.connected.is_set()
        watcher = asyncio.create_task(irc_client(server=net))
        await asyncio.to_thread(net.services.start)
        await wait_until(lambda: app.irc.connects == 2, 15)  # type: ignore[union-attr]
        assert app.irc.account == acct.name
        c = await watcher
        assert await whois_account(c, app.irc.nickname) == acct.name
    assert not app.irc.fatal


# --------------------------------------------------------------------------- TLS


@contextlib.asynccontextmanager
async def started_app(tmp_path: Path, **over: Any) -> AsyncIterator[tuple[App, asyncio.Task[None]]]:
    """An App running in this loop without waiting for it to connect."""
    (tmp_path / "scripts").mkdir(parents=True, exist_ok=True)
    data = bot_config_data(tmp_path, **over)
    app = await App.create(build_config(data, project_dir=tmp_path))
    task = asyncio.create_task(app.run())
    try:
        yield app, task
    finally:
        app.stop()
        await asyncio.wait_for(task, 10)


async def test_tls_refuses_a_self_signed_certificate_by_default(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="masterchief")
    over = {"host": ircd.host, "port": ircd.tls_port, "irc": {"tls": True}}
    async with started_app(tmp_path, **over) as (app, task):
        assert app.irc is not None
        # It keeps trying (three refusals, with backoff) and never registers.
        await wait_until(lambda: len(messages(caplog, "certificate verify failed")) >= 3, 20)
        assert not task.done()
        assert app.irc.connects == 0 and not app.irc.connected.is_set()
        assert app.irc.nickname is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_with_the_servers_ca_file(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, irc_client, host: str
) -> None:
    # The certificate names localhost, irc.test and IP 127.0.0.1: both the
    # name and the address verify, with check_hostname on.
    watcher = asyncio.create_task(irc_client())
    over = {"irc": {"tls": True, "tls_ca_file": str(ircd.cert)}}
    async with running_bot(tmp_path, host, ircd.tls_port, **over) as app:
        assert app.irc is not None and app.irc.connects == 1
        nick = app.irc.nickname
        c = await watcher
        await c.send_raw(f"WHOIS {nick}")
        await c.wait_for(lambda ln: ln.command == "671" and ln.params[1] == nick)  # TLS user
        await c.join("#ops")
        app.table.bind("pub", "-|-", "!tls", lambda ev: ev.reply("over tls"))
        await c.say("#ops", "!tls")
        await c.wait_for(rf"^:{re.escape(nick)}!\S+ PRIVMSG #ops :over tls$")
