"""End to end: a signed GitHub push over real HTTP reaches the channel through
the real bot and the real InspIRCd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

import masterchief
from masterchief.bindings import Event
from tests.harness import running_bot
from tests.web.signing import github_headers

SECRET = "e2e-github-secret"
PUSH = Path(__file__).parent / "payloads" / "github_push.json"


def signed(body: bytes) -> dict[str, str]:
    return github_headers(SECRET, body)


def on_push(ev: Event) -> None:
    head = ev.payload["head_commit"]
    masterchief.say(
        "#ops",
        f"[push] {ev.payload['pusher']['name']} -> {ev.payload['ref']}: {head['message']}"
        f" (delivery {ev.tags['delivery']})",
    )


async def test_signed_github_push_is_announced_in_the_channel(
    tmp_path: Path, ircd: Any, irc_client: Any
) -> None:
    push = json.loads(PUSH.read_bytes())
    # hostile text in a commit message: the Event carries it unchanged, and
    # the output queue keeps CR/LF off the wire (no QUIT, no second line).
    push["head_commit"]["message"] = "Update README.md\r\nQUIT :owned"
    body = json.dumps(push).encode()
    watcher = await irc_client()
    await watcher.join("#ops")
    async with running_bot(
        tmp_path,
        ircd.host,
        ircd.port,
        web={"host": "127.0.0.1", "port": 0},
        webhooks={"github": {"secret": SECRET, "channels": ["#ops"]}},
    ) as app:
        assert app.web is not None and app.web.port
        masterchief.bind("webhook", "-|-", "github/push", on_push)
        nick = app.irc.nickname  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{app.web.port}/webhooks/github"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=body, headers=signed(body)) as resp:
                assert resp.status == 202
                delivery = (await resp.json())["id"]
            async with session.post(url, data=body, headers={"X-GitHub-Event": "push"}) as resp:
                assert resp.status == 401
        first = await watcher.wait_for(
            lambda ln: ln.command == "PRIVMSG" and "[push]" in ln.text, timeout=10
        )
        assert first.nick == nick and first.target == "#ops"
        assert first.text.startswith("[push] Codertocat -> refs/heads/main: Update README.md")
        # the output queue turns the CR/LF into a line break *inside* the
        # announcement: what follows it is more PRIVMSG text, never a command
        rest = await watcher.wait_for(
            lambda ln: ln.command == "PRIVMSG" and f"(delivery {delivery})" in ln.text, timeout=10
        )
        assert rest.nick == nick and rest.target == "#ops"
        assert "QUIT :owned" in first.text + rest.text
        await watcher.expect_none(lambda ln: ln.command == "QUIT" and ln.nick == nick, within=0.5)
        assert app.irc is not None and app.irc.connected.is_set()
