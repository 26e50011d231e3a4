"""End to end over real HTTP, the real bot and the real InspIRCd: a signed
GitHub push reaches the channel; every rejection (401, 413, 400, 404) and a
duplicate delivery announce nothing more; GitLab, Jenkins, PagerDuty and a
generic hook go through their built-in formatters to one line each.

Waits are on conditions: a rejected delivery that slipped through would be
announced before the valid one posted after it (one outbox, in order), so
"the valid line arrived and it is the only one" needs no quiet period."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp

import masterchief
from masterchief.bindings import Event
from masterchief.bindings.scriptapi import using
from tests.harness import running_bot, webhook_intake
from tests.sources.webhooks.signing import github_headers, standard_webhooks_headers

SECRET = "e2e-github-secret"
PAYLOADS = Path(__file__).parent / "payloads"
PUSH = PAYLOADS / "github_push.json"


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
        with using(app.script_api):  # what a script would get
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
            lambda ln: ln.command == "PRIVMSG" and "[push]" in ln.text, timeout=20
        )
        assert first.nick == nick and first.target == "#ops"
        # the output queue turns the CR/LF into a space: one line, never a command
        assert first.text == (
            f"[push] Codertocat -> refs/heads/main: Update README.md QUIT :owned"
            f" (delivery {delivery})"
        )
        await watcher.expect_none(lambda ln: ln.command == "QUIT" and ln.nick == nick, within=0.5)
        assert app.irc is not None and app.irc.connected.is_set()


def bot_lines(watcher: Any, nick: str) -> list[str]:
    """Every PRIVMSG the bot sent to #ops that the watcher has seen so far."""
    return [
        ln.text
        for ln in watcher.lines
        if ln.command == "PRIVMSG" and ln.nick == nick and ln.target == "#ops"
    ]


def push_body(title: str, pad: int = 0) -> bytes:
    push = json.loads(PUSH.read_bytes())
    push["head_commit"]["message"] = push["commits"][0]["message"] = title
    if pad:
        push["padding"] = "x" * pad
    return json.dumps(push).encode()


async def test_rejected_and_duplicate_deliveries_announce_nothing_more(
    tmp_path: Path, ircd: Any, irc_client: Any
) -> None:
    watcher = await irc_client()
    await watcher.join("#ops")
    async with running_bot(
        tmp_path,
        ircd.host,
        ircd.port,
        web={"host": "127.0.0.1", "port": 0, "max_body_bytes": 16384},
        webhooks={
            "github": {"secret": SECRET, "channels": ["#ops"]},
            "jenkins": {"channels": ["#ops"]},  # no token: disabled
        },
    ) as app:
        assert app.web is not None and app.web.port and app.irc is not None
        nick = app.irc.nickname
        base = f"http://127.0.0.1:{app.web.port}/webhooks"
        forged = push_body("forged 401")
        big = push_body("oversize 413", pad=20000)
        broken = b'{"ref": "refs/heads/main", "head_commit": {"message": "broken 400"'
        jenkins = (PAYLOADS / "jenkins_completed.json").read_bytes()
        rejected = [
            ("github", forged, github_headers("not-the-secret", forged), 401),
            ("github", big, signed(big), 413),
            ("github", broken, signed(broken), 400),
            ("jenkins", jenkins, {"X-Jenkins-Token": "anything"}, 404),
        ]
        first, second = push_body("valid one"), push_body("valid two")
        first_headers = signed(first)
        async with aiohttp.ClientSession() as session:

            async def post(provider: str, body: bytes, headers: dict[str, str]) -> int:
                async with session.post(f"{base}/{provider}", data=body, headers=headers) as resp:
                    return resp.status

            for provider, body, headers, status in rejected:
                assert await post(provider, body, headers) == status, provider
            assert await post("github", first, first_headers) == 202
            line = await watcher.wait_for(
                lambda ln: ln.command == "PRIVMSG" and "valid one" in ln.text, timeout=20
            )
            assert line.nick == nick
            assert bot_lines(watcher, nick) == [line.text]  # nothing rejected came before
            assert line.text.startswith("[github] Codertocat pushed 1 commit to main")

            # the same delivery again (a provider's retry): 200, not announced;
            # the next new delivery is, and only it
            assert await post("github", first, first_headers) == 200
            assert await post("github", second, signed(second)) == 202
            await watcher.wait_for(
                lambda ln: ln.command == "PRIVMSG" and "valid two" in ln.text, timeout=20
            )
        lines = bot_lines(watcher, nick)
        assert len(lines) == 2 and '"valid one"' in lines[0] and '"valid two"' in lines[1]
        assert webhook_intake(app).counters()["github"] == {
            "unauthorized": 1,
            "too_large": 1,
            "bad_request": 1,
            "accepted": 2,
            "duplicate": 1,
        }
        assert webhook_intake(app).counters()["jenkins"] == {"not_found": 1}


GL_TOKEN = "e2e-gitlab-token"  # loopback test servers only: not secrets
JK_TOKEN = "e2e-jenkins-token"
PD_SECRET = "e2e-pagerduty-secret"
REL_SECRET = "e2e-release-secret"


def hexmac(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def signed_deliveries() -> list[tuple[str, bytes, dict[str, str], str]]:
    """(route, body, headers, the line expected in the channel), signed now."""
    gl = (PAYLOADS / "gitlab_push.json").read_bytes()
    jk = (PAYLOADS / "jenkins_completed.json").read_bytes()
    pd = (PAYLOADS / "pagerduty_incident_triggered.json").read_bytes()
    rel = (PAYLOADS / "generic_release.json").read_bytes()
    return [
        ("gitlab", gl,
         {"X-Gitlab-Token": GL_TOKEN, "X-Gitlab-Event": "Push Hook",
          "X-Gitlab-Event-UUID": str(uuid.uuid4())},
         r"\[gitlab\] jsmith pushed 4 commits to master of mike/diaspora: .*/compare/\S+"),
        ("jenkins", jk, {"Authorization": f"Bearer {JK_TOKEN}"},
         r"\[jenkins\] asgard #18 SUCCESS .*http://localhost:8080/job/asgard/18/"),
        ("pagerduty", pd,
         {"X-PagerDuty-Signature": f"v1={hexmac(PD_SECRET, pd)}", "X-Webhook-Id": str(uuid.uuid4())},
         r"\[pagerduty\] TRIGGERED #2 on API Service .*https://acme\.pagerduty\.com/incidents/PGR0VU2"),
        ("generic/release", rel, standard_webhooks_headers(REL_SECRET, rel),
         r'\[release\] .*"version":"2\.4\.1".*'),
    ]  # fmt: skip


async def test_each_provider_goes_from_http_through_its_formatter_to_the_channel(
    tmp_path: Path, ircd: Any, irc_client: Any
) -> None:
    watcher = await irc_client()
    await watcher.join("#ops")
    ops = ["#ops"]
    async with running_bot(
        tmp_path,
        ircd.host,
        ircd.port,
        web={"host": "127.0.0.1", "port": 0},
        webhooks={
            "gitlab": {"token": GL_TOKEN, "channels": ops},
            "jenkins": {"token": JK_TOKEN, "channels": ops},
            "pagerduty": {"secrets": [PD_SECRET], "channels": ops},
            "generic": [{"name": "release", "secret": REL_SECRET, "channels": ops}],
        },
    ) as app:
        assert app.web is not None and app.web.port and app.irc is not None
        nick = app.irc.nickname
        deliveries = signed_deliveries()
        async with aiohttp.ClientSession() as session:
            for route, body, headers, _ in deliveries:
                url = f"http://127.0.0.1:{app.web.port}/webhooks/{route}"
                async with session.post(url, data=body, headers=headers) as resp:
                    assert resp.status == 202, (route, await resp.text())
        for route, _, _, expected in deliveries:
            line = await watcher.wait_for(
                lambda ln, e=expected: ln.command == "PRIVMSG" and re.fullmatch(e, ln.text),
                timeout=20,
            )
            assert line.nick == nick and line.target == "#ops", route
        assert len(bot_lines(watcher, nick)) == 4
