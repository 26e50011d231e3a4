"""REST pollers against a real aiohttp server on 127.0.0.1.

Time is injected: ``FakeTime`` hands the poller a clock and a ``sleep`` that
records the requested delay and waits for the test to release it, so
backoff sequences and token expiry are checked exactly and without real
waiting.  Tests wait on conditions (with timeouts), never on sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from masterchief.bindings.event import Event
from masterchief.config.schema import RestPollConfig
from masterchief.errors import ConfigError
from masterchief.sources.base import SharedHttp, SourceDeps
from masterchief.sources.rest.family import FAMILY as REST_FAMILY
from masterchief.sources.rest.oauth import (
    TokenError,
    basic_client_auth,
    parse_token_response,
    refresh_margin,
)
from masterchief.sources.rest.poller import RestPoller
from masterchief.sources.rest.polling import backoff_delay, canonical_hash, jittered, redact_url
from masterchief.sources.runner import SourceRunner
from masterchief.store.sqlite import open_store
from tests.harness import running_bot, wait_until

# --- harness -----------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Api:
    """A loopback HTTP server whose behaviour each test sets per path."""

    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    server: TestServer | None = None

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(request.method, request.path, dict(request.headers), dict(request.query), body)
        )
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404)
        return await handler(request)

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def hits(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def json_at(self, path: str, doc: Any, **headers: str) -> None:
        async def handler(_request: web.Request) -> web.StreamResponse:
            return web.json_response(doc, headers=headers)

        self.routes[path] = handler


async def start_api() -> tuple[Api, TestServer]:
    api = Api()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.dispatch)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    api.server = server
    return api, server


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    api, server = await start_api()
    try:
        yield api
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        yield s


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = asyncio.Condition()

    async def put(self, *chain: Event) -> None:
        async with self._cond:
            self.events.extend(chain)
            self._cond.notify_all()

    def of(self, type_: str, key: str | None = None) -> list[Event]:
        return [e for e in self.events if e.type == type_ and (key is None or e.key == key)]

    @property
    def rest(self) -> list[Event]:
        return self.of("rest")

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout), self._cond:
            await self._cond.wait_for(pred)


class FakeTime:
    """Clock and sleep for a poller: ``sleep`` records and blocks until ``step``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delays: list[float] = []
        self._gate: asyncio.Queue[None] = asyncio.Queue()
        self._cond = asyncio.Condition()

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, delay: float) -> None:
        async with self._cond:
            self.delays.append(delay)
            self._cond.notify_all()
        await self._gate.get()
        self.now += delay

    async def wait_sleeps(self, n: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout), self._cond:
            await self._cond.wait_for(lambda: len(self.delays) >= n)

    async def step(self) -> float:
        """Let the poller wake, poll once and go back to sleep; the new delay."""
        n = len(self.delays)
        self._gate.put_nowait(None)
        await self.wait_sleeps(n + 1)
        return self.delays[-1]


def config(url: str, **kw: Any) -> RestPollConfig:
    data: dict[str, Any] = {
        "name": "svc",
        "url": url,
        "interval_s": 60,
        "timeout_s": 5,
        "channels": ["#ops"],
    }
    data.update(kw)
    return RestPollConfig.model_validate(data)


def poller(cfg: RestPollConfig, sink: Sink, ft: FakeTime | None = None, **kw: Any) -> RestPoller:
    ft = ft or FakeTime()
    return RestPoller(
        cfg, sink, clock=ft.clock, wall=ft.wall, sleep=ft.sleep, rng=lambda: 0.5, **kw
    )


async def _ready(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    return session


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- pure helpers --------------------------------------------------------------------


def test_canonical_hash_ignores_key_order_and_whitespace() -> None:
    a = json.loads('{"a": 1, "b": {"x": [1, 2], "y": "é"}}')
    b = json.loads('{"b":{"y":"é","x":[1,2]},"a":1}')
    assert canonical_hash(a) == canonical_hash(b)
    assert canonical_hash(a) != canonical_hash({"a": 1, "b": {"x": [2, 1], "y": "é"}})
    assert canonical_hash(None) != canonical_hash([])


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 60.0), (1, 120.0), (2, 240.0), (3, 480.0), (4, 600.0), (50, 600.0), (10_000, 600.0)],
)
def test_backoff_delay(failures: int, expected: float) -> None:
    assert backoff_delay(60.0, failures, cap=10.0) == expected


def test_jitter_bounds() -> None:
    assert jittered(100.0, 0.1, 0.0) == pytest.approx(90.0)
    assert jittered(100.0, 0.1, 0.5) == pytest.approx(100.0)
    assert jittered(100.0, 0.1, 0.999999) == pytest.approx(110.0, abs=1e-3)


@pytest.mark.parametrize(
    ("url", "params", "expected"),
    [
        ("https://h.example/x?a=1", [], "https://h.example/x?a=1"),
        ("https://u:pw@h.example/x#frag", [], "https://h.example/x"),
        ("https://h.example/x?api_key=s3cr3t&page=2", [], "https://h.example/x?api_key=***&page=2"),
        ("https://h.example/x?myKey=s3cr3t", ["mykey"], "https://h.example/x?myKey=***"),
        (
            "https://h.example/x?token=a&Signature=b",
            [],
            "https://h.example/x?token=***&Signature=***",
        ),
    ],
)
def test_redact_url(url: str, params: list[str], expected: str) -> None:
    assert redact_url(url, params) == expected


def test_token_response_parsing() -> None:
    tok = parse_token_response(
        200, b'{"access_token":"abc","token_type":"Bearer","expires_in":100}', 5.0
    )
    assert tok.value.reveal() == "abc"
    assert tok.refresh_at == pytest.approx(5.0 + 100 - refresh_margin(100))
    assert refresh_margin(100) == 10.0 and refresh_margin(3600) == 60.0
    assert parse_token_response(200, b'{"access_token":"abc"}', 0).refresh_at is None
    bad = [
        (400, b'{"error":"invalid_client"}', "HTTP 400 (invalid_client)"),
        (500, b"<html>oops</html>", "HTTP 500"),
        (400, b'{"error":"x y z <script>"}', "HTTP 400"),
        (200, b"not json", "invalid JSON"),
        (200, b'{"token_type":"bearer"}', "no access_token"),
        (200, b'{"access_token":"a","token_type":"mac"}', "other than bearer"),
        (200, b'{"access_token":"a","expires_in":"soon"}', "invalid expires_in"),
    ]
    for status, body, reason in bad:
        with pytest.raises(TokenError) as err:
            parse_token_response(status, body, 0)
        assert str(err.value).endswith(reason), (status, body)


def test_client_auth_is_form_encoded_then_basic() -> None:
    header = basic_client_auth("my client", "p@ss:word")
    assert header.startswith("Basic ")
    assert base64.b64decode(header[6:]) == b"my+client:p%40ss%3Aword"


def test_config_errors() -> None:
    sink = Sink()
    with pytest.raises(ConfigError, match=r"rest\.svc\.select.*JMESPath"):
        poller(config("http://127.0.0.1/x", select="foo[?"), sink)
    bad = RestPollConfig.model_construct(**{**config("http://x/").__dict__, "url": "ftp://x/y"})
    with pytest.raises(ConfigError, match="http and https"):
        poller(bad, sink)
    with pytest.raises(ConfigError, match="token_url"):
        poller(
            config(
                "http://127.0.0.1/x",
                auth={
                    "type": "oauth2",
                    "token_url": "file:///etc/passwd",
                    "client_id": "c",
                    "client_secret": "s",
                },
            ),
            sink,
        )


# --- auth modes ------------------------------------------------------------------------


def _guarded(check: Callable[[web.Request], bool], doc: Any) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not check(request):
            return web.Response(status=401)
        return web.json_response(doc)

    return handler


AUTH_CASES: list[tuple[str, dict[str, Any], Callable[[web.Request], bool]]] = [
    ("none", {"type": "none"}, lambda r: "Authorization" not in r.headers),
    (
        "api_key header",
        {"type": "api_key", "key": "k-123456", "header": "X-Api-Key"},
        lambda r: r.headers.get("X-Api-Key") == "k-123456" and "api_key" not in r.query,
    ),
    (
        "api_key query",
        {"type": "api_key", "key": "k-123456", "query": "api_key"},
        lambda r: r.query.get("api_key") == "k-123456" and r.query.get("page") == "2",
    ),
    (
        "bearer",
        {"type": "bearer", "token": "t-abcdef"},
        lambda r: r.headers.get("Authorization") == "Bearer t-abcdef",
    ),
    (
        "basic",
        {"type": "basic", "username": "ops", "password": "pässwörd"},
        lambda r: (
            r.headers.get("Authorization")
            == "Basic " + base64.b64encode("ops:pässwörd".encode()).decode()
        ),
    ),
]


@pytest.mark.parametrize(("label", "auth", "check"), AUTH_CASES, ids=[c[0] for c in AUTH_CASES])
async def test_auth_modes_are_sent(
    api: Api,
    session: aiohttp.ClientSession,
    label: str,
    auth: dict[str, Any],
    check: Callable[[web.Request], bool],
) -> None:
    api.routes["/data"] = _guarded(check, {"ok": True})
    sink = Sink()
    p = poller(config(api.url("/data?page=2"), auth=auth), sink)
    result = await p.poll_once(session)
    assert result.ok, result
    assert [e.payload["data"] for e in sink.rest] == [{"ok": True}]
    assert api.hits("/data")[0].headers["Accept"] == "application/json"


@dataclass
class TokenServer:
    issued: list[str] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    expires_in: int = 100
    accept_issued: bool = True

    def install(self, api: Api) -> None:
        async def token(request: web.Request) -> web.StreamResponse:
            form = await request.post()
            if request.headers.get("Authorization") != basic_client_auth("cid", "csecret-xyz"):
                return web.json_response({"error": "invalid_client"}, status=401)
            if form.get("grant_type") != "client_credentials" or form.get("scope") != "read:status":
                return web.json_response({"error": "invalid_request"}, status=400)
            value = f"tok-{len(self.issued) + 1}-secretish"
            self.issued.append(value)
            if self.accept_issued:
                self.valid.add(value)
            return web.json_response(
                {"access_token": value, "token_type": "bearer", "expires_in": self.expires_in}
            )

        async def data(request: web.Request) -> web.StreamResponse:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.valid:
                return web.Response(status=401)
            return web.json_response({"n": len(self.issued)})

        api.routes["/token"] = token
        api.routes["/data"] = data


def oauth_auth(api: Api, secret: str = "csecret-xyz") -> dict[str, Any]:
    return {
        "type": "oauth2",
        "token_url": api.url("/token"),
        "client_id": "cid",
        "client_secret": secret,
        "scope": "read:status",
    }


async def test_oauth2_token_cached_and_refreshed_before_expiry(
    api: Api, session: aiohttp.ClientSession
) -> None:
    ts = TokenServer(expires_in=100)  # refreshed 10 s before expiry
    ts.install(api)
    ft, sink = FakeTime(), Sink()
    p = poller(config(api.url("/data"), auth=oauth_auth(api), emit="every_poll"), sink, ft)

    assert (await p.poll_once(session)).ok
    ft.now = 50.0
    assert (await p.poll_once(session)).ok
    assert len(api.hits("/token")) == 1  # cached
    ft.now = 89.0
    assert (await p.poll_once(session)).ok
    assert len(api.hits("/token")) == 1
    ft.now = 90.5  # inside the margin: a new token before the old one expires
    assert (await p.poll_once(session)).ok
    assert len(api.hits("/token")) == 2
    bearer = [h.headers["Authorization"] for h in api.hits("/data")]
    assert bearer == ["Bearer " + t for t in ["tok-1-secretish"] * 3 + ["tok-2-secretish"]]
    token_req = api.hits("/token")[0]
    assert token_req.method == "POST"
    assert token_req.headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_oauth2_refreshes_once_on_401_then_backs_off(
    api: Api, session: aiohttp.ClientSession
) -> None:
    ts = TokenServer(expires_in=3600)
    ts.install(api)
    sink = Sink()
    p = poller(config(api.url("/data"), auth=oauth_auth(api)), sink)
    assert (await p.poll_once(session)).ok

    ts.valid.clear()  # the server revoked the token early
    result = await p.poll_once(session)
    assert result.ok
    assert len(api.hits("/token")) == 2
    assert p.stats.token_refreshes_on_401 == 1
    assert api.hits("/data")[-1].headers["Authorization"] == "Bearer tok-2-secretish"

    ts.valid.clear()
    ts.accept_issued = False  # every new token is refused too
    before = len(api.hits("/data"))
    result = await p.poll_once(session)
    assert not result.ok and result.reason == "HTTP 401"
    assert len(api.hits("/data")) - before == 2  # one retry, no loop
    assert len(api.hits("/token")) == 3
    assert p.failures == 1
    assert [e.key for e in sink.of("event")] == ["rest.failing"]


async def test_oauth2_token_endpoint_failure(api: Api, session: aiohttp.ClientSession) -> None:
    TokenServer().install(api)
    sink = Sink()
    p = poller(config(api.url("/data"), auth=oauth_auth(api, secret="wrong-secret")), sink)
    result = await p.poll_once(session)
    assert result.reason == "auth failed: token endpoint answered HTTP 401 (invalid_client)"
    assert not api.hits("/data")
    assert sink.of("event", "rest.failing")[0].payload["reason"] == result.reason


# --- select, change detection, conditional requests --------------------------------------


STATUS = {
    "page": {"id": "x"},
    "components": [
        {"name": "api", "status": "operational"},
        {"name": "db", "status": "degraded_performance"},
    ],
}


async def test_jmespath_select(api: Api, session: aiohttp.ClientSession) -> None:
    api.json_at("/s", STATUS)
    sink = Sink()
    p = poller(config(api.url("/s"), select="components[?status!='operational'].name"), sink)
    assert (await p.poll_once(session)).ok
    ev = sink.rest[0]
    assert (ev.type, ev.key, ev.source) == ("rest", "rest/svc", "rest")
    assert ev.payload["data"] == ["db"]
    assert ev.payload["initial"] is True and ev.payload["previous_hash"] is None
    assert ev.payload["hash"] == canonical_hash(["db"])
    assert ev.payload["channels"] == ["#ops"]
    assert ev.payload["status"] == 200


async def test_change_detection(api: Api, session: aiohttp.ClientSession) -> None:
    sink = Sink()
    p = poller(config(api.url("/s"), select="components"), sink)

    api.json_at("/s", STATUS)
    r = await p.poll_once(session)
    assert r.emitted and r.changed and len(sink.rest) == 1

    api.json_at("/s", STATUS)  # same JSON
    assert not (await p.poll_once(session)).emitted

    reordered = {
        "components": [
            {"status": "operational", "name": "api"},
            {"status": "degraded_performance", "name": "db"},
        ],
        "page": {"id": "other"},  # outside the selection
    }
    api.routes["/s"] = _raw_json(json.dumps(reordered, indent=4))
    assert not (await p.poll_once(session)).emitted
    assert len(sink.rest) == 1

    changed = {"components": [{"name": "api", "status": "major_outage"}]}
    api.json_at("/s", changed)
    r = await p.poll_once(session)
    assert r.emitted and r.changed
    ev = sink.rest[-1]
    assert ev.payload["initial"] is False
    assert ev.payload["data"] == changed["components"]
    assert ev.payload["previous"] == STATUS["components"]
    assert ev.payload["previous_hash"] == sink.rest[0].payload["hash"]
    assert len(sink.rest) == 2


def _raw_json(text: str, status: int = 200, **headers: str) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=text, status=status, content_type="application/json", headers=headers
        )

    return handler


async def test_every_poll_emits_each_poll_without_validators(
    api: Api, session: aiohttp.ClientSession
) -> None:
    api.json_at("/s", {"v": 1}, ETag='"e1"')
    sink = Sink()
    p = poller(config(api.url("/s"), emit="every_poll"), sink)
    for _ in range(3):
        assert (await p.poll_once(session)).emitted
    assert [e.payload["changed"] for e in sink.rest] == [True, False, False]
    assert all("If-None-Match" not in s.headers for s in api.hits("/s"))


async def test_etag_304_means_no_change(api: Api, session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.json_response({"v": 1}, headers={"ETag": '"v1"'})

    api.routes["/s"] = handler
    sink = Sink()
    p = poller(config(api.url("/s")), sink)
    assert (await p.poll_once(session)).emitted
    r = await p.poll_once(session)
    assert r.ok and r.not_modified and not r.emitted and r.status == 304
    assert [s.headers.get("If-None-Match") for s in api.hits("/s")] == [None, '"v1"']
    assert len(sink.rest) == 1 and p.stats.not_modified == 1


async def test_last_modified_304(api: Api, session: aiohttp.ClientSession) -> None:
    stamp = "Wed, 21 Oct 2015 07:28:00 GMT"

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-Modified-Since") == stamp:
            return web.Response(status=304)
        return web.json_response({"v": 1}, headers={"Last-Modified": stamp})

    api.routes["/s"] = handler
    sink = Sink()
    p = poller(config(api.url("/s")), sink)
    assert (await p.poll_once(session)).emitted
    assert (await p.poll_once(session)).not_modified
    assert "If-None-Match" not in api.hits("/s")[1].headers
    assert len(sink.rest) == 1


async def test_validators_kept_only_after_a_processed_body(
    api: Api, session: aiohttp.ClientSession
) -> None:
    sink = Sink()
    p = poller(config(api.url("/s")), sink)
    api.json_at("/s", {"v": 1}, ETag='"v1"')
    await p.poll_once(session)
    api.routes["/s"] = _raw_json("{broken", ETag='"v2"')
    assert (await p.poll_once(session)).reason == "invalid JSON"
    api.json_at("/s", {"v": 2}, ETag='"v2"')
    assert (await p.poll_once(session)).emitted
    assert [s.headers.get("If-None-Match") for s in api.hits("/s")] == [None, '"v1"', '"v1"']


# --- failures ------------------------------------------------------------------------------


async def test_backoff_and_report_once_then_recovery(
    api: Api, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="masterchief.rest")
    healthy = {"up": True}

    async def handler(_request: web.Request) -> web.StreamResponse:
        if healthy["up"]:
            return web.json_response({"v": 1})
        return web.Response(status=503, text="maintenance")

    api.routes["/s"] = handler
    ft, sink = FakeTime(), Sink()
    p = poller(config(api.url("/s")), sink, ft, http=lambda: _ready(session))
    task = asyncio.create_task(p.run(sink, asyncio.Event()))
    try:
        await ft.wait_sleeps(1)
        assert ft.delays == [60.0] and len(sink.rest) == 1

        healthy["up"] = False
        delays = [await ft.step() for _ in range(6)]
        assert delays == [120.0, 240.0, 480.0, 600.0, 600.0, 600.0]
        failing = sink.of("event", "rest.failing")
        assert len(failing) == 1
        assert failing[0].payload == {
            "name": "svc",
            "url": api.url("/s"),
            "channels": ["#ops"],
            "reason": "HTTP 503",
            "failures": 1,
            "since": 1_700_000_000.0 + 60,  # the first failed poll
            "retry_in_s": 120.0,
        }
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "is failing: HTTP 503" in warnings[0].getMessage()

        healthy["up"] = True
        assert await ft.step() == 60.0
        recovered = sink.of("event", "rest.recovered")
        assert len(recovered) == 1
        assert recovered[0].payload["failures"] == 6
        assert recovered[0].payload["down_s"] == 600.0 * 3 + 480 + 240 + 120
        assert len(sink.rest) == 1  # the data itself did not change
        assert await ft.step() == 60.0
        assert len(sink.of("event")) == 2
        assert any("recovered after 6 failed polls" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_interval_jitter_and_schedule_from_poll_start(api: Api) -> None:
    sink = Sink()
    p = RestPoller(config(api.url("/s"), interval_s=100), sink)
    delays = {p.next_delay() for _ in range(200)}
    assert all(90.0 <= d <= 110.0 for d in delays)
    assert len(delays) > 100  # actually random


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "HTTP 500"), (502, "HTTP 502"), (404, "HTTP 404"), (403, "HTTP 403")],
)
async def test_http_errors(
    api: Api, session: aiohttp.ClientSession, status: int, reason: str
) -> None:
    api.routes["/s"] = _raw_json('{"error": "x"}', status=status)
    sink = Sink()
    r = await poller(config(api.url("/s")), sink).poll_once(session)
    assert not r.ok and r.reason == reason
    assert not sink.rest


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    sink = Sink()
    p = poller(config(f"http://127.0.0.1:{closed_port()}/s"), sink)
    r = await p.poll_once(session)
    assert r.reason == "connection failed"
    assert sink.of("event", "rest.failing")[0].payload["reason"] == "connection failed"


async def test_timeout(api: Api, session: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({})

    api.routes["/s"] = slow
    sink = Sink()
    p = poller(config(api.url("/s"), timeout_s=0.2), sink)
    try:
        r = await p.poll_once(session)
    finally:
        release.set()
    assert r.reason == "timed out after 0.2s"


async def test_oversize_response(api: Api, session: aiohttp.ClientSession) -> None:
    big = json.dumps({"x": "a" * 5000})
    api.routes["/declared"] = _raw_json(big)

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b" " * 500)
        await resp.write(b"{}")
        await resp.write_eof()
        return resp

    api.routes["/streamed"] = streamed
    for path in ("/declared", "/streamed"):
        sink = Sink()
        r = await poller(config(api.url(path)), sink, max_bytes=1000).poll_once(session)
        assert r.reason == "response larger than 1000 bytes", path
    ok = await poller(config(api.url("/declared")), Sink(), max_bytes=6000).poll_once(session)
    assert ok.ok


async def test_large_body_parsed_off_loop(api: Api, session: aiohttp.ClientSession) -> None:
    doc = {"items": [{"i": i, "pad": "x" * 100} for i in range(5000)]}  # > 256 KB
    api.json_at("/s", doc)
    sink = Sink()
    assert (await poller(config(api.url("/s"), select="length(items)"), sink).poll_once(session)).ok
    assert sink.rest[0].payload["data"] == 5000


async def test_invalid_json_and_select_errors(api: Api, session: aiohttp.ClientSession) -> None:
    api.routes["/bad"] = _raw_json("<html>not json</html>")
    api.json_at("/num", {"foo": 5})
    sink = Sink()
    assert (await poller(config(api.url("/bad")), sink).poll_once(session)).reason == "invalid JSON"
    r = await poller(config(api.url("/num"), select="length(foo)"), sink).poll_once(session)
    assert r.reason == "select expression failed"
    assert not sink.rest


async def test_redirects_same_origin_only(api: Api, session: aiohttp.ClientSession) -> None:
    other, other_server = await start_api()
    try:
        other.json_at("/steal", {"stolen": True})

        async def moved(_request: web.Request) -> web.StreamResponse:
            raise web.HTTPMovedPermanently("/new")

        async def away(_request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(other.url("/steal"))

        api.routes["/old"] = moved
        api.json_at("/new", {"v": 1})
        api.routes["/away"] = away
        auth = {"type": "bearer", "token": "t-redirect-1"}
        sink = Sink()
        r = await poller(config(api.url("/old"), auth=auth), sink).poll_once(session)
        assert r.ok and sink.rest[0].payload["data"] == {"v": 1}
        assert api.hits("/new")[0].headers["Authorization"] == "Bearer t-redirect-1"

        r = await poller(config(api.url("/away"), auth=auth), sink).poll_once(session)
        assert r.reason == "redirect to another host refused"
        assert not other.seen
    finally:
        await other_server.close()


async def test_secrets_never_in_logs_or_events(
    api: Api, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = ["k-query-secret-1", "b-bearer-secret-2", "csecret-xyz", "tok-1-secretish"]

    api.routes["/q"] = _raw_json("nope", status=500)
    api.routes["/b"] = _raw_json("{bad")
    ts = TokenServer(accept_issued=False)
    ts.install(api)

    sink = Sink()
    pollers = [
        poller(
            config(
                api.url("/q?x=1"),
                name="q",
                auth={"type": "api_key", "key": secrets[0], "query": "x_auth"},
            ),
            sink,
        ),
        poller(
            config(
                f"http://127.0.0.1:{closed_port()}/q",
                name="dead",
                auth={"type": "api_key", "key": secrets[0], "query": "x_auth"},
            ),
            sink,
        ),
        poller(config(api.url("/b"), name="b", auth={"type": "bearer", "token": secrets[1]}), sink),
        poller(config(api.url("/data"), name="o", auth=oauth_auth(api)), sink),
    ]
    for p in pollers:
        for _ in range(2):
            assert not (await p.poll_once(session)).ok
    # the servers did get the secrets, so the test means something
    assert api.hits("/q")[0].query["x_auth"] == secrets[0]
    assert ts.issued[0] == secrets[3]

    failing = sink.of("event", "rest.failing")
    assert {e.payload["name"] for e in failing} == {"q", "dead", "b", "o"}
    # The test server's own access log shows the query key: proof that caplog sees
    # such lines.  Ours must not.
    assert any(secrets[0] in r.getMessage() for r in caplog.records if r.name == "aiohttp.access")
    ours = [r for r in caplog.records if r.name.startswith("masterchief")]
    assert ours
    shown = "\n".join(r.getMessage() + (r.exc_text or "") for r in ours)
    shown += repr(sink.events) + json.dumps([e.payload for e in sink.events])
    for secret in secrets:
        assert secret not in shown
    assert failing[0].payload["url"] == api.url("/q?x=1")  # the key is added per request


# --- state across restarts ----------------------------------------------------------------


async def test_state_survives_restart(
    api: Api, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    api.json_at("/s", {"v": 1}, ETag='"v1"')
    cfg = config(api.url("/s"))
    async with await open_store(tmp_path / "s.db") as store:
        sink = Sink()
        p = poller(cfg, sink, store=store)
        await p.load_state()
        assert (await p.poll_once(session)).emitted

    async with await open_store(tmp_path / "s.db") as store:
        sink = Sink()
        p = poller(cfg, sink, store=store)
        await p.load_state()
        assert not (await p.poll_once(session)).emitted  # same body, new process
        assert api.hits("/s")[-1].headers.get("If-None-Match") == '"v1"'

        api.routes["/s"] = _raw_json("", status=503)
        assert not (await p.poll_once(session)).ok
        assert len(sink.of("event", "rest.failing")) == 1

    async with await open_store(tmp_path / "s.db") as store:
        sink = Sink()
        p = poller(cfg, sink, store=store)
        await p.load_state()
        assert p.failing and p.failures == 1
        assert not (await p.poll_once(session)).ok
        assert not sink.of("event")  # already reported before the restart
        api.json_at("/s", {"v": 1}, ETag='"v1"')
        assert (await p.poll_once(session)).ok
        assert [e.key for e in sink.events] == ["rest.recovered"]

        # a different select starts afresh
        p2 = poller(config(api.url("/s"), select="v"), sink, store=store)
        await p2.load_state()
        assert (await p2.poll_once(session)).emitted
        assert sink.rest[-1].payload["initial"] is True
        assert "If-None-Match" not in api.hits("/s")[-1].headers


# --- all pollers together --------------------------------------------------------------------


async def test_pollers_run_in_one_session_and_close(api: Api) -> None:
    """Every poller of the ``rest`` family runs on the runtime's one shared
    session, sends its own User-Agent, and the session closes with the runtime."""
    api.json_at("/a", {"a": 1})
    api.json_at("/b", {"b": 2})
    sink = Sink()
    http = SharedHttp()
    runner = SourceRunner(
        [REST_FAMILY],
        SimpleNamespace(rest=(config(api.url("/a"), name="a"), config(api.url("/b"), name="b"))),
        SourceDeps(store=None, announce=no_announce, http=http),
        sink,  # type: ignore[arg-type]
    )
    started = asyncio.Event()
    task = asyncio.create_task(runner.run(started))
    try:
        await sink.wait_for(lambda: len(sink.rest) == 2)
        assert started.is_set()
        session = await http()
        assert session is await http()  # one session for every poller
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.aclose()
    assert session.closed
    assert sorted((e.key, json.dumps(e.payload["data"])) for e in sink.rest) == [
        ("rest/a", '{"a": 1}'),
        ("rest/b", '{"b": 2}'),
    ]
    assert all(s.headers["User-Agent"] == "MasterChief REST poller" for s in api.seen)
    assert [s.state for s in runner.statuses()] == ["ok", "ok"]


async def no_announce(channel: str, text: str) -> None:
    raise AssertionError("REST pollers announce through bindings, not directly")


# --- end to end: the bot, a real InspIRCd, a loopback REST API ---------------------------------

ANNOUNCER = """
from masterchief import bind, say


def on_rest(ev):
    for chan in ev.payload["channels"]:
        say(chan, f"[{ev.key}] changed: {ev.payload['data']}")


def on_rest_short(ev):
    for chan in ev.payload["channels"]:
        say(chan, f"short mask saw {ev.key}: {ev.payload['data']}")


def on_failing(ev):
    for chan in ev.payload["channels"]:
        say(chan, f"[{ev.payload['name']}] failing: {ev.payload['reason']}")


def on_recovered(ev):
    for chan in ev.payload["channels"]:
        say(chan, f"[{ev.payload['name']}] recovered")


bind("rest", "-|-", "rest/svc", on_rest)
bind("rest", "-|-", "svc", on_rest_short)  # the same poller, DESIGN.md's form
bind("event", "-|-", "rest.failing", on_failing)
bind("event", "-|-", "rest.recovered", on_recovered)
"""


async def test_bot_announces_changes_failure_and_recovery(
    tmp_path: Path,
    api: Api,
    ircd: Any,
    irc_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="masterchief")

    state: dict[str, Any] = {"doc": {"v": 1, "noise": 0}}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer e2e-token-123":
            return web.Response(status=401)
        if state["doc"] is None:
            return web.Response(status=503)
        return web.json_response(state["doc"])

    api.routes["/status"] = handler
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "announce.py").write_text(ANNOUNCER)
    rest = [
        {
            "name": "svc",
            "url": api.url("/status"),
            "interval_s": 1,
            "timeout_s": 2,
            "auth": {"type": "bearer", "token": "${env:E2E_TOKEN}"},
            "select": "v",
            "channels": ["#ops"],
        }
    ]
    async with running_bot(
        tmp_path,
        ircd.host,
        ircd.port,
        rest=rest,
        web={"port": 0},  # the bot's own HTTP server must not need a fixed port here
        environ={"E2E_TOKEN": "e2e-token-123"},
    ) as app:
        me = app.irc.nickname  # type: ignore[union-attr]
        c = await irc_client()
        await c.join("#ops")

        def polls() -> int:
            return len(api.hits("/status"))

        await wait_until(lambda: polls() >= 1, 15)

        poller = app.sources.find("rest", "svc")
        assert isinstance(poller, RestPoller)
        emitted, n = poller.stats.emitted, polls()
        state["doc"] = {"v": 1, "noise": 1}  # outside the selection: no announcement
        await wait_until(lambda: polls() >= n + 2, 15)
        assert poller.stats.emitted == emitted
        state["doc"] = {"v": 2, "noise": 2}
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :\[rest/svc\] changed: 2$", 15)
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :short mask saw rest/svc: 2$", 15)
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :\[svc\] changed: 2$", 15)  # built-in

        n = polls()
        state["doc"] = None
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :\[svc\] failing: HTTP 503$")
        await wait_until(lambda: polls() >= n + 2, 10)  # failed twice, reported once

        state["doc"] = {"v": 3}
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :\[svc\] recovered$", 15)
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :\[rest/svc\] changed: 3$", 15)
        await c.expect_none(r"PRIVMSG #ops :\[svc\] failing", within=0.3)
    assert "e2e-token-123" not in caplog.text
