"""The webhook server over real HTTP: intake, every rejection path, dedup,
store failure, slow handlers, recovery after a crash, and the App wiring.

Most tests run a ``WebServer`` with a real ``SqliteStore`` and the real
``Dispatcher`` (no IRC); the App tests at the end run the whole bot against
the session InspIRCd.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import masterchief
from masterchief.bindings import BindingTable, Dispatcher, Event
from masterchief.bindings.scriptapi import using
from masterchief.config.engine import ConfigError, build_config
from masterchief.config.schema import (
    AlertmanagerHook,
    BasicAuthConfig,
    GenericHook,
    GithubHook,
    GitlabHook,
    JenkinsHook,
    PagerDutyHook,
    WebhooksConfig,
)
from masterchief.config.secrets import Secret
from masterchief.http.health import HealthInfo
from masterchief.http.server import WebServer
from masterchief.runtime.compose import App
from masterchief.sources.webhooks.intake import MAX_BACKLOG, WebhookIntake
from masterchief.store.api import NewDelivery
from masterchief.store.sqlite import SqliteStore, open_store
from tests.harness import bot_config_data, wait_until
from tests.sources.webhooks.signing import standard_webhooks_headers

PAYLOADS = Path(__file__).parents[1] / "sources" / "webhooks" / "payloads"

GH_SECRET = "gh-test-secret"
GL_TOKEN = "gl-test-token"
GL_SIGNING = "whsec_" + base64.b64encode(b"gitlab-signing-key-bytes").decode()
JK_TOKEN = "jk-test-token"
AM_TOKEN = "am-test-token"
PD_SECRETS = ["pd-old-secret", "pd-new-secret"]
REL_SECRET = "release-test-secret"
LIMIT = 4096

ALL_HOOKS: dict[str, Any] = {
    "github": {"secret": GH_SECRET, "channels": ["#dev"]},
    "gitlab": {"token": GL_TOKEN, "signing_secret": GL_SIGNING, "channels": ["#dev"]},
    "jenkins": {"token": JK_TOKEN, "channels": ["#ci"]},
    "alertmanager": {"bearer_token": AM_TOKEN, "channels": ["#alerts"]},
    "pagerduty": {"secrets": PD_SECRETS, "channels": ["#oncall"]},
    "generic": [{"name": "release", "secret": REL_SECRET, "channels": ["#ops"]}],
}


def payload(name: str) -> bytes:
    return (PAYLOADS / f"{name}.json").read_bytes()


def hexmac(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def github_headers(body: bytes, event: str = "push", delivery: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hexmac(GH_SECRET, body),
    }


def gitlab_signed(body: bytes) -> dict[str, str]:
    key = base64.b64decode(GL_SIGNING.removeprefix("whsec_"))
    msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    sig = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, "sha256").digest())
    return {
        "X-Gitlab-Token": GL_TOKEN,
        "X-Gitlab-Event": "Push Hook",
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": f"v1,{sig.decode()}",
    }


def generic_headers(
    body: bytes, ts: float | None = None, msg_id: str | None = None
) -> dict[str, str]:
    """A generic hook's Standard Webhooks headers (REL_SECRET's bytes are the key)."""
    return standard_webhooks_headers(REL_SECRET, body, ts=ts, msg_id=msg_id)


def legacy_headers(body: bytes, ts: float | None = None) -> dict[str, str]:
    """The old generic form (``legacy_signature: true``)."""
    stamp = str(int(time.time() if ts is None else ts))
    return {
        "X-Timestamp": stamp,
        "X-Signature": "sha256=" + hexmac(REL_SECRET, stamp.encode() + b"." + body),
        "X-Request-Id": str(uuid.uuid4()),
    }


def fresh_push() -> bytes:
    """A GitHub push no other test delivery shares (GitHub deliveries are
    deduplicated by their signed body: each real event's body is its own)."""
    push = json.loads(payload("github_push"))
    push["after"] = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    return json.dumps(push).encode()


@dataclass
class Web:
    server: WebServer
    intake: WebhookIntake
    store: SqliteStore
    dispatcher: Dispatcher
    table: BindingTable
    session: aiohttp.ClientSession
    events: list[Event] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def post(
        self, path: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.base + path, data=body, headers=headers) as resp:
            text = await resp.text()
            try:
                data = json.loads(text)
            except ValueError:
                data = {"raw": text}
            return resp.status, data


async def count_rows(store: SqliteStore, where: str = "1") -> int:
    """Rows in deliveries (test-side peek with the sqlite3 module)."""
    import sqlite3

    def count() -> int:
        db = sqlite3.connect(store.path)
        try:
            return int(db.execute(f"SELECT COUNT(*) FROM deliveries WHERE {where}").fetchone()[0])
        finally:
            db.close()

    return await asyncio.to_thread(count)


async def eventually(
    probe: Callable[[], Awaitable[object]], want: object, timeout: float = 5.0
) -> None:
    """Poll an async probe until it returns ``want`` (no sleeps as synchronisation)."""
    async with asyncio.timeout(timeout):
        while await probe() != want:
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serving(
    tmp: Path,
    hooks: Mapping[str, Any] | None = None,
    *,
    webhooks: WebhooksConfig | None = None,
    max_backlog: int = MAX_BACKLOG,
    metrics: Callable[[], bytes] | None = None,
    **web: Any,
) -> AsyncIterator[Web]:
    """A WebServer on a free port; ``webhooks`` (e.g. built without
    validation) replaces the config made from ``hooks``."""
    config = build_config(
        {
            "web": {"host": "127.0.0.1", "port": 0, "max_body_bytes": LIMIT, **web},
            "webhooks": dict(ALL_HOOKS if hooks is None else hooks),
            "store": {"path": str(tmp / "mc.db")},
        },
        project_dir=tmp,
    )
    store = await open_store(config.store.path)
    table = BindingTable()
    dispatcher = Dispatcher(table, handler_timeout_s=5)
    server = WebServer(
        config.web,
        ping=store.ping,
        metrics=metrics,
        # what the runtime adds (components, queues); here, the dispatcher's queue
        health=lambda: HealthInfo(queues={"dispatch": dispatcher.queue.qsize()}),
    )
    intake = WebhookIntake(
        config.webhooks if webhooks is None else webhooks,
        store,
        max_body_bytes=config.web.max_body_bytes,
        mount=server,
        max_backlog=max_backlog,
    )
    intake_started = asyncio.Event()
    tasks = [
        asyncio.create_task(dispatcher.run(), name="dispatcher"),
        asyncio.create_task(server.run(), name="web"),
        asyncio.create_task(intake.run(dispatcher, intake_started), name="intake"),
    ]
    try:
        await asyncio.wait_for(server.started.wait(), 10)
        await asyncio.wait_for(intake_started.wait(), 10)
        async with aiohttp.ClientSession() as session:
            w = Web(server, intake, store, dispatcher, table, session)
            table.bind("webhook", "-|-", "*", w.events.append)
            yield w
    finally:
        for t in reversed(tasks):
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
        with contextlib.suppress(Exception):
            await store.close()


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[Web]:
    async with serving(tmp_path) as w:
        yield w


# --- accepted deliveries ----------------------------------------------------------------


async def test_signed_github_push_is_stored_dispatched_and_marked_done(web: Web) -> None:
    body = payload("github_push")
    headers = github_headers(body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    status, data = await web.post("/webhooks/github", body, headers)
    assert status == 202 and isinstance(data["id"], int)
    await wait_until(lambda: web.events, 15)
    (ev,) = web.events
    assert (ev.type, ev.key, ev.source) == ("webhook", "github/push", "github")
    assert ev.payload == json.loads(body)
    assert ev.tags["delivery"] == str(data["id"])
    assert ev.tags["redelivery"] == "false"
    assert ev.tags["provider"] == "github"
    assert ev.tags["x-github-delivery"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert ev.tags["x-github-event"] == "push"
    # the delivery id is not signed: the body (what the signature covers) is the key
    assert ev.tags["dedup"] == "body-sha256:" + hashlib.sha256(body).hexdigest()
    assert abs(ev.time.timestamp() - time.time()) < 30
    await wait_until(lambda: web.intake.depths()["webhook_inflight"] == 0, 15)
    await wait_until(lambda: web.intake.writer.backlog == 0, 15)
    assert await count_rows(web.store, "done = 1") == 1
    assert web.intake.counters()["github"] == {"accepted": 1}


def _deliveries() -> list[tuple[str, str, bytes, dict[str, str], str]]:
    gh_pr = payload("github_pull_request")
    gl = payload("gitlab_push")
    jk = payload("jenkins_completed")
    am = payload("alertmanager_firing")
    pd = payload("pagerduty_incident_triggered")
    rel = payload("generic_release")
    pd_sig = f"v1={hexmac('some-other', pd)},v1={hexmac(PD_SECRETS[1], pd)}"
    return [
        ("github pull_request", "/webhooks/github", gh_pr, github_headers(gh_pr, "pull_request"),
         "github/pull_request"),
        ("gitlab token only", "/webhooks/gitlab", gl,
         {"X-Gitlab-Token": GL_TOKEN, "X-Gitlab-Event-UUID": str(uuid.uuid4())}, "gitlab/push"),
        ("gitlab token + Standard Webhooks signature", "/webhooks/gitlab", gl, gitlab_signed(gl),
         "gitlab/push"),
        ("jenkins bearer", "/webhooks/jenkins", jk, {"Authorization": f"Bearer {JK_TOKEN}"},
         "jenkins/COMPLETED"),
        ("jenkins header", "/webhooks/jenkins", jk, {"X-Jenkins-Token": JK_TOKEN},
         "jenkins/COMPLETED"),
        ("alertmanager bearer", "/webhooks/alertmanager", am,
         {"Authorization": f"Bearer {AM_TOKEN}"}, "alertmanager/firing"),
        ("pagerduty rotated secret", "/webhooks/pagerduty", pd,
         {"X-PagerDuty-Signature": pd_sig, "X-Webhook-Id": str(uuid.uuid4())},
         "pagerduty/incident.triggered"),
        ("generic", "/webhooks/generic/release", rel, generic_headers(rel), "generic/release"),
    ]  # fmt: skip


# Signed headers carry timestamps: build them when the test runs, not at
# collection (a long suite would push them out of the 5-minute window).
@pytest.mark.parametrize("name", [d[0] for d in _deliveries()])
async def test_each_provider_accepts_its_documented_payload(web: Web, name: str) -> None:
    _, path, body, headers, key = next(d for d in _deliveries() if d[0] == name)
    status, data = await web.post(path, body, headers)
    assert (status, list(data)) == (202, ["id"]), data
    await wait_until(lambda: web.events, 15)
    (ev,) = web.events
    assert ev.key == key
    assert ev.source == key.split("/")[0]
    assert ev.payload == json.loads(body)
    assert ev.tags["delivery"] == str(data["id"])


async def test_generic_event_tags_and_jenkins_without_phase(web: Web) -> None:
    body = b'{"name": "nightly", "build": {"number": 7, "status": "FAILURE"}}'
    status, _ = await web.post("/webhooks/jenkins", body, {"X-Jenkins-Token": JK_TOKEN})
    assert status == 202
    rel = payload("generic_release")
    headers = generic_headers(rel)
    status, _ = await web.post("/webhooks/generic/release", rel, headers)
    assert status == 202
    await wait_until(lambda: len(web.events) == 2, 15)
    keys = {ev.key: ev for ev in web.events}
    assert set(keys) == {"jenkins/build", "generic/release"}
    gen = keys["generic/release"]
    assert gen.tags["provider"] == "generic/release"
    assert gen.tags["webhook-id"] == gen.tags["dedup"] == headers["webhook-id"]


# --- rejections ----------------------------------------------------------------------------


def _rejections() -> list[tuple[str, str, bytes, dict[str, str], int, str, str]]:
    push = payload("github_push")
    am = payload("alertmanager_firing")
    am3 = json.dumps({**json.loads(am), "version": "3"}).encode()
    pd = payload("pagerduty_incident_triggered")
    jk = payload("jenkins_completed")
    rel = payload("generic_release")
    pd_v2 = b'{"messages": []}'
    bad_json = b'{"ref": "refs/heads/main",'
    latin1 = '{"msg": "caf\xe9"}'.encode("latin-1")
    no_event = {k: v for k, v in github_headers(push).items() if k != "X-GitHub-Event"}
    return [
        # name, path, body, headers, status, counter, reason fragment
        ("github wrong signature", "/webhooks/github", push,
         {**github_headers(push), "X-Hub-Signature-256": "sha256=" + "0" * 64}, 401,
         "unauthorized", "does not match"),
        ("github missing signature", "/webhooks/github", push,
         {"X-GitHub-Event": "push"}, 401, "unauthorized", "missing X-Hub-Signature-256"),
        ("github signed by another secret", "/webhooks/github", push,
         {**github_headers(push), "X-Hub-Signature-256": "sha256=" + hexmac("x", push)}, 401,
         "unauthorized", "does not match"),
        ("github 8 KB signature header", "/webhooks/github", push,
         {**github_headers(push), "X-Hub-Signature-256": "sha256=" + "a" * 8000}, 401,
         "unauthorized", "malformed"),
        ("github malformed JSON", "/webhooks/github", bad_json, github_headers(bad_json), 400,
         "bad_request", "malformed JSON"),
        ("github non-UTF-8 body", "/webhooks/github", latin1, github_headers(latin1), 400,
         "bad_request", "not UTF-8"),
        ("github JSON that is not an object", "/webhooks/github", b"[1, 2]",
         github_headers(b"[1, 2]"), 400, "bad_request", "not a JSON object"),
        ("github without X-GitHub-Event", "/webhooks/github", push, no_event, 400,
         "bad_request", "missing X-GitHub-Event"),
        ("github event name with a space", "/webhooks/github", push,
         github_headers(push, event="push now"), 400, "bad_request", "event name"),
        ("gitlab wrong token", "/webhooks/gitlab", payload("gitlab_push"),
         {"X-Gitlab-Token": "nope"}, 401, "unauthorized", "X-Gitlab-Token does not match"),
        ("gitlab good token, bad signature", "/webhooks/gitlab", payload("gitlab_push"),
         {**gitlab_signed(payload("gitlab_push")), "webhook-signature": "v1,AAAA"}, 401,
         "unauthorized", "webhook-signature"),
        ("jenkins token only in the query string", f"/webhooks/jenkins?token={JK_TOKEN}", jk, {},
         401, "unauthorized", "missing token"),
        ("jenkins wrong token", "/webhooks/jenkins", jk, {"X-Jenkins-Token": "nope"}, 401,
         "unauthorized", "does not match"),
        ("alertmanager no auth", "/webhooks/alertmanager", am, {}, 401, "unauthorized",
         "missing Authorization"),
        ("alertmanager version 3", "/webhooks/alertmanager", am3,
         {"Authorization": f"Bearer {AM_TOKEN}"}, 400, "bad_request", "version"),
        ("pagerduty unsigned", "/webhooks/pagerduty", pd, {}, 401, "unauthorized",
         "missing X-PagerDuty-Signature"),
        ("pagerduty wrong secret", "/webhooks/pagerduty", pd,
         {"X-PagerDuty-Signature": f"v1={hexmac('nope', pd)}"}, 401, "unauthorized",
         "does not match"),
        ("pagerduty without event_type", "/webhooks/pagerduty", pd_v2,
         {"X-PagerDuty-Signature": "v1=" + hexmac(PD_SECRETS[0], pd_v2)}, 400,
         "bad_request", "event_type"),
        ("generic replayed after 10 minutes", "/webhooks/generic/release", rel,
         generic_headers(rel, ts=time.time() - 600), 401, "unauthorized", "5-minute window"),
        ("generic unsigned", "/webhooks/generic/release", rel, {}, 401, "unauthorized",
         "missing webhook-id"),
        ("generic in the legacy form, not enabled", "/webhooks/generic/release", rel,
         legacy_headers(rel), 401, "unauthorized", "missing webhook-id"),
    ]  # fmt: skip


@pytest.mark.parametrize("name", [r[0] for r in _rejections()])
async def test_rejections_are_answered_logged_counted_and_not_stored(
    web: Web, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    _, path, body, headers, status, outcome, reason = next(r for r in _rejections() if r[0] == name)
    caplog.set_level(logging.WARNING, "masterchief.web")
    got, data = await web.post(path, body, headers)
    assert got == status, data
    assert reason in data["error"]
    assert "\n" not in data["error"]
    provider = path.split("?")[0].removeprefix("/webhooks/")
    assert web.intake.counters()[provider] == {outcome: 1}
    logged = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(logged) == 1 and provider in logged[0] and "127.0.0.1" in logged[0]
    for secret in (GH_SECRET, GL_TOKEN, JK_TOKEN, AM_TOKEN, REL_SECRET, *PD_SECRETS):
        assert secret not in logged[0] and secret not in data["error"]
    assert await count_rows(web.store) == 0
    await web.dispatcher.drain(5)
    assert web.events == []


async def test_disabled_and_unknown_endpoints_are_404(tmp_path: Path) -> None:
    hooks = {
        "github": {"secret": GH_SECRET},
        "gitlab": {"channels": ["#dev"]},  # no token: disabled, never open
        "generic": [{"name": "nosecret", "channels": ["#ops"]}],
    }
    async with serving(tmp_path, hooks) as w:
        body = payload("gitlab_push")
        for path in (
            "/webhooks/gitlab",
            "/webhooks/jenkins",
            "/webhooks/generic/nosecret",
            "/webhooks/generic/unknown",
            "/webhooks/nonsense",
        ):
            status, data = await w.post(path, body, {"X-Gitlab-Token": "anything"})
            assert (status, data) == (404, {"error": "no such webhook"}), path
        counters = w.intake.counters()
        assert counters["gitlab"] == {"not_found": 1}
        assert counters["unknown"] == {"not_found": 3}  # attacker names are not counter keys
        assert counters["jenkins"] == {"not_found": 1}
        assert await count_rows(w.store) == 0


def _empty_key_deliveries() -> list[tuple[str, bytes, dict[str, str]]]:
    """One delivery per provider, signed or authenticated with an empty key."""
    push, gl, jk = payload("github_push"), payload("gitlab_push"), payload("jenkins_completed")
    am, pd = payload("alertmanager_firing"), payload("pagerduty_incident_triggered")
    rel, stamp = payload("generic_release"), str(int(time.time()))
    no_password = "Basic " + base64.b64encode(b"am:").decode()
    return [
        ("/webhooks/github", push,
         {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hexmac("", push)}),
        ("/webhooks/gitlab", gl, {"X-Gitlab-Token": ""}),
        ("/webhooks/jenkins", jk, {"X-Jenkins-Token": ""}),
        ("/webhooks/jenkins", jk, {"Authorization": "Bearer "}),
        ("/webhooks/alertmanager", am, {"Authorization": "Bearer "}),
        ("/webhooks/alertmanager", am, {"Authorization": no_password}),
        ("/webhooks/pagerduty", pd, {"X-PagerDuty-Signature": "v1=" + hexmac("", pd)}),
        ("/webhooks/generic/release", rel,
         {"X-Timestamp": stamp, "X-Signature": "sha256=" + hexmac("", f"{stamp}.".encode() + rel)}),
        ("/webhooks/generic/release", rel, standard_webhooks_headers(b"", rel)),
    ]  # fmt: skip


async def test_empty_key_signatures_are_refused(web: Web) -> None:
    for path, body, headers in _empty_key_deliveries():
        status, data = await web.post(path, body, headers)
        assert status == 401, (path, headers, data)
    assert await count_rows(web.store) == 0
    await web.dispatcher.drain(5)
    assert web.events == []


async def test_blank_secrets_that_got_past_validation_disable_the_provider(
    tmp_path: Path,
) -> None:
    # Config validation refuses blank secrets; the provider table must not
    # trust that alone: a blank secret is no secret, so the endpoint is 404.
    blank = Secret("")
    hooks = WebhooksConfig.model_construct(
        github=GithubHook.model_construct(secret=blank),
        gitlab=GitlabHook.model_construct(token=Secret("  "), signing_secret=blank),
        jenkins=JenkinsHook.model_construct(token=blank),
        alertmanager=AlertmanagerHook.model_construct(
            bearer_token=blank, basic=BasicAuthConfig.model_construct(username="am", password=blank)
        ),
        pagerduty=PagerDutyHook.model_construct(secrets=(blank,)),
        generic=(GenericHook.model_construct(name="release", secret=blank),),
    )
    async with serving(tmp_path, webhooks=hooks) as w:
        assert w.intake.providers == {}
        for path, body, headers in _empty_key_deliveries():
            status, data = await w.post(path, body, headers)
            assert (status, data) == (404, {"error": "no such webhook"}), path
        assert await count_rows(w.store) == 0


async def test_an_unchecked_gitlab_signature_is_noted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "masterchief.web")
    hooks = {"gitlab": {"token": GL_TOKEN, "channels": ["#dev"]}}  # no signing_secret
    async with serving(tmp_path, hooks) as w:
        body = payload("gitlab_push")
        status, _ = await w.post("/webhooks/gitlab", body, {"X-Gitlab-Token": GL_TOKEN})
        assert status == 202
        assert not [r for r in caplog.records if "not checked" in r.getMessage()]
        for _ in range(2):
            headers = {**gitlab_signed(body), "webhook-signature": "v1,not-checked-at-all"}
            status, _ = await w.post("/webhooks/gitlab", body, headers)
            assert status == 202  # the token is what is verified
        noted = [r for r in caplog.records if "not checked" in r.getMessage()]
        assert len(noted) == 1 and noted[0].levelno == logging.INFO
        assert "webhook-signature" in noted[0].getMessage()
        assert "webhooks.gitlab.signing_secret" in noted[0].getMessage()
        assert GL_TOKEN not in caplog.text


async def test_insecure_provider_is_open_and_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "masterchief.web")
    hooks = {"jenkins": {"insecure": True}, "github": {"secret": GH_SECRET, "insecure": True}}
    async with serving(tmp_path, hooks) as w:
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("jenkins" in m and "UNVERIFIED" in m for m in warnings)
        assert not any("github" in m for m in warnings)
        status, _ = await w.post("/webhooks/jenkins", payload("jenkins_completed"))
        assert status == 202
        # a secret wins over insecure: GitHub still verifies
        status, _ = await w.post(
            "/webhooks/github", payload("github_push"), {"X-GitHub-Event": "push"}
        )
        assert status == 401


# --- size limit ------------------------------------------------------------------------------


async def test_oversize_by_content_length_is_413_before_reading(web: Web) -> None:
    body = b'{"pad": "' + b"x" * LIMIT + b'"}'
    status, data = await web.post("/webhooks/github", body, github_headers(body))
    assert status == 413 and "larger than 4096 bytes" in data["error"]
    assert web.intake.counters()["github"] == {"too_large": 1}
    assert await count_rows(web.store) == 0


async def test_oversize_chunked_body_stops_at_the_limit(web: Web) -> None:
    sent = 0
    chunk = b"x" * 1024

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"pad": "'
        for _ in range(LIMIT // 1024 * 4):  # 4x the limit, no Content-Length
            sent += len(chunk)
            yield chunk

    body = b'{"pad": "' + b"x" * (LIMIT * 4) + b'"}'  # what the signature covers
    status, data = await web.post("/webhooks/github", stream(), github_headers(body))
    assert status == 413 and "larger than" in data["error"]
    assert web.intake.counters()["github"] == {"too_large": 1}
    assert await count_rows(web.store) == 0
    # the server still serves
    ok = payload("github_push")
    assert (await web.post("/webhooks/github", ok, github_headers(ok)))[0] == 202


async def test_body_exactly_at_the_limit_is_accepted(web: Web) -> None:
    base = b'{"pad": "", "ref": "refs/heads/main"}'
    body = base.replace(b'""', b'"' + b"x" * (LIMIT - len(base)) + b'"')
    assert len(body) == LIMIT
    status, _ = await web.post("/webhooks/github", body, github_headers(body))
    assert status == 202


# --- hostile input ---------------------------------------------------------------------------


async def test_huge_header_is_refused_and_server_survives(web: Web) -> None:
    body = payload("github_push")
    headers = {**github_headers(body), "X-Padding": "a" * 65536}
    status, _ = await web.post("/webhooks/github", body, headers)
    assert status in (400, 431)
    assert await count_rows(web.store) == 0
    assert (await web.post("/webhooks/github", body, github_headers(body)))[0] == 202


async def test_deeply_nested_json_is_400(web: Web) -> None:
    deep = b"[" * 2000 + b"]" * 2000  # 4000 bytes, under the limit, deeper than the parser goes
    status, data = await web.post("/webhooks/github", deep, github_headers(deep))
    assert status == 400 and "nested too deeply" in data["error"], data
    assert web.intake.counters()["github"] == {"bad_request": 1}


async def test_crlf_quit_in_a_commit_message_reaches_the_event_unchanged(web: Web) -> None:
    push = json.loads(payload("github_push"))
    evil = "Update README.md\r\nQUIT :pwned\r\nPRIVMSG #ops :\x01ACTION hi\x01\x00"
    push["head_commit"]["message"] = evil
    body = json.dumps(push).encode()
    status, _ = await web.post("/webhooks/github", body, github_headers(body))
    assert status == 202
    await wait_until(lambda: web.events, 15)
    assert web.events[0].payload["head_commit"]["message"] == evil


# --- dedup, store failure, slow handlers --------------------------------------------------------


async def test_duplicate_delivery_is_200_and_dispatched_once(web: Web) -> None:
    body = payload("github_push")
    headers = github_headers(body)
    first = await web.post("/webhooks/github", body, headers)
    second = await web.post("/webhooks/github", body, headers)
    assert first[0] == 202 and second == (200, {"duplicate": True})
    # concurrent duplicates of a new delivery: one wins
    body2 = fresh_push()
    headers2 = github_headers(body2)
    results = await asyncio.gather(
        *(web.post("/webhooks/github", body2, headers2) for _ in range(5))
    )
    assert sorted(s for s, _ in results) == [200, 200, 200, 200, 202]
    await web.dispatcher.drain(5)
    await wait_until(lambda: len(web.events) == 2, 15)
    assert len({ev.tags["delivery"] for ev in web.events}) == 2
    assert web.intake.counters()["github"] == {"accepted": 2, "duplicate": 5}
    assert await count_rows(web.store) == 2


async def test_gitlab_and_pagerduty_dedup_headers(web: Web) -> None:
    gl = payload("gitlab_push")
    for key_header in ("Idempotency-Key", "X-Gitlab-Event-UUID"):
        headers = {"X-Gitlab-Token": GL_TOKEN, key_header: str(uuid.uuid4())}
        assert (await web.post("/webhooks/gitlab", gl, headers))[0] == 202
        assert (await web.post("/webhooks/gitlab", gl, headers))[0] == 200
    pd = payload("pagerduty_incident_triggered")
    headers = {"X-PagerDuty-Signature": f"v1={hexmac(PD_SECRETS[0], pd)}", "X-Webhook-Id": "w1"}
    assert (await web.post("/webhooks/pagerduty", pd, headers))[0] == 202
    assert (await web.post("/webhooks/pagerduty", pd, headers))[0] == 200
    # X-Webhook-Id is not signed: a new one on the same signed body is a duplicate
    replay = {**headers, "X-Webhook-Id": "w2"}
    assert await web.post("/webhooks/pagerduty", pd, replay) == (200, {"duplicate": True})


async def test_generic_webhook_id_repeated_is_2xx_and_dispatched_once(web: Web) -> None:
    rel = payload("generic_release")
    first = generic_headers(rel)
    # the sender's retry: same webhook-id, signed again a second later
    retry = generic_headers(rel, ts=time.time() + 1, msg_id=first["webhook-id"])
    assert retry["webhook-signature"] != first["webhook-signature"]
    status, data = await web.post("/webhooks/generic/release", rel, first)
    assert status == 202
    assert await web.post("/webhooks/generic/release", rel, retry) == (200, {"duplicate": True})
    assert await web.post("/webhooks/generic/release", rel, first) == (200, {"duplicate": True})
    # a new id under the old signature does not verify; no id at all neither
    forged = {**first, "webhook-id": "msg_replayed"}
    status, err = await web.post("/webhooks/generic/release", rel, forged)
    assert status == 401 and "does not match" in err["error"]
    bare = {k: v for k, v in first.items() if k != "webhook-id"}
    status, err = await web.post("/webhooks/generic/release", rel, bare)
    assert status == 401 and "missing webhook-id" in err["error"]
    other = generic_headers(rel)  # a new signed id is a new delivery
    assert (await web.post("/webhooks/generic/release", rel, other))[0] == 202
    await wait_until(lambda: len(web.events) == 2, 15)
    await web.dispatcher.drain(5)
    assert [ev.tags["webhook-id"] for ev in web.events] == [
        first["webhook-id"],
        other["webhook-id"],
    ]
    assert web.events[0].tags["delivery"] == str(data["id"])
    assert web.intake.counters()["generic/release"] == {
        "accepted": 2,
        "duplicate": 2,
        "unauthorized": 2,
    }
    assert await count_rows(web.store) == 2


async def test_legacy_generic_replayed_with_a_new_request_id_is_a_duplicate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = {"generic": [{"name": "release", "secret": REL_SECRET, "legacy_signature": True}]}
    caplog.set_level(logging.INFO, "masterchief.web")
    async with serving(tmp_path, hooks) as w:
        rel = payload("generic_release")
        first = legacy_headers(rel)
        assert (await w.post("/webhooks/generic/release", rel, first))[0] == 202
        # the captured delivery again: new X-Request-Id, none, the same one
        for request_id in (str(uuid.uuid4()), None, first["X-Request-Id"]):
            replay = dict(first)
            if request_id is None:
                del replay["X-Request-Id"]
            else:
                replay["X-Request-Id"] = request_id
            got = await w.post("/webhooks/generic/release", rel, replay)
            assert got == (200, {"duplicate": True}), request_id
        # Standard Webhooks headers are not taken on a legacy endpoint
        status, _ = await w.post("/webhooks/generic/release", rel, generic_headers(rel))
        assert status == 401
        await wait_until(lambda: w.events, 15)
        await w.dispatcher.drain(5)
        assert len(w.events) == 1
        assert w.intake.counters()["generic/release"] == {
            "accepted": 1,
            "duplicate": 3,
            "unauthorized": 1,
        }
        assert sum("duplicate delivery" in r.getMessage() for r in caplog.records) == 3


async def test_alertmanager_dedup_by_group_and_alerts(web: Web) -> None:
    auth = {"Authorization": f"Bearer {AM_TOKEN}"}
    firing = json.loads(payload("alertmanager_firing"))
    body = json.dumps(firing).encode()
    assert (await web.post("/webhooks/alertmanager", body, auth))[0] == 202
    # the same notification again (a retry, alerts listed in another order): duplicate
    again = {**firing, "alerts": list(reversed(firing["alerts"])), "receiver": "other"}
    assert (await web.post("/webhooks/alertmanager", json.dumps(again).encode(), auth))[0] == 200
    # resolved: a new delivery with its own key
    resolved = {
        **firing,
        "status": "resolved",
        "alerts": [{**a, "status": "resolved"} for a in firing["alerts"]],
    }
    status, _ = await web.post("/webhooks/alertmanager", json.dumps(resolved).encode(), auth)
    assert status == 202
    await wait_until(lambda: len(web.events) == 2, 15)
    assert [ev.key for ev in web.events] == ["alertmanager/firing", "alertmanager/resolved"]


async def test_store_failure_is_503_not_4xx(web: Web) -> None:
    await web.store.close()
    body = payload("github_push")
    status, data = await web.post("/webhooks/github", body, github_headers(body))
    assert status == 503 and "retry" in data["error"]
    assert web.intake.counters()["github"] == {"unavailable": 1}
    await web.dispatcher.drain(5)
    assert web.events == []


async def test_202_is_fast_while_handlers_are_slow(web: Web) -> None:
    release = asyncio.Event()
    started: list[Event] = []

    async def slow(ev: Event) -> None:
        started.append(ev)
        await release.wait()

    web.table.bind("webhook", "-|-", "github/*", slow)
    t0 = time.monotonic()
    for _ in range(3):
        body = fresh_push()
        status, _ = await web.post("/webhooks/github", body, github_headers(body))
        assert status == 202
    assert time.monotonic() - t0 < 2.0  # handler_timeout_s is 5: they would not be done
    await wait_until(lambda: len(started) == 3, 15)
    assert web.intake.depths()["webhook_inflight"] == 3
    assert await count_rows(web.store, "done = 0") == 3
    release.set()
    await wait_until(lambda: web.intake.depths()["webhook_inflight"] == 0, 15)
    await wait_until(lambda: web.intake.writer.backlog == 0, 15)
    assert await count_rows(web.store, "done = 1") == 3


async def test_full_dispatch_queue_backlogs_then_feeds(tmp_path: Path) -> None:
    async with serving(tmp_path) as w:
        gate = asyncio.Event()

        async def blocker(ev: Event) -> None:
            await gate.wait()

        # a dispatcher with a tiny queue: replace it before traffic
        small = Dispatcher(w.table, queue_size=1, max_inflight=1, handler_timeout_s=5)
        w.intake.sink = small
        w.table.bind("webhook", "-|-", "github/*", blocker)
        runner = asyncio.create_task(small.run())
        try:
            bodies = [fresh_push() for _ in range(5)]
            results = [await w.post("/webhooks/github", b, github_headers(b)) for b in bodies]
            assert [s for s, _ in results] == [202] * 5
            await wait_until(lambda: w.intake.depths()["webhook_backlog"] > 0, 15)
            gate.set()
            await wait_until(lambda: len(w.events) == 5, 20)
            await wait_until(
                lambda: w.intake.depths() == {"webhook_backlog": 0, "webhook_inflight": 0}, 10
            )
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


async def test_full_dispatch_backlog_is_503_and_the_retry_is_taken(tmp_path: Path) -> None:
    # Our transient fault: the provider is told to retry (5xx, never 4xx),
    # nothing is stored for the refused delivery, and its retry is accepted.
    async with serving(tmp_path, max_backlog=2) as w:
        gate = asyncio.Event()

        async def blocker(ev: Event) -> None:
            await gate.wait()

        small = Dispatcher(w.table, queue_size=1, max_inflight=1, handler_timeout_s=30)
        w.intake.sink = small
        w.table.bind("webhook", "-|-", "github/*", blocker)
        runner = asyncio.create_task(small.run())
        try:
            accepted = 0
            for _ in range(10):  # one running, one queued, 2 backlogged, maybe 1 in hand
                body = fresh_push()
                headers = github_headers(body)
                status, data = await w.post("/webhooks/github", body, headers)
                if status == 503:
                    break
                assert status == 202, data
                accepted += 1
            assert status == 503, "the backlog never filled"
            assert "backlog" in data["error"]
            assert w.intake.depths()["webhook_backlog"] == 2
            assert w.intake.counters()["github"] == {"accepted": accepted, "unavailable": 1}
            assert await count_rows(w.store) == accepted  # the refused one was not stored
            gate.set()
            await wait_until(lambda: len(w.events) == accepted, 20)
            await wait_until(lambda: w.intake.depths()["webhook_backlog"] == 0, 15)
            status, _ = await w.post("/webhooks/github", body, headers)  # the provider retries
            assert status == 202
            await wait_until(lambda: len(w.events) == accepted + 1, 15)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


async def test_healthz(web: Web) -> None:
    body = payload("github_push")
    await web.post("/webhooks/github", body, github_headers(body))
    await web.post("/webhooks/github", body, {"X-GitHub-Event": "push"})
    async with web.session.get(web.base + "/healthz") as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["status"] == "ok"
    assert data["components"] == {"store": {"status": "ok"}, "web": {"status": "ok"}}
    assert {"dispatch", "webhook_backlog", "webhook_inflight"} <= set(data["queues"])
    assert data["webhooks"]["github"] == {"accepted": 1, "unauthorized": 1}


async def test_healthz_is_503_naming_the_store_when_it_does_not_answer(web: Web) -> None:
    await web.store.close()
    async with web.session.get(web.base + "/healthz") as resp:
        assert resp.status == 503
        data = await resp.json()
    assert data["status"] == "unhealthy" and data["unhealthy"] == ["store"]
    assert data["components"]["store"]["status"] == "down"
    assert data["reason"].startswith("store down: read failed")
    assert str(web.store.path) not in json.dumps(data)  # an exception's type, not its text


# --- /metrics and /healthz away from the webhook port (web.admin) -------------------------

ADMIN_TOKEN = "admin-test-token-9f3c"


async def _get(
    session: aiohttp.ClientSession, url: str, token: str | None = None
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_admin_port_serves_metrics_and_healthz_and_the_webhook_port_only_webhooks(
    tmp_path: Path,
) -> None:
    admin = {"host": "127.0.0.1", "port": 0}
    async with serving(tmp_path, metrics=lambda: b"mc_up 1\n", admin=admin) as w:
        assert w.server.admin_port and w.server.admin_port != w.server.port
        admin_base = f"http://127.0.0.1:{w.server.admin_port}"
        for path in ("/metrics", "/healthz"):
            assert (await _get(w.session, w.base + path))[0] == 404, path
        assert await _get(w.session, admin_base + "/metrics") == (200, "mc_up 1\n")
        status, text = await _get(w.session, admin_base + "/healthz")
        assert status == 200 and json.loads(text)["status"] == "ok"
        # the admin listener takes no webhooks; the webhook port still does
        body = payload("github_push")
        async with w.session.post(
            admin_base + "/webhooks/github", data=body, headers=github_headers(body)
        ) as resp:
            assert resp.status == 404
        assert (await w.post("/webhooks/github", body, github_headers(body)))[0] == 202


async def test_admin_token_guards_metrics_and_healthz(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "masterchief.web")
    admin = {"token": ADMIN_TOKEN}  # on the webhook port, behind the token
    async with serving(tmp_path, metrics=lambda: b"mc_up 1\n", admin=admin) as w:
        assert w.server.admin_port is None
        for path in ("/metrics", "/healthz"):
            for token in (None, "", "wrong", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]):
                status, text = await _get(w.session, w.base + path, token)
                assert status == 401, (path, token)
                assert ADMIN_TOKEN not in text and "mc_up" not in text
            async with w.session.get(
                w.base + path, headers={"Authorization": f"Basic {ADMIN_TOKEN}"}
            ) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert await _get(w.session, w.base + "/metrics", ADMIN_TOKEN) == (200, "mc_up 1\n")
        status, text = await _get(w.session, w.base + "/healthz", ADMIN_TOKEN)
        assert status == 200 and json.loads(text)["status"] == "ok"
        # webhooks are not behind the admin token
        body = payload("github_push")
        assert (await w.post("/webhooks/github", body, github_headers(body)))[0] == 202
    refused = [r.getMessage() for r in caplog.records if "refused (401)" in r.getMessage()]
    assert len(refused) == 12 and all(ADMIN_TOKEN not in m for m in refused)


async def test_healthz_on_the_admin_port_names_web_when_the_webhook_port_is_taken(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin = {"host": "127.0.0.1", "port": 0}
        async with serving(tmp_path, port=port, admin=admin) as w:
            assert w.server.admin_port
            status, text = await _get(w.session, f"http://127.0.0.1:{w.server.admin_port}/healthz")
    data = json.loads(text)
    assert status == 503 and data["unhealthy"] == ["web"]
    assert data["components"]["web"]["reason"].startswith(f"cannot listen on 127.0.0.1:{port}")


async def test_admin_port_and_token_together(tmp_path: Path) -> None:
    admin = {"host": "127.0.0.1", "port": 0, "token": ADMIN_TOKEN}
    async with serving(tmp_path, metrics=lambda: b"mc_up 1\n", admin=admin) as w:
        admin_base = f"http://127.0.0.1:{w.server.admin_port}"
        assert (await _get(w.session, admin_base + "/metrics"))[0] == 401
        assert await _get(w.session, admin_base + "/metrics", ADMIN_TOKEN) == (200, "mc_up 1\n")
        assert (await _get(w.session, w.base + "/metrics", ADMIN_TOKEN))[0] == 404


def test_admin_config_needs_a_port_or_a_token_and_a_token_is_never_empty(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"web\.admin: needs a port"):
        build_config({"web": {"admin": {"host": "127.0.0.1"}}}, project_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"web\.admin\.token: is empty"):
        build_config({"web": {"admin": {"token": "  "}}}, project_dir=tmp_path)
    config = build_config(
        {"web": {"admin": {"token": "${env:ADMIN_TOKEN}"}}},
        project_dir=tmp_path,
        environ={"ADMIN_TOKEN": "from-the-environment"},
    )
    assert config.web.admin is not None and config.web.admin.token is not None
    assert config.web.admin.token.reveal() == "from-the-environment"
    assert config.redacted_dump()["web"]["admin"]["token"] == "***"


async def test_done_deliveries_older_than_7_days_are_pruned_at_start(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "mc.db")
    old = await store.insert_delivery(
        NewDelivery("github", "old", "github/push", "{}", received_at=time.time() - 8 * 86400)
    )
    recent = await store.insert_delivery(
        NewDelivery("github", "recent", "github/push", "{}", received_at=time.time() - 86400)
    )
    assert old is not None and recent is not None
    await store.delivery_done(old)
    await store.delivery_done(recent)
    await store.close()
    async with serving(tmp_path) as w:
        await eventually(lambda: count_rows(w.store), 1)
        assert await count_rows(w.store, "dedup_key = 'recent'") == 1


# --- the App ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def app_running(
    tmp: Path, ircd: Any, before_run: Any = None, **over: Any
) -> AsyncIterator[App]:
    (tmp / "scripts").mkdir(parents=True, exist_ok=True)
    data = bot_config_data(
        tmp,
        ircd.host,
        ircd.port,
        web={"host": "127.0.0.1", "port": 0},
        webhooks={"github": {"secret": GH_SECRET, "channels": ["#ops"]}},
        **over,
    )
    app = await App.create(build_config(data, project_dir=tmp))
    if before_run is not None:
        before_run(app)
    task = asyncio.create_task(app.run(), name="app")
    try:
        assert app.web is not None
        await asyncio.wait_for(app.web.started.wait(), 15)
        yield app
    finally:
        app.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_app_bind_webhook_receives_event_with_payload_and_delivery_id(
    tmp_path: Path, ircd: Any
) -> None:
    got: list[Event] = []
    async with app_running(tmp_path, ircd) as app:
        assert app.web is not None and app.web.port
        with using(app.script_api):  # what a script would get
            masterchief.bind("webhook", "-|-", "github/push", got.append)
        body = payload("github_push")
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{app.web.port}/webhooks/github"
            async with session.post(url, data=body, headers=github_headers(body)) as resp:
                assert resp.status == 202
                delivery = (await resp.json())["id"]
            await asyncio.wait_for(app.irc.connected.wait(), 15)  # else /healthz is 503
            async with session.get(f"http://127.0.0.1:{app.web.port}/healthz") as resp:
                health = await resp.json()
        await wait_until(lambda: got, 15)
        assert got[0].payload["ref"] == "refs/heads/main"
        assert got[0].tags["delivery"] == str(delivery)
        assert health["status"] == "ok", health
        assert "output" in health["queues"]
        assert health["components"] == {
            name: {"status": "ok"} for name in ("irc", "sources", "store", "web")
        }


async def test_app_redispatches_pending_deliveries_after_a_crash(tmp_path: Path, ircd: Any) -> None:
    # the "crash": a delivery stored (202 answered) but never marked done
    store = await open_store(tmp_path / "mc.db")
    body = payload("github_push").decode()
    meta = json.dumps({"source": "github", "headers": {"x-github-delivery": "d-1"}})
    delivery = await store.insert_delivery(
        NewDelivery("github", "d-1", "github/push", body, meta, received_at=time.time() - 120)
    )
    await store.close()
    assert delivery is not None
    got: list[Event] = []

    def bind_early(app: App) -> None:
        app.table.bind("webhook", "-|-", "github/*", got.append)

    async with app_running(tmp_path, ircd, before_run=bind_early) as app:
        await wait_until(lambda: got, 20)
        (ev,) = got
        assert ev.tags["redelivery"] == "true"
        assert ev.tags["delivery"] == str(delivery)
        assert ev.tags["x-github-delivery"] == "d-1"
        assert ev.key == "github/push" and ev.payload == json.loads(body)
        assert 100 < time.time() - ev.time.timestamp() < 200  # the original receive time
        intake = app.sources.find("webhooks", "intake")
        assert isinstance(intake, WebhookIntake)
        await wait_until(
            lambda: intake.writer.backlog == 0 and not intake.depths()["webhook_inflight"], 5
        )
        assert intake.counters()["github"] == {"redelivered": 1}
    store = await open_store(tmp_path / "mc.db")
    try:
        assert await store.pending_deliveries() == []
    finally:
        await store.close()


async def test_app_without_web(tmp_path: Path, ircd: Any) -> None:
    data = bot_config_data(tmp_path, ircd.host, ircd.port, web={"enabled": False})
    (tmp_path / "scripts").mkdir(exist_ok=True)
    app = await App.create(build_config(data, project_dir=tmp_path))
    try:
        assert app.web is None
    finally:
        await app.store.close()
