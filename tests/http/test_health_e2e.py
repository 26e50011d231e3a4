"""/healthz and /metrics end to end: the real bot, a real InspIRCd that is
stopped and started again, real HTTP.  With ``web.admin`` they live on a
port of their own behind a bearer token, and the webhook port answers only
``/webhooks/*``; while IRC is down /healthz is 503 and names irc, and it is
200 again once the bot is back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import running_bot
from tests.sources.webhooks.signing import github_headers

TOKEN = "e2e-admin-token-5521"  # loopback test servers only: not a secret
SECRET = "e2e-health-github-secret"
PUSH = Path(__file__).parents[1] / "sources" / "webhooks" / "payloads" / "github_push.json"


async def health(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        return resp.status, json.loads(await resp.text())


async def wait_health(
    session: aiohttp.ClientSession, url: str, want: int, timeout: float = 20.0
) -> dict[str, Any]:
    """Poll /healthz until it answers ``want`` (a condition, not a sleep)."""
    async with asyncio.timeout(timeout):
        while True:
            status, body = await health(session, url)
            if status == want:
                return body
            await asyncio.sleep(0.05)


async def test_healthz_is_503_naming_irc_while_the_ircd_is_down_and_200_once_back(
    tmp_path: Path, ircd_factory: Any
) -> None:
    server = ircd_factory("unlimited", services=False)
    over: dict[str, Any] = {
        "web": {
            "host": "127.0.0.1",
            "port": 0,
            "admin": {"host": "127.0.0.1", "port": 0, "token": "${env:MC_ADMIN_TOKEN}"},
        },
        "webhooks": {"github": {"secret": SECRET, "channels": ["#ops"]}},
    }
    environ = {"MC_ADMIN_TOKEN": TOKEN}
    async with running_bot(tmp_path, server.host, server.port, environ=environ, **over) as app:
        assert app.web is not None and app.web.port and app.web.admin_port
        hooks = f"http://127.0.0.1:{app.web.port}"
        admin = f"http://127.0.0.1:{app.web.admin_port}"
        async with aiohttp.ClientSession() as session:
            # the port GitHub reaches serves webhooks and nothing else
            for path in ("/healthz", "/metrics"):
                async with session.get(hooks + path) as resp:
                    assert resp.status == 404, path
            body = PUSH.read_bytes()
            async with session.post(
                hooks + "/webhooks/github", data=body, headers=github_headers(SECRET, body)
            ) as resp:
                assert resp.status == 202
            # the admin port wants the token
            for path in ("/healthz", "/metrics"):
                async with session.get(admin + path) as resp:
                    assert resp.status == 401, path
            async with session.get(
                admin + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                assert resp.status == 200
                assert "masterchief_irc_connected 1.0" in await resp.text()

            up = await wait_health(session, admin + "/healthz", 200)
            assert up["status"] == "ok" and up["components"]["irc"] == {"status": "ok"}

            await asyncio.to_thread(server.stop)
            down = await wait_health(session, admin + "/healthz", 503)
            assert down["status"] == "unhealthy" and down["unhealthy"] == ["irc"]
            assert down["components"]["irc"]["status"] == "down"
            assert down["components"]["irc"]["reason"]  # why: a non-empty reason
            assert down["reason"].startswith("irc down: ")
            for part in ("store", "web", "sources"):
                assert down["components"][part] == {"status": "ok"}, part

            await asyncio.to_thread(server.start)
            back = await wait_health(session, admin + "/healthz", 200)
            assert back["status"] == "ok" and "unhealthy" not in back
            assert app.irc is not None and app.irc.connected.is_set()
