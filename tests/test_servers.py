"""The real-server test infrastructure works: InspIRCd, Atheme, the test client."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import AccountFactory, ClientFactory, IrcdFactory, NetworkFactory
from tests.ircclient import IRCError, Line, SaslError, TestClient, parse_line
from tests.servers import (
    Daemon,
    InspIRCd,
    IRCNetwork,
    free_port,
    poll_until,
    unique_name,
    wait_port,
)

REPO = Path(__file__).resolve().parent.parent


def test_parse_line() -> None:
    tags, prefix, command, params = parse_line(
        r"@account=alice;msgid=a\sb\:c;+draft/x :alice!a@h PRIVMSG #ops :hello  world"
    )
    assert tags == {"account": "alice", "msgid": "a b;c", "+draft/x": ""}
    assert prefix == "alice!a@h"
    assert command == "PRIVMSG"
    assert params == ["#ops", "hello  world"]
    line = Line(":irc.test 001 bob :Welcome")
    assert line == ":irc.test 001 bob :Welcome"
    assert (line.nick, line.command, line.target, line.text) == (
        "irc.test",
        "001",
        "bob",
        "Welcome",
    )
    assert parse_line("PING :abc") == ({}, None, "PING", ["abc"])


async def test_register_and_join(irc_client: ClientFactory) -> None:
    nick = unique_name("reg")
    client = await irc_client(nick)
    assert client.nick == nick
    assert client.isupport["NETWORK"] == "MasterChiefLocal"  # from inspircd/inspircd.conf
    chan = f"#{unique_name('c')}"
    join = await client.join(chan)
    assert join.command == "JOIN"
    assert join.nick == nick


async def test_two_clients_see_each_other(irc_client: ClientFactory) -> None:
    chan = f"#{unique_name('c')}"
    # Registration completes on the server's 1 s tick: connect clients together.
    alice, bob = await asyncio.gather(
        irc_client(unique_name("alice")), irc_client(unique_name("bob"))
    )
    await alice.join(chan)
    await bob.join(chan)
    await alice.wait_for(rf"^:{bob.nick}!\S+ JOIN :?{chan}")
    await alice.say(chan, "hello bob")
    line = await bob.wait_for(rf"PRIVMSG {chan} :hello bob$")
    assert line.nick == alice.nick
    await bob.say(alice.nick, "private hi")
    line = await alice.wait_for(r"PRIVMSG \S+ :private hi$")
    assert line.target == alice.nick
    # Consumed lines are not matched twice; nothing else was said.
    await alice.expect_none(r"PRIVMSG", within=0.2)


async def test_wait_for_sees_earlier_lines_once(irc_client: ClientFactory) -> None:
    alice, bob = await asyncio.gather(irc_client(), irc_client())
    for i in range(3):
        await alice.say(bob.nick, f"n{i}")
    # All three arrive before we ask; each wait_for consumes one, in order.
    await bob.wait_for(r":n2$")
    assert (await bob.wait_for(r":n\d$")).text == "n0"
    assert (await bob.wait_for(r":n\d$")).text == "n1"
    with pytest.raises(TimeoutError):
        await bob.wait_for(r":n\d$", timeout=0.2)


async def test_ping_is_answered(irc_client: ClientFactory) -> None:
    client = await irc_client()
    await client.send_raw("PING :probe123")
    await client.wait_for(r"PONG \S+ :?probe123")
    assert client.connected


async def test_sasl_plain_login(irc_client: ClientFactory, make_account: AccountFactory) -> None:
    account = await make_account()
    client = await irc_client(
        unique_name("sasl"), sasl=(account.name, account.password), caps=["account-tag"]
    )
    assert client.sasl_result == "903"
    assert client.account == account.name
    assert "sasl" in client.caps


async def test_sasl_bad_password(irc_client: ClientFactory, make_account: AccountFactory) -> None:
    account = await make_account()
    client = await irc_client(
        unique_name("bad"), sasl=(account.name, "wrong-password"), sasl_required=False
    )
    assert client.sasl_result == "904"
    assert client.account is None
    with pytest.raises(SaslError) as info:
        await irc_client(unique_name("bad"), sasl=(account.name, "wrong-password"))
    assert info.value.numeric == "904"


async def test_accounts_register_quickly(make_account: AccountFactory) -> None:
    # No rate limit on REGISTER: tests may create many accounts.
    accounts = await asyncio.gather(*(make_account() for _ in range(4)))
    assert len({a.name for a in accounts}) == 4


async def test_account_tag_and_extended_join(
    irc_client: ClientFactory, make_account: AccountFactory
) -> None:
    chan = f"#{unique_name('c')}"
    account, observer, anon = await asyncio.gather(
        make_account(),
        irc_client(unique_name("obs"), caps=["account-tag", "extended-join"]),
        irc_client(unique_name("anon")),
    )
    await observer.join(chan)
    user = await irc_client(
        unique_name("usr"), sasl=(account.name, account.password), caps=["account-tag"]
    )
    await user.join(chan)
    join = await observer.wait_for(rf"JOIN {chan} ")
    assert join.nick == user.nick
    assert join.params[1] == account.name  # extended-join: channel, account, realname
    assert join.tags.get("account") == account.name
    await user.say(chan, "tagged")
    msg = await observer.wait_for(rf"PRIVMSG {chan} :tagged$")
    assert msg.startswith("@") and f"account={account.name}" in msg
    assert msg.tags["account"] == account.name
    # A user who is not logged in carries no account tag.
    await anon.join(chan)
    anon_join = await observer.wait_for(rf"JOIN {chan} ")
    assert anon_join.params[1] == "*"
    await anon.say(chan, "untagged")
    msg = await observer.wait_for(rf"PRIVMSG {chan} :untagged$")
    assert "account" not in msg.tags


async def test_tls_listener(irc_client: ClientFactory, ircd: InspIRCd) -> None:
    assert ircd.tls_port is not None and ircd.cert is not None
    client = await irc_client(unique_name("tls"), tls=True)  # verified against ircd.cert
    await client.say(client.nick, "over tls")
    await client.wait_for(r":over tls$")


async def test_ircd_restarts_on_same_port(
    ircd_factory: IrcdFactory, irc_client: ClientFactory
) -> None:
    server = ircd_factory("unlimited", services=False)
    port = server.port
    client = await irc_client(server=server)
    server.kill()
    await client.wait_closed(timeout=15)
    assert not client.connected
    with pytest.raises(OSError):
        await TestClient.connect(server.host, port, unique_name("x"), timeout=2)
    server.start()
    assert server.port == port
    again = await irc_client(server=server)
    assert again.connected


async def test_network_restart_relinks_services(
    network_factory: NetworkFactory, irc_client: ClientFactory
) -> None:
    net = network_factory("unlimited")
    account = await asyncio.to_thread(net.register)
    first = await irc_client(server=net, sasl=(account.name, account.password))
    assert first.account == account.name
    await asyncio.to_thread(net.restart_ircd)
    await first.wait_closed(timeout=15)
    # Atheme relinked by itself and kept the account.
    second = await irc_client(server=net, sasl=(account.name, account.password))
    assert second.account == account.name


async def test_stock_class_throttles_without_disconnecting(
    ircd_factory: IrcdFactory, irc_client: ClientFactory
) -> None:
    server = ircd_factory("stock", services=False)
    receiver, sender = await asyncio.gather(irc_client(server=server), irc_client(server=server))
    sent_at = time.monotonic()
    await sender.send_many([f"PRIVMSG {receiver.nick} :flood {i}" for i in range(20)])
    first = await receiver.collect(r":flood \d+$", within=1.0)
    rest = await receiver.collect(r":flood \d+$", within=max(0.0, sent_at + 3.0 - time.monotonic()))
    received = len(first) + len(rest)
    # About 8 lines pass at once, then one per second: far from all 20 in 3 s.
    assert 5 <= len(first) <= 12, [ln.text for ln in first]
    assert received < 20
    assert received <= len(first) + 4
    assert [ln.text for ln in first + rest] == [f"flood {i}" for i in range(received)]
    # Fakelag queues, it does not kill.
    assert sender.connected
    await sender.expect_none(r"^ERROR", within=0.1)


async def test_unlimited_class_passes_bursts(irc_client: ClientFactory) -> None:
    receiver, sender = await asyncio.gather(irc_client(), irc_client())
    await sender.send_many([f"PRIVMSG {receiver.nick} :burst {i}" for i in range(50)])
    lines = await receiver.wait_for_many(r":burst \d+$", 50, timeout=15)
    assert lines[-1].text == "burst 49"


async def test_join_error_raises(irc_client: ClientFactory) -> None:
    client = await irc_client()
    with pytest.raises(IRCError):
        await client.join("#" + "x" * 80)  # longer than CHANNELLEN


async def test_session_network_recovers_after_kill(
    irc_network: IRCNetwork, irc_client: ClientFactory, make_account: AccountFactory
) -> None:
    """A test that breaks the shared server gets it back for the next test."""
    irc_network.ircd.kill()
    irc_network.ensure_running()
    account = await make_account()
    client = await irc_client(sasl=(account.name, account.password))
    assert client.account == account.name


def test_free_port_and_wait_port() -> None:
    port = free_port()
    with pytest.raises(TimeoutError):
        wait_port("127.0.0.1", port, timeout=0.1)
    calls: list[int] = []

    def third_call() -> bool:
        calls.append(1)
        return len(calls) >= 3

    assert poll_until(third_call, 2, "the third call")
    with pytest.raises(TimeoutError, match="never"):
        poll_until(lambda: False, 0.05, "never")


def test_first_start_replaces_a_taken_port() -> None:
    server = InspIRCd(services=True)
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", server.servers_port))
        squatter.listen()
        taken = server.servers_port
        server.start()
        assert server.servers_port != taken
        assert server.running
        # Restarts keep the ports.
        ports = (server.port, server.servers_port)
        server.restart()
        assert (server.port, server.servers_port) == ports
    finally:
        squatter.close()
        server.close()


def test_make_run_config_is_valid(tmp_path: Path) -> None:
    """inspircd/inspircd.conf and inspircd/atheme.conf (``make run``) load and link.

    Same files, moved to free ports and to a MASTERCHIEF_ROOT in tmp_path.
    """
    root = tmp_path / "root"
    (root / "inspircd").mkdir(parents=True)
    (root / "var" / "atheme").mkdir(parents=True)
    client_port, servers_port = free_port(), free_port()
    conf = (REPO / "inspircd" / "inspircd.conf").read_text()
    assert 'port="6667"' in conf and 'port="7000"' in conf
    conf = conf.replace('port="6667"', f'port="{client_port}"')
    conf = conf.replace('port="7000"', f'port="{servers_port}"')
    (root / "inspircd" / "inspircd.conf").write_text(conf)
    shutil.copy(REPO / "inspircd" / "motd.txt", root / "inspircd" / "motd.txt")
    aconf = (REPO / "inspircd" / "atheme.conf").read_text()
    assert "port = 7000;" in aconf
    (root / "inspircd" / "atheme.conf").write_text(
        aconf.replace("port = 7000;", f"port = {servers_port};")
    )
    env = {**os.environ, "MASTERCHIEF_ROOT": str(root)}
    var = root / "var"
    ircd = Daemon(tmp_path / "ircd")
    atheme = Daemon(tmp_path / "atheme")
    try:
        ircd.spawn(
            [
                "inspircd",
                "--config",
                str(root / "inspircd" / "inspircd.conf"),
                "--nofork",
                "--runasroot",
            ],
            env,
        )
        poll_until(
            lambda: _can_connect(client_port),
            10,
            "make-run InspIRCd",
            check=ircd.check_alive,
        )
        atheme.spawn(
            [
                "atheme-services",
                "-n",
                "-c",
                str(root / "inspircd" / "atheme.conf"),
                "-D",
                str(var / "atheme"),
                "-l",
                str(var / "atheme.log"),
                "-p",
                str(var / "atheme.pid"),
            ],
            env,
        )
        log = var / "atheme.log"
        poll_until(
            lambda: log.exists() and "finished synching with uplink" in log.read_text(),
            10,
            "make-run Atheme to link",
            check=atheme.check_alive,
        )
        assert (var / "inspircd.pid").read_text().strip() == str(ircd.pid)
        assert (var / "inspircd.log").exists()
    finally:
        atheme.kill()
        ircd.kill()


def _can_connect(port: int) -> bool:
    try:
        wait_port("127.0.0.1", port, timeout=0.01)
    except TimeoutError:
        return False
    return True
