"""Run a MasterChief App in-process against a real server, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from masterchief.config.engine import build_config
from masterchief.config.schema import Config
from masterchief.identity.principal import Identity
from masterchief.identity.users import User
from masterchief.runtime.compose import App
from masterchief.sources.base import SourceFamily
from masterchief.sources.webhooks.intake import WebhookIntake
from tests.servers import unique_name


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def bot_config_data(
    tmp: Path, host: str, port: int, *, nick: str | None = None, **over: Any
) -> dict[str, Any]:
    nick = nick or unique_name("mc")
    base: dict[str, Any] = {
        "irc": {
            "host": host,
            "port": port,
            "nick": nick,
            "alt_nicks": [nick + "_"],
            "channels": ["#ops"],
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            # the session server has no flood limits; don't make tests wait
            "output": {"burst": 200, "rate": 1000.0, "recvq": 1048576},
        },
        "bot": {
            "scripts": [str(tmp / "scripts")],
            "handler_timeout_s": 2,
            # tests type commands faster than people; flood tests set their own
            "flood": {"commands": 1000},
        },
        "store": {"path": str(tmp / "mc.db")},
        "web": {"port": 0},  # never contend for 8080
    }
    return deep_merge(base, over)


async def wait_until(pred: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)
    del what


@contextlib.asynccontextmanager
async def running_bot(
    tmp: Path,
    host: str,
    port: int,
    *,
    wait_channels: bool = True,
    environ: Mapping[str, str] | None = None,
    config: Config | None = None,
    families: Sequence[SourceFamily] | None = None,
    **over: Any,
) -> AsyncIterator[App]:
    """Start an App in this event loop; yields once it is connected and joined.
    ``config`` (e.g. from ``load_config``) replaces the built one; ``families``
    (default: the bot's list) the source families."""
    (tmp / "scripts").mkdir(parents=True, exist_ok=True)
    if config is None:
        data = bot_config_data(tmp, host, port, **over)
        config = build_config(data, project_dir=tmp, environ=environ or {})
    app = await (App.create(config) if families is None else App.create(config, families=families))
    task = asyncio.create_task(app.run(), name="app")
    try:
        assert app.irc is not None
        waiter = asyncio.create_task(app.irc.connected.wait())
        done, _ = await asyncio.wait({waiter, task}, timeout=15, return_when="FIRST_COMPLETED")
        if task in done:
            waiter.cancel()
            task.result()  # raises the failure
            raise RuntimeError("bot stopped before connecting")
        if waiter not in done:
            waiter.cancel()
            raise TimeoutError("bot did not connect within 15s")
        if wait_channels:
            want = {c.name.lower() for c in config.irc.channels}
            await wait_until(lambda: want <= {c.lower() for c in app.irc.channels}, 10)  # type: ignore[union-attr]
        yield app
    finally:
        app.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def Who(
    handle: str,
    flags: str = "",
    chans: Mapping[str, str] | None = None,
    restricted: str | None = None,
) -> Identity:
    """A dispatcher principal for tests: the bot's own adapter (``Identity``)
    over a user record with these global and per-channel flags."""
    user = User(handle, flags=flags, chanflags=chans or {})
    return Identity(user, "account", restricted=restricted)


# Test clients connect from 127.0.0.1 and the test ircd does not resolve
# hostnames (inspircd.conf: resolvehostnames="no"), so this is their host.
CLIENT_HOST = "127.0.0.1"

# ``running_bot(..., users=TRUST_HOSTMASKS)``: the session network has
# services accounts, where a hostmask record otherwise carries no flags above +v.
TRUST_HOSTMASKS: dict[str, Any] = {"hostmask_flags_on_account_networks": True}


def client_mask(ident: str) -> str:
    """A strong hostmask for a test client connected with ``username=ident``
    (``*!ident@*`` is weak: it never carries flags above +v)."""
    return f"*!{ident}@{CLIENT_HOST}"


def webhook_intake(app: App) -> WebhookIntake:
    """The running bot's webhook intake (the ``webhooks`` source)."""
    intake = app.sources.find("webhooks", "intake")
    assert isinstance(intake, WebhookIntake), "the bot has no webhook intake (web disabled?)"
    return intake
