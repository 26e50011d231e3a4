"""Shared fixtures: real InspIRCd/Atheme servers and raw IRC test clients.

Session-scoped (started once, shared by every test; do not kill them — use
the factories for servers a test wants to break):

- ``irc_network`` -> :class:`IRCNetwork`: InspIRCd with the "unlimited" connect
  class and a TLS listener, Atheme linked as ``services.test``.
- ``ircd`` -> :class:`InspIRCd` (``ircd.host``, ``ircd.port``, ``ircd.tls_port``,
  ``ircd.cert``), ``atheme`` -> :class:`Atheme`.

Per test (everything they start is killed at teardown, pass or fail):

- ``ircd_factory(limits="stock", *, start=True, **InspIRCd options) -> InspIRCd``
- ``network_factory(limits="stock", *, services=True, start=True, **options)
  -> IRCNetwork``
- ``irc_client(nick=None, *, server=None, tls=False, **TestClient.connect options)``
  (async) -> connected :class:`TestClient`; ``server`` is an InspIRCd, an
  IRCNetwork or ``(host, port)``, default the session network. Registration
  ends on the server's once-a-second tick, so connect several clients with
  ``asyncio.gather(irc_client(), irc_client())`` rather than one by one.
- ``make_account(name=None, password=None, *, network=None)`` (async) ->
  :class:`Account` registered with NickServ (default: session network).

On a failing test the servers' log tails are printed in the teardown section.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from masterchief.store.sqlite import SqliteStore, open_store
from tests.ircclient import TestClient
from tests.servers import (
    Account,
    Atheme,
    ConnectLimits,
    InspIRCd,
    IRCNetwork,
    LimitsName,
    unique_name,
)

ServerRef = InspIRCd | IRCNetwork | tuple[str, int]


class IrcdFactory(Protocol):
    def __call__(
        self,
        limits: LimitsName | ConnectLimits = ...,
        *,
        start: bool = ...,
        **options: Any,
    ) -> InspIRCd: ...


class NetworkFactory(Protocol):
    def __call__(
        self,
        limits: LimitsName | ConnectLimits = ...,
        *,
        services: bool = ...,
        start: bool = ...,
        **options: Any,
    ) -> IRCNetwork: ...


class ClientFactory(Protocol):
    def __call__(
        self,
        nick: str | None = ...,
        *,
        server: ServerRef | None = ...,
        tls: bool = ...,
        **options: Any,
    ) -> Awaitable[TestClient]: ...


AccountFactory = Callable[..., Awaitable[Account]]


# ---------------------------------------------------------------- failure reporting


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"_mc_report_{report.when}", report)
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    node = request.node
    return any(
        getattr(getattr(node, f"_mc_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


def _dump(request: pytest.FixtureRequest, what: str, diagnostics: Callable[[], str]) -> None:
    if _test_failed(request):
        print(f"\n===== {what} logs =====\n{diagnostics()}")


# ---------------------------------------------------------------- session network


@pytest.fixture(scope="session")
def irc_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IRCNetwork]:
    net = IRCNetwork(tmp_path_factory.mktemp("ircnet"), limits="unlimited", tls=True)
    try:
        net.start()
        yield net
    finally:
        net.close()


@pytest.fixture(scope="session")
def ircd(irc_network: IRCNetwork) -> InspIRCd:
    return irc_network.ircd


@pytest.fixture(scope="session")
def atheme(irc_network: IRCNetwork) -> Atheme:
    return irc_network.services


# ---------------------------------------------------------------- factories


@pytest.fixture
def ircd_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[IrcdFactory]:
    started: list[InspIRCd] = []

    def factory(
        limits: LimitsName | ConnectLimits = "stock", *, start: bool = True, **options: Any
    ) -> InspIRCd:
        server = InspIRCd(tmp_path_factory.mktemp("ircd"), limits=limits, **options)
        started.append(server)
        if start:
            server.start()
        return server

    try:
        yield factory
    finally:
        for server in started:
            _dump(request, f"InspIRCd {server.workdir}", server.diagnostics)
            server.close()


@pytest.fixture
def network_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[NetworkFactory]:
    started: list[IRCNetwork] = []

    def factory(
        limits: LimitsName | ConnectLimits = "stock",
        *,
        services: bool = True,
        start: bool = True,
        **options: Any,
    ) -> IRCNetwork:
        net = IRCNetwork(
            tmp_path_factory.mktemp("ircnet"), services=services, limits=limits, **options
        )
        started.append(net)
        if start:
            net.start()
        return net

    try:
        yield factory
    finally:
        for net in started:
            _dump(request, f"network {net.workdir}", net.diagnostics)
            net.close()


def _address(server: ServerRef, tls: bool) -> tuple[str, int, str | None]:
    if isinstance(server, tuple):
        return server[0], server[1], None
    ircd = server.ircd if isinstance(server, IRCNetwork) else server
    if not tls:
        return ircd.host, ircd.port, None
    if ircd.tls_port is None:
        raise ValueError(f"{ircd!r} has no TLS listener (start it with tls=True)")
    return ircd.host, ircd.tls_port, str(ircd.cert) if ircd.cert else None


@pytest.fixture
async def irc_client(
    irc_network: IRCNetwork, request: pytest.FixtureRequest
) -> AsyncIterator[ClientFactory]:
    clients: list[TestClient] = []

    async def factory(
        nick: str | None = None,
        *,
        server: ServerRef | None = None,
        tls: bool = False,
        **options: Any,
    ) -> TestClient:
        if server is None:
            irc_network.ensure_running()
            server = irc_network
        host, port, cafile = _address(server, tls)
        if cafile is not None:
            options.setdefault("tls_cafile", cafile)
        client = await TestClient.connect(host, port, nick or unique_name("tc"), tls=tls, **options)
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        if _test_failed(request):
            for client in clients:
                tail = "\n".join(client.lines[-20:])
                print(f"\n===== last lines of {client.nick} =====\n{tail}")
        # QUIT, but do not wait long for the server to close: on a fakelagged
        # connection the QUIT waits behind the flood.
        results = await asyncio.gather(
            *(client.quit(timeout=0.5) for client in clients), return_exceptions=True
        )
        for client, result in zip(clients, results, strict=True):
            if isinstance(result, BaseException):
                with contextlib.suppress(Exception):
                    await client.close()


@pytest.fixture
def make_account(irc_network: IRCNetwork) -> AccountFactory:
    async def factory(
        name: str | None = None,
        password: str | None = None,
        *,
        network: IRCNetwork | None = None,
    ) -> Account:
        net = network or irc_network
        if net is irc_network:
            irc_network.ensure_running()
        return await asyncio.to_thread(net.services.register, name, password)

    return factory


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A fresh store (SQLite file ``mc.db`` in the test's tmp_path), closed after."""
    s = await open_store(tmp_path / "mc.db")
    try:
        yield s
    finally:
        await s.close()
