"""Replayed webhook deliveries, end to end: real HTTP, the real bot, the real
InspIRCd.  An attacker who captured a signed delivery re-posts it with a new
delivery id, with none, or as it was; each is refused (status code, a log
line) and the channel sees the delivery once.  Standard Webhooks is what a
generic hook speaks; the old ``X-Signature`` form only with
``legacy_signature: true``; GitHub deliveries are deduplicated by their
signed body.  The refusal survives a restart (it is the store's).

Waits are on conditions: every refused replay is posted before a fresh
"sentinel" delivery, and the outbox announces in order, so once the
sentinel's line is in the channel a replay that slipped through would be
there too."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import running_bot, webhook_intake
from tests.sources.webhooks.signing import github_headers, standard_webhooks_headers

STD_SECRET = "e2e-standard-release-secret"  # loopback test servers only: not secrets
OLD_SECRET = "e2e-legacy-release-secret"
GH_SECRET = "e2e-github-replay-secret"
PUSH = Path(__file__).parent / "payloads" / "github_push.json"


def release(version: str) -> bytes:
    return json.dumps({"version": version, "service": "api"}).encode()


def legacy_headers(body: bytes, ts: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if ts is None else ts))
    mac = hmac.new(OLD_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "X-Timestamp": stamp,
        "X-Signature": "sha256=" + mac.hexdigest(),
        "X-Request-Id": str(uuid.uuid4()),
    }


def push(message: str) -> bytes:
    data = json.loads(PUSH.read_bytes())
    data["head_commit"]["message"] = data["commits"][0]["message"] = message
    return json.dumps(data).encode()


def hooks() -> dict[str, Any]:
    ops = ["#ops"]
    return {
        "github": {"secret": GH_SECRET, "channels": ops},
        "generic": [
            {"name": "release", "secret": STD_SECRET, "channels": ops},
            {"name": "legacy", "secret": OLD_SECRET, "legacy_signature": True, "channels": ops},
        ],
    }


def said(watcher: Any, nick: str, fragment: str, since: int = 0) -> list[str]:
    return [
        ln.text
        for ln in watcher.lines[since:]
        if ln.command == "PRIVMSG"
        and ln.nick == nick
        and ln.target == "#ops"
        and fragment in ln.text
    ]


async def test_replayed_deliveries_are_refused_and_announced_once(
    tmp_path: Path, ircd: Any, irc_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "masterchief.web")
    watcher = await irc_client()
    await watcher.join("#ops")
    web = {"host": "127.0.0.1", "port": 0}
    std_body, old_body, gh_body = release("7.0.1-std"), release("7.0.1-old"), push("replayed?")
    std = standard_webhooks_headers(STD_SECRET, std_body)
    old = legacy_headers(old_body)
    gh = github_headers(GH_SECRET, gh_body)
    async with running_bot(tmp_path, ircd.host, ircd.port, web=web, webhooks=hooks()) as app:
        assert app.web is not None and app.web.port and app.irc is not None
        nick = app.irc.nickname
        assert nick is not None
        base = f"http://127.0.0.1:{app.web.port}/webhooks"
        async with aiohttp.ClientSession() as session:

            async def post(route: str, body: bytes, headers: dict[str, str]) -> int:
                async with session.post(f"{base}/{route}", data=body, headers=headers) as resp:
                    return resp.status

            assert await post("generic/release", std_body, std) == 202
            assert await post("generic/legacy", old_body, old) == 202
            assert await post("github", gh_body, gh) == 202

            no_id = {k: v for k, v in std.items() if k != "webhook-id"}
            stale = standard_webhooks_headers(STD_SECRET, std_body, ts=time.time() - 600)
            refused = [
                # Standard Webhooks: the id is signed, so a new one (or none)
                # breaks the signature; the same one is the same delivery
                ("generic/release", std_body, {**std, "webhook-id": "msg_new"}, 401),
                ("generic/release", std_body, no_id, 401),
                ("generic/release", std_body, std, 200),
                ("generic/release", std_body, stale, 401),  # signed 10 minutes ago
                # the legacy form is not taken where it was not enabled
                ("generic/release", old_body, legacy_headers(old_body), 401),
                # legacy: X-Request-Id is not signed; what is signed is the same
                ("generic/legacy", old_body, {**old, "X-Request-Id": str(uuid.uuid4())}, 200),
                ("generic/legacy", old_body, {k: v for k, v in old.items() if k != "X-Request-Id"}, 200),
                ("generic/legacy", old_body, old, 200),
                ("generic/legacy", std_body, standard_webhooks_headers(OLD_SECRET, std_body), 401),
                # GitHub: a new X-GitHub-Delivery on the captured signed body
                ("github", gh_body, {**gh, "X-GitHub-Delivery": str(uuid.uuid4())}, 200),
                ("github", gh_body, {k: v for k, v in gh.items() if k != "X-GitHub-Delivery"}, 200),
            ]  # fmt: skip
            for route, body, headers, status in refused:
                assert await post(route, body, headers) == status, (route, headers)

            sentinel = release("7.0.2-sentinel")
            assert await post("generic/release", sentinel, standard_webhooks_headers(STD_SECRET, sentinel)) == 202  # fmt: skip
            await watcher.wait_for(
                lambda ln: ln.command == "PRIVMSG" and "7.0.2-sentinel" in ln.text, timeout=20
            )
        assert len(said(watcher, nick, "7.0.1-std")) == 1
        assert len(said(watcher, nick, "7.0.1-old")) == 1
        assert len(said(watcher, nick, "replayed?")) == 1
        counters = webhook_intake(app).counters()
        assert counters["generic/release"] == {"accepted": 2, "unauthorized": 4, "duplicate": 1}
        assert counters["generic/legacy"] == {"accepted": 1, "duplicate": 3, "unauthorized": 1}
        assert counters["github"] == {"accepted": 1, "duplicate": 2}
    logged = [r.getMessage() for r in caplog.records if r.name == "masterchief.web"]
    assert sum("rejected (401)" in m and "generic/release" in m for m in logged) == 4
    assert sum("duplicate delivery" in m for m in logged) == 6
    for secret in (STD_SECRET, OLD_SECRET, GH_SECRET):
        assert not any(secret in m for m in logged)

    # after a restart on the same store the captured deliveries are still known
    mark = len(watcher.lines)
    async with running_bot(tmp_path, ircd.host, ircd.port, web=web, webhooks=hooks()) as app:
        assert app.web is not None and app.web.port and app.irc is not None
        nick = app.irc.nickname
        assert nick is not None
        base = f"http://127.0.0.1:{app.web.port}/webhooks"
        async with aiohttp.ClientSession() as session:
            replays = [
                ("generic/release", std_body, std),
                ("generic/legacy", old_body, {**old, "X-Request-Id": str(uuid.uuid4())}),
                ("github", gh_body, {**gh, "X-GitHub-Delivery": str(uuid.uuid4())}),
            ]
            for route, body, headers in replays:
                async with session.post(f"{base}/{route}", data=body, headers=headers) as resp:
                    assert (resp.status, await resp.json()) == (200, {"duplicate": True}), route
            sentinel = release("7.0.3-sentinel")
            headers = standard_webhooks_headers(STD_SECRET, sentinel)
            async with session.post(
                f"{base}/generic/release", data=sentinel, headers=headers
            ) as resp:
                assert resp.status == 202
        await watcher.wait_for(
            lambda ln: ln.command == "PRIVMSG" and "7.0.3-sentinel" in ln.text, timeout=20
        )
        for fragment in ("7.0.1-std", "7.0.1-old", "replayed?"):
            assert said(watcher, nick, fragment, since=mark) == [], fragment
