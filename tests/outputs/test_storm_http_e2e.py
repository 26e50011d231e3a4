"""Issue 3, item 7, over the real path: 500 Alertmanager alerts POSTed within
5 s (HTTP -> verification -> durable intake -> formatter -> outbox -> pacer ->
InspIRCd with stock flood settings). The bot stays connected and within 60 s
every alert is represented in the channel (named, in a range, or counted)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from masterchief.config.schema import OutputConfig
from tests.harness import running_bot
from tests.outputs.test_outbox_e2e import Tally, alertmanager_notification, storm_announcements

TOKEN = "storm-http-token"
AM_LINE = re.compile(
    r"^\[alertmanager\] (?P<status>FIRING|RESOLVED): (?P<name>\S+)(?: \u00d7\d+)?"
    r"(?: \([^)]*\))? on (?P<instances>.+?)(?:: .*)?$"
)


async def post_evenly(url: str, bodies: list[bytes], seconds: float) -> list[int]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    statuses: list[int] = []
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:

        async def one(body: bytes) -> None:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                statuses.append(resp.status)

        start = loop.time()
        tasks = []
        for i, body in enumerate(bodies):
            due = start + seconds * i / len(bodies)
            if due > loop.time():
                await asyncio.sleep(due - loop.time())  # pacing the sender, not synchronising
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    return statuses


@pytest.mark.timeout(150)
async def test_500_alertmanager_webhooks_in_5s_on_stock_flood_settings(
    tmp_path: Path, ircd_factory: Any, irc_client: Any
) -> None:
    server = ircd_factory("stock", services=False)
    watcher_task = asyncio.create_task(irc_client(server=server))
    over: dict[str, Any] = {
        "irc": {"channels": ["#alerts"], "output": OutputConfig().model_dump()},
        "web": {"host": "127.0.0.1", "port": 0},
        "webhooks": {"alertmanager": {"bearer_token": TOKEN, "channels": ["#alerts"]}},
    }
    async with running_bot(tmp_path, server.host, server.port, **over) as app:
        assert app.irc is not None and app.web is not None
        nick = app.irc.nickname
        watcher = await watcher_task
        await watcher.join("#alerts")
        announcements = storm_announcements()
        tally = Tally(announcements, verbatim=AM_LINE)
        bodies = [
            json.dumps(alertmanager_notification(i, name, meta)).encode()
            for i, (_, name, meta) in enumerate(announcements)
        ]
        url = f"http://127.0.0.1:{app.web.port}/webhooks/alertmanager"
        loop = asyncio.get_running_loop()
        started = loop.time()
        poster = asyncio.create_task(post_evenly(url, bodies, 5.0))

        def from_bot(ln: Any) -> bool:
            return ln.command == "PRIVMSG" and ln.nick == nick and ln.target == "#alerts"

        try:
            while tally.missing() or not poster.done():
                remaining = started + 60 - loop.time()
                assert remaining > 0, f"after 60 s {tally.missing()} alerts not represented"
                line = await watcher.wait_for(from_bot, timeout=remaining)
                tally.see(line.text)
            statuses = await poster
        finally:
            poster.cancel()
            await asyncio.gather(poster, return_exceptions=True)
        assert statuses.count(202) == 500, sorted(set(statuses))
        assert tally.errors == []
        assert app.irc.connects == 1 and app.irc.connected.is_set()
        assert not [
            ln for ln in watcher.lines if ln.nick == nick and ln.command in ("QUIT", "ERROR")
        ]
        assert tally.lines < 60  # folded into summaries, not 500 lines
