"""Issue 3, end to end over HTTP: IRCd stopped -> 20 signed GitHub pushes
accepted (202) -> IRCd started -> all 20 announcements arrive in order with the
delayed marker, through intake, formatter and outbox."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import running_bot, wait_until
from tests.sources.webhooks.signing import github_headers

SECRET = "outage-secret"
PUSH = Path(__file__).parent / "payloads" / "github_push.json"


def signed(body: bytes) -> dict[str, str]:
    return github_headers(SECRET, body)


async def test_twenty_webhooks_while_the_ircd_is_down_arrive_in_order_marked_delayed(
    tmp_path: Path, ircd_factory: Any, irc_client: Any
) -> None:
    server = ircd_factory("unlimited", services=False)
    over: dict[str, Any] = {
        # the first reconnect comes 3-6 s after the drop: the watcher joins first
        "irc": {"reconnect_min_s": 6.0, "reconnect_max_s": 6.0},
        "outbox": {"delayed_after_s": 0.0},
        "web": {"host": "127.0.0.1", "port": 0},
        "webhooks": {"github": {"secret": SECRET, "channels": ["#ops"]}},
    }
    push = json.loads(PUSH.read_bytes())
    async with running_bot(tmp_path, server.host, server.port, **over) as app:
        assert app.irc is not None and app.web is not None
        nick = app.irc.nickname
        await asyncio.to_thread(server.stop)
        await wait_until(lambda: not app.irc.connected.is_set(), 10)  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{app.web.port}/webhooks/github"
        async with aiohttp.ClientSession() as session:
            for i in range(20):
                push["head_commit"]["message"] = f"change number {i:02d}"
                push["commits"][0]["message"] = f"change number {i:02d}"
                body = json.dumps(push).encode()
                async with session.post(url, data=body, headers=signed(body)) as resp:
                    assert resp.status == 202, await resp.text()
        await wait_until(lambda: app.outbox.depth() >= 20, 20)
        await asyncio.to_thread(server.start)
        watcher = await irc_client(server=server)
        await watcher.join("#ops")
        assert app.irc.connects == 1, "the bot came back before the watcher joined"

        def announced(ln: Any) -> bool:
            return ln.command == "PRIVMSG" and ln.nick == nick and "[github]" in ln.text

        got = await watcher.wait_for_many(announced, 20, timeout=30)
        numbers = []
        for ln in got:
            assert re.match(r"\[delayed \d+[smh]\] \[github\] ", ln.text), ln.text
            numbers.append(int(re.search(r"change number (\d\d)", ln.text).group(1)))  # type: ignore[union-attr]
        assert numbers == list(range(20))
        await watcher.expect_none(announced, within=0.5)
