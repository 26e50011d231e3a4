"""OAuth 2.0 client-credentials tokens (RFC 6749 §4.4) for the REST pollers.

How this works.  ``ClientCredentials.token(session)`` returns the cached
access token, fetching a new one when none is cached or the cached one is
within its refresh margin of expiry (``expires_in`` minus
``min(60 s, 10% of expires_in)``, so a token is never used in its last
moments).  A token without ``expires_in`` is kept until the resource server
refuses it.  ``invalidate(token)`` drops a refused token (the poller calls
it on a 401 and retries once), so the next ``token()`` fetches a fresh one.

The token request is ``POST token_url`` with
``grant_type=client_credentials`` (and ``scope`` when configured); the
client authenticates with HTTP Basic over the form-urlencoded id and secret,
the method RFC 6749 §2.3.1 requires every server to support.  Redirects are
not followed: credentials go to the configured URL or nowhere.

Parsing the token response is a pure function (``parse_token_response``);
the class around it is the thin I/O part.  Failures raise ``TokenError``
whose text is safe to show anyone: a status and at most the RFC 6749 error
code, never a response body or a secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote_plus

import aiohttp

from masterchief.config.secrets import Secret

__all__ = [
    "AccessToken",
    "BodyTooLarge",
    "ClientCredentials",
    "TokenError",
    "basic_client_auth",
    "parse_token_response",
    "read_limited",
    "refresh_margin",
]

MAX_TOKEN_RESPONSE_BYTES = 65_536
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


class BodyTooLarge(Exception):
    """A response body exceeded the size cap (it was not read further)."""


async def read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read a response body of at most ``limit`` bytes (after decompression),
    raising ``BodyTooLarge`` as soon as it is known to be bigger."""
    if resp.content_length is not None and resp.content_length > limit:
        raise BodyTooLarge
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65_536):
        buf += chunk
        if len(buf) > limit:
            raise BodyTooLarge
    return bytes(buf)


class TokenError(Exception):
    """The token endpoint did not give us a usable token.  ``str()`` is safe to show."""


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and when (on the poller's clock) to stop using it."""

    value: Secret
    refresh_at: float | None  # None: no expiry given; used until refused

    def fresh(self, now: float) -> bool:
        return self.refresh_at is None or now < self.refresh_at


def refresh_margin(lifetime_s: float) -> float:
    """How long before expiry a token is replaced: 10% of its life, at most 60 s."""
    return min(60.0, lifetime_s * 0.1)


def basic_client_auth(client_id: str, client_secret: str) -> str:
    """The ``Authorization`` value for client authentication (RFC 6749 §2.3.1):
    id and secret form-urlencoded, then joined by ``:`` and base64-encoded."""
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _error_code(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    code = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code
    return None


def parse_token_response(status: int, body: bytes, now: float) -> AccessToken:
    """Turn the token endpoint's answer into an ``AccessToken`` or raise ``TokenError``."""
    if status != 200:
        code = _error_code(body)
        raise TokenError(f"token endpoint answered HTTP {status}" + (f" ({code})" if code else ""))
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise TokenError("token endpoint returned invalid JSON") from None
    if not isinstance(doc, dict):
        raise TokenError("token endpoint returned no JSON object")
    value = doc.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenError("token endpoint returned no access_token")
    token_type = doc.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError("token endpoint returned a token_type other than bearer")
    expires_in = doc.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)  # some servers send a string
    if expires_in is None:
        refresh_at = None
    elif isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        lifetime = max(0.0, float(expires_in))
        refresh_at = now + lifetime - refresh_margin(lifetime)
    else:
        raise TokenError("token endpoint returned an invalid expires_in")
    return AccessToken(Secret(value), refresh_at)


class ClientCredentials:
    """A cached client-credentials token for one poller."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: Secret,
        scope: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self._clock = clock
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # token requests made (tests, diagnostics)

    @property
    def cached(self) -> AccessToken | None:
        return self._token

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line."""
        out = [self._client_secret.reveal()]
        if self._token is not None:
            out.append(self._token.value.reveal())
        return out

    def invalidate(self, token: Secret) -> None:
        """Forget ``token`` (the resource server refused it), unless already replaced."""
        if self._token is not None and self._token.value == token:
            self._token = None

    async def token(self, session: aiohttp.ClientSession) -> Secret:
        """A token that is not about to expire, fetching one if needed."""
        async with self._lock:
            current = self._token
            if current is not None and current.fresh(self._clock()):
                return current.value
            self._token = await self._fetch(session)
            return self._token.value

    async def _fetch(self, session: aiohttp.ClientSession) -> AccessToken:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        headers = {
            "Authorization": basic_client_auth(self.client_id, self._client_secret.reveal()),
            "Accept": "application/json",
        }
        self.fetches += 1
        started = self._clock()
        try:
            async with session.post(
                self.token_url, data=form, headers=headers, allow_redirects=False
            ) as resp:
                body = await read_limited(resp, MAX_TOKEN_RESPONSE_BYTES)
                status = resp.status
        except BodyTooLarge:
            raise TokenError("token endpoint response too large") from None
        except aiohttp.ClientError:
            raise TokenError("token endpoint unreachable") from None
        # Expiry counts from when we asked: the token may be a little older than its answer.
        return parse_token_response(status, body, started)
