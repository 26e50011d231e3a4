"""REST pollers: one task per ``rest:`` entry, Events of type ``rest`` out.

How this works
--------------
``RestPollers(configs, sink, store=...)`` checks the entries (unique names,
JMESPath ``select`` compiles, http/https URLs) and ``run()`` opens one
shared aiohttp session and runs one ``RestPoller`` per entry in a TaskGroup.
Each poller loops: ``poll_once()``, then sleep until ``interval_s`` (±10%
jitter) after the poll *started*, or, while failing, the backoff delay.

One poll, under a ``timeout_s`` budget that covers the token request, the
request, redirects and reading the body:

1. Auth: ``api_key`` (the key in the configured ``header``, or the
   configured ``query`` parameter), ``bearer``, ``basic``, or ``oauth2``
   client credentials (``oauth.ClientCredentials``: cached, refreshed
   before expiry; on a 401 the token is dropped and the request retried
   once, a second 401 is a failure like any other).
2. Conditional request: with ``emit: on_change`` and a previous selection,
   the server's ``ETag`` / ``Last-Modified`` go back as ``If-None-Match`` /
   ``If-Modified-Since``; 304 means unchanged: no Event.  ``every_poll``
   sends no validators, since every poll must produce a value.
3. Redirects are followed (at most 5) only within the same origin (or the
   http -> https upgrade of it): credentials never go to another host.
4. The body is read up to ``max_bytes`` (10 MB after decompression), parsed
   as JSON, narrowed by ``select`` and hashed: SHA-256 of the canonical JSON
   (sorted keys, no whitespace), so key order and formatting never count as
   a change.
5. ``on_change`` emits when the hash differs from the previous one,
   including the very first successful poll (``initial: true``): the
   channel learns the current state once, and a formatter that wants
   silence on start can skip ``initial`` events.  ``every_poll`` emits on
   every successful poll.  Validators are kept only once a body has been
   fully processed, so a 304 never hides a change we failed to see.

Failure (connection error, timeout, HTTP status outside 2xx/304, a body
over the cap, invalid JSON, a ``select`` error, a token endpoint failure)
backs off exponentially: ``interval * 2**failures``, capped at
``backoff_cap * interval`` (jitter applied too).  The first failure of a run
of failures logs one warning and emits one ``event``/``rest.failing``; later
failures log at debug level; the first success after it emits
``rest.recovered`` and logs one line.

State that must survive a restart (the selection hash, validators, whether
a failure was already reported) is the store checkpoint ``rest:<name>``
(a ``RestState``), reset when ``url`` or ``select`` changes.

Event payloads
--------------
``Event(type="rest", key="rest/<name>", source="rest", payload=...)`` (a
``rest`` binding's mask gets the ``rest/`` prefix when it lacks one, so
``bind("rest", "-|-", "statuspage", ...)`` matches too)::

    {"name": "statuspage",          # the poller
     "data": <selected JSON>,       # the whole body when no select
     "previous": <JSON> | None,     # the previous selection, when this process saw it
     "initial": bool,               # no previous selection known (first poll ever,
                                    #   or url/select changed)
     "changed": bool,               # hash != previous hash (always true for on_change)
     "hash": "<sha256 hex>", "previous_hash": "<sha256 hex>" | None,
     "status": 200, "url": "<url with secrets redacted>",
     "emit": "on_change" | "every_poll", "channels": ["#ops", ...]}

``Event(type="event", key="rest.failing", source="rest", payload=...)``::

    {"name", "url", "channels",
     "reason": "HTTP 503",          # safe to show: never exception text or secrets
     "failures": 1, "since": <epoch s>, "retry_in_s": 120.0}

``Event(type="event", key="rest.recovered", source="rest", payload=...)``::

    {"name", "url", "channels", "failures": 7, "down_s": 845.2}

Secrets (keys, tokens, passwords, client secrets, the current OAuth token)
never reach a log line or an Event: URLs are shown without userinfo and with
credential-like query parameters masked, and log text is scrubbed of this
poller's secret values and of everything the global ``REDACTOR`` knows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from yarl import URL

from masterchief.bindings.event import Event, new_ref
from masterchief.config.schema import RestPollConfig
from masterchief.config.secrets import MASK, REDACTOR, Redactor, Secret
from masterchief.errors import ConfigError
from masterchief.metrics import Family
from masterchief.store.api import CheckpointStore, StoreError, from_json, to_json

from ..base import SourceState, SourceStatus
from .oauth import BodyTooLarge, ClientCredentials, TokenError, read_limited
from .polling import (
    MAX_BYTES,
    MAX_REDIRECTS,
    PARSE_INLINE_BYTES,
    REDIRECT_STATUSES,
    USER_AGENT,
    Fetched,
    PollerStats,
    PollFailure,
    PollResult,
    RestState,
    backoff_delay,
    canonical_hash,
    check_select,
    fingerprint,
    jittered,
    redact_url,
    same_origin,
)

if TYPE_CHECKING:
    pass

__all__ = ["EventSink", "RestPoller"]

log = logging.getLogger("masterchief.rest")


class EventSink(Protocol):
    """Where a poller puts Events (the dispatcher): waits for room in the queue."""

    async def put(self, *chain: Event) -> None: ...


HttpSession = Callable[[], Awaitable[aiohttp.ClientSession]]


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class _NoSink:
    async def put(self, *chain: Event) -> None:
        raise RuntimeError("a poller needs a sink: run() it, or give one to poll_once tests")


# --- one poller ------------------------------------------------------------------


class RestPoller:
    """Polls one endpoint: the ``rest`` source of one ``rest:`` entry.
    ``run(sink, started)`` loops forever on the runtime's shared HTTP session
    (``http``); tests call ``poll_once(session)`` with a ``sink`` given here
    and pass ``clock``/``sleep``/``rng`` to control time."""

    family = "rest"

    def __init__(
        self,
        config: RestPollConfig,
        sink: EventSink | None = None,
        *,
        store: CheckpointStore | None = None,
        http: HttpSession | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: Clock = random.random,
        jitter: float = 0.1,
        backoff_cap: float = 10.0,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.config = config
        self.name = config.name
        self.sink: EventSink = sink if sink is not None else _NoSink()
        self.store = store
        self._http = http
        self.last_success: float | None = None
        self._last_reason: str | None = None
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._rng = rng
        self.jitter = jitter
        self.backoff_cap = backoff_cap
        self.max_bytes = max_bytes
        self.stats = PollerStats()

        try:
            url = URL(config.url)
        except ValueError:
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError("only http and https URLs can be polled", key=f"rest.{self.name}.url")
        self._url = url
        self._expr = None
        if config.select is not None:
            try:
                self._expr = check_select(config.select)
            except ValueError as exc:
                raise ConfigError(str(exc), key=f"rest.{self.name}.select") from None
        auth = config.auth
        self._oauth: ClientCredentials | None = None
        if auth.type == "oauth2":
            assert auth.token_url and auth.client_id and auth.client_secret  # config checks
            try:
                token_url = URL(auth.token_url)
            except ValueError:
                token_url = URL()
            if token_url.scheme not in ("http", "https") or not token_url.host:
                raise ConfigError(
                    "token_url must be an http or https URL", key=f"rest.{self.name}.auth.token_url"
                )
            self._oauth = ClientCredentials(
                auth.token_url, auth.client_id, auth.client_secret, auth.scope, clock=clock
            )
        self._query_param = auth.query if auth.type == "api_key" else None
        self.shown_url = redact_url(config.url, [self._query_param] if self._query_param else [])
        self._scrubber = Redactor()
        for secret in (auth.key, auth.token, auth.password, auth.client_secret):
            if secret is not None:
                self._scrubber.register(secret)
        if url.password:
            self._scrubber.register(url.password)

        self.fingerprint = fingerprint(config)
        self._hash: str | None = None
        self._previous: Any = None
        self._etag: str | None = None
        self._last_modified: str | None = None
        self.failures = 0  # consecutive
        self._failing_since: float | None = None  # wall time of the reported failure
        self._saved: tuple[object, ...] | None = None

    # -- state ---------------------------------------------------------------

    @property
    def failing(self) -> bool:
        """A failure has been reported and no success seen since."""
        return self._failing_since is not None

    def _state(self) -> tuple[object, ...]:
        return (
            self._hash,
            self._etag,
            self._last_modified,
            self.failures,
            self._failing_since,
        )

    async def load_state(self) -> None:
        """Take up where the last run left off (same URL and select only)."""
        if self.store is None:
            return
        try:
            saved = await self.store.checkpoint_get(f"rest:{self.name}")
        except StoreError as exc:
            log.error("rest %s: cannot load poller state: %s", self.name, self._scrub(str(exc)))
            return
        if saved is None:
            return
        row = from_json(RestState, saved.value)
        if row.fingerprint != self.fingerprint:
            return
        self._hash = row.hash
        self._etag = row.etag
        self._last_modified = row.last_modified
        self.failures = int(row.failures)
        self._failing_since = row.failing_since
        self._saved = self._state()

    async def _save_state(self) -> None:
        state = self._state()
        if self.store is None or state == self._saved:
            return
        try:
            await self.store.checkpoint_put(
                f"rest:{self.name}",
                to_json(
                    RestState(
                        fingerprint=self.fingerprint,
                        hash=self._hash,
                        etag=self._etag,
                        last_modified=self._last_modified,
                        failures=self.failures,
                        failing_since=self._failing_since,
                    )
                ),
            )
            self._saved = state
        except StoreError as exc:
            log.error("rest %s: cannot save poller state: %s", self.name, self._scrub(str(exc)))

    # -- scheduling ------------------------------------------------------------

    def next_delay(self) -> float:
        """Seconds from the start of the last poll to the start of the next."""
        base = backoff_delay(self.config.interval_s, self.failures, self.backoff_cap)
        return jittered(base, self.jitter, self._rng())

    async def run(self, sink: EventSink, started: asyncio.Event) -> None:
        """Poll until cancelled."""
        assert self._http is not None, "a running poller needs the shared HTTP session"
        self.sink = sink
        session = await self._http()
        await self.load_state()
        started.set()
        while True:
            began = self._clock()
            await self.poll_once(session)
            await self._sleep(max(0.0, began + self.next_delay() - self._clock()))

    # -- as a source -------------------------------------------------------------

    def status(self) -> SourceStatus:
        s = self.stats
        if self.failing:
            state: SourceState = "failing"
            detail = f"{self.shown_url}: {self._last_reason or 'failing'} ({self.failures}x)"
        else:
            state = "ok" if s.polls else "starting"
            detail = f"{self.shown_url} every {self.config.interval_s:g}s"
        return SourceStatus(
            self.family,
            self.name,
            state,
            detail,
            events=s.emitted,
            errors=s.failed,
            last_success=self.last_success,
        )

    def metrics(self) -> list[Family]:
        s = self.stats
        return [
            Family(
                "masterchief_rest_polls",
                "REST polls by outcome",
                "counter",
                ("poller", "outcome"),
                {
                    (self.name, "polled"): s.polls,
                    (self.name, "failed"): s.failed,
                    (self.name, "not_modified"): s.not_modified,
                    (self.name, "emitted"): s.emitted,
                },
            )
        ]

    # -- one poll --------------------------------------------------------------

    async def poll_once(self, session: aiohttp.ClientSession) -> PollResult:
        """Poll once: emit what changed, report failure or recovery, update state."""
        self.stats.polls += 1
        timeout = self.config.timeout_s
        try:
            async with asyncio.timeout(timeout):
                fetched = await self._fetch(session)
            if fetched is None:
                self.stats.not_modified += 1
                await self._recovered()
                await self._save_state()
                return PollResult(ok=True, status=304, not_modified=True)
            if len(fetched.body) > PARSE_INLINE_BYTES:
                selection, digest = await asyncio.to_thread(self._select, fetched.body)
            else:
                selection, digest = self._select(fetched.body)
        except PollFailure as failure:
            return await self._failed(failure)
        except TimeoutError:
            return await self._failed(PollFailure(f"timed out after {timeout:g}s"))
        except TokenError as exc:
            return await self._failed(PollFailure(f"auth failed: {exc}"))
        except BodyTooLarge:
            return await self._failed(PollFailure(f"response larger than {self.max_bytes} bytes"))
        except aiohttp.ClientConnectionError as exc:
            return await self._failed(PollFailure("connection failed", self._describe(exc)))
        except aiohttp.ClientError as exc:
            return await self._failed(PollFailure("request failed", self._describe(exc)))
        except Exception as exc:  # a bug here must not end the poller
            ref = new_ref()
            text = "".join(traceback.format_exception(exc))
            log.error("rest %s: poll failed (ref %s)\n%s", self.name, ref, self._scrub(text))
            return await self._failed(PollFailure(f"internal error (ref {ref})"))

        await self._recovered()
        changed = digest != self._hash
        emitted = changed or self.config.emit == "every_poll"
        if emitted:
            await self.sink.put(self._change_event(fetched.status, selection, digest))
            self.stats.emitted += 1
        self._hash, self._previous = digest, selection
        self._etag, self._last_modified = fetched.etag, fetched.last_modified
        await self._save_state()
        return PollResult(ok=True, status=fetched.status, changed=changed, emitted=emitted)

    def _change_event(self, status: int, selection: Any, digest: str) -> Event:
        payload = {
            "name": self.name,
            "data": selection,
            "previous": self._previous,
            "initial": self._hash is None,
            "changed": digest != self._hash,
            "hash": digest,
            "previous_hash": self._hash,
            "status": status,
            "url": self.shown_url,
            "emit": self.config.emit,
            "channels": list(self.config.channels),
        }
        return Event(type="rest", key=f"rest/{self.name}", source="rest", payload=payload)

    async def _fetch(self, session: aiohttp.ClientSession) -> Fetched | None:
        """The body of a 2xx answer, or None for 304.  Raises on anything else."""
        for attempt in (1, 2):
            token = await self._oauth.token(session) if self._oauth is not None else None
            resp = await self._request(session, token)
            async with resp:
                if resp.status == 401 and token is not None:
                    assert self._oauth is not None
                    self._oauth.invalidate(token)  # the next token() fetches a new one
                    if attempt == 1:
                        self.stats.token_refreshes_on_401 += 1
                        continue
                if resp.status == 304:
                    return None
                if not 200 <= resp.status < 300:
                    raise PollFailure(f"HTTP {resp.status}")
                body = await read_limited(resp, self.max_bytes)
                return Fetched(
                    resp.status,
                    body,
                    resp.headers.get("ETag"),
                    resp.headers.get("Last-Modified"),
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _headers(self, token: Secret | None) -> dict[str, str]:
        auth = self.config.auth
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if auth.type == "api_key" and auth.header is not None and auth.key is not None:
            headers[auth.header] = auth.key.reveal()
        elif auth.type == "bearer" and auth.token is not None:
            headers["Authorization"] = f"Bearer {auth.token.reveal()}"
        elif auth.type == "basic" and auth.username is not None and auth.password is not None:
            pair = f"{auth.username}:{auth.password.reveal()}".encode()  # RFC 7617, UTF-8
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        elif token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        if self.config.emit == "on_change" and self._hash is not None:
            if self._etag is not None:
                headers["If-None-Match"] = self._etag
            if self._last_modified is not None:
                headers["If-Modified-Since"] = self._last_modified
        return headers

    def _with_key(self, url: URL) -> URL:
        key = self.config.auth.key
        if self._query_param is None or key is None:
            return url
        return url.update_query({self._query_param: key.reveal()})

    async def _request(
        self, session: aiohttp.ClientSession, token: Secret | None
    ) -> aiohttp.ClientResponse:
        """GET the URL, following same-origin redirects only."""
        headers = self._headers(token)
        url = self._url
        for _ in range(MAX_REDIRECTS + 1):
            resp = await session.get(self._with_key(url), headers=headers, allow_redirects=False)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return resp
            resp.release()
            try:
                target = url.join(URL(location))
            except ValueError:
                raise PollFailure("invalid redirect") from None
            if not same_origin(self._url, target):
                raise PollFailure(
                    "redirect to another host refused",
                    f"Location: {redact_url(target, [self._query_param or ''])}",
                )
            url = target
        raise PollFailure("too many redirects")

    def _select(self, body: bytes) -> tuple[Any, str]:
        """The selection and its hash (CPU work: big bodies run in a thread)."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise PollFailure("invalid JSON") from None
        if self._expr is None:
            return doc, canonical_hash(doc)
        from jmespath.exceptions import JMESPathError

        try:
            selection = self._expr.search(doc)
        except JMESPathError as exc:
            raise PollFailure("select expression failed", self._scrub(str(exc))) from None
        return selection, canonical_hash(selection)

    # -- failure and recovery ----------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._oauth is not None:
            for value in self._oauth.secrets():
                if len(value) >= Redactor.MIN_LENGTH:
                    text = text.replace(value, MASK)
        return REDACTOR.redact(self._scrubber.redact(text))

    def _describe(self, exc: BaseException) -> str:
        return self._scrub(f"{type(exc).__name__}: {exc}")

    async def _failed(self, failure: PollFailure) -> PollResult:
        self.stats.failed += 1
        self._last_reason = failure.reason
        self.failures += 1
        detail = f" ({failure.detail})" if failure.detail else ""
        if self._failing_since is None:
            self._failing_since = self._wall()
            retry = backoff_delay(self.config.interval_s, self.failures, self.backoff_cap)
            log.warning(
                "rest %s: %s is failing: %s%s; retrying with backoff, next in ~%.0fs",
                self.name,
                self.shown_url,
                failure.reason,
                detail,
                retry,
            )
            await self.sink.put(
                Event(
                    type="event",
                    key="rest.failing",
                    source="rest",
                    payload={
                        "name": self.name,
                        "url": self.shown_url,
                        "channels": list(self.config.channels),
                        "reason": failure.reason,
                        "failures": self.failures,
                        "since": self._failing_since,
                        "retry_in_s": retry,
                    },
                )
            )
        else:
            log.debug(
                "rest %s: still failing (%d): %s%s",
                self.name,
                self.failures,
                failure.reason,
                detail,
            )
        await self._save_state()
        return PollResult(ok=False, reason=failure.reason)

    async def _recovered(self) -> None:
        self.last_success = self._wall()
        since, failures = self._failing_since, self.failures
        self.failures = 0
        self._failing_since = None
        if since is None:
            return
        down = max(0.0, self._wall() - since)
        log.info(
            "rest %s: %s recovered after %d failed polls (%.0fs)",
            self.name,
            self.shown_url,
            failures,
            down,
        )
        await self.sink.put(
            Event(
                type="event",
                key="rest.recovered",
                source="rest",
                payload={
                    "name": self.name,
                    "url": self.shown_url,
                    "channels": list(self.config.channels),
                    "failures": failures,
                    "down_s": down,
                },
            )
        )
