"""Webhook verification: pure functions over header values and the raw body.

How this works
--------------
Each provider signs or authenticates its deliveries in its own way.  Every
check here takes the configured secret(s), the raw body bytes and the header
values the provider sends (already picked out of the request by the server),
and returns a ``Verdict``: ``OK``, or a rejection with a one-line reason that
is safe to log and to put in an HTTP response.  A reason never contains a
secret, the expected signature or the presented one (which could be
anything, of any length).

No I/O and no clock of their own: checks with a timestamp window take
``now`` (epoch seconds).  Every comparison of a secret-derived value goes
through ``hmac.compare_digest``; tokens are compared as SHA-256 digests so
that not even their length leaks through timing.

| provider       | what is checked                                                   |
|----------------|-------------------------------------------------------------------|
| GitHub         | ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``     |
| GitLab         | ``X-Gitlab-Token``; Standard Webhooks signature when present        |
| Jenkins        | ``Authorization: Bearer <token>`` or ``X-Jenkins-Token`` (no query) |
| Alertmanager   | ``Authorization: Bearer`` or ``Basic``; payload ``version`` "4"     |
| PagerDuty      | ``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]``, any secret       |
| generic        | Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,          |
|                | ``webhook-signature: v1,<base64 HMAC(key, "id.timestamp.body")>``   |
| generic legacy | ``X-Signature: sha256=<hex HMAC(secret, "<X-Timestamp>.<body>")>``  |
|                | (only with ``legacy_signature: true``: its ``X-Request-Id`` is not  |
|                | signed, so only the timestamp and body identify a delivery)         |

GitLab's signing secret and generic hooks share one Standard Webhooks check
(``standard_webhooks``); what a delivery is deduplicated by is chosen in
``providers`` from what the check covers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OK",
    "TIMESTAMP_TOLERANCE_S",
    "Verdict",
    "alertmanager_auth",
    "alertmanager_payload",
    "github",
    "gitlab",
    "hmac_sha256_hex",
    "jenkins",
    "legacy_generic",
    "pagerduty",
    "reject",
    "standard_webhooks",
    "standard_webhooks_key",
    "token_matches",
]

TIMESTAMP_TOLERANCE_S = 300.0
"""How far a signed timestamp may be from our clock, either way (5 minutes)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a check: ``ok``, or ``reason`` (one line, safe to log)."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


OK = Verdict(True)


def reject(reason: str) -> Verdict:
    return Verdict(False, reason)


# --- primitives --------------------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def hmac_sha256_hex(key: str | bytes, message: bytes) -> str:
    return hmac.new(_b(key), message, hashlib.sha256).hexdigest()


def _hex_equal(expected_hex: str, presented_hex: str) -> bool:
    return hmac.compare_digest(expected_hex.encode("ascii"), presented_hex.lower().encode("ascii"))


def token_matches(expected: str, presented: str) -> bool:
    """Constant-time token comparison (digests, so the length does not leak)."""
    a = hashlib.sha256(_b(expected)).digest()
    b = hashlib.sha256(_b(presented)).digest()
    return hmac.compare_digest(a, b)


def _window(timestamp: str | None, now: float, tolerance: float, header: str) -> Verdict:
    if timestamp is None or not timestamp.strip():
        return reject(f"missing {header} header")
    text = timestamp.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return reject(f"malformed {header} (expected epoch seconds)")
    if abs(now - int(text)) > tolerance:
        return reject(f"{header} outside the {tolerance / 60:g}-minute window")
    return OK


def _sha256_prefixed(header: str, value: str | None) -> str | Verdict:
    """The hex digest of a ``sha256=<hex>`` header, or why it is unusable."""
    if value is None or not value.strip():
        return reject(f"missing {header} header")
    scheme, sep, digest = value.strip().partition("=")
    if not sep or scheme.lower() != "sha256" or not _HEX64.fullmatch(digest):
        return reject(f"malformed {header} (expected sha256=<64 hex digits>)")
    return digest


# --- GitHub ------------------------------------------------------------------------


def github(secret: str, body: bytes, signature: str | None) -> Verdict:
    """``X-Hub-Signature-256``: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    digest = _sha256_prefixed("X-Hub-Signature-256", signature)
    if isinstance(digest, Verdict):
        return digest
    if not _hex_equal(hmac_sha256_hex(secret, body), digest):
        return reject("X-Hub-Signature-256 does not match the body")
    return OK


# --- GitLab and Standard Webhooks ----------------------------------------------------


def standard_webhooks_key(secret: str, *, plain_is_raw: bool = False) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_<base64>``).

    Without the ``whsec_`` prefix the secret is base64 too (GitLab shows it
    that way), or, with ``plain_is_raw``, its UTF-8 bytes are the key (a
    generic hook's sender may sign with any string).  Raises ``ValueError``
    (without the secret in the message) when base64 is expected and absent."""
    text = secret.strip()
    if plain_is_raw and not text.startswith("whsec_"):
        return _b(text)
    text = text.removeprefix("whsec_")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signing secret is not whsec_<base64>") from None
    if not key:
        raise ValueError("signing secret is empty")
    return key


def standard_webhooks(
    key: bytes,
    body: bytes,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float,
    tolerance: float = TIMESTAMP_TOLERANCE_S,
) -> Verdict:
    """``webhook-signature: v1,<base64>`` (several, space-separated, allowed):
    base64 HMAC-SHA256 of ``{webhook-id}.{webhook-timestamp}.{body}``."""
    if msg_id is None or not msg_id.strip():
        return reject("missing webhook-id header")
    if signature is None or not signature.strip():
        return reject("missing webhook-signature header")
    window = _window(timestamp, now, tolerance, "webhook-timestamp")
    if not window:
        return window
    assert timestamp is not None
    signed = _b(msg_id.strip()) + b"." + _b(timestamp.strip()) + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    matched = False
    seen_v1 = False
    for entry in signature.split()[:16]:
        version, sep, value = entry.partition(",")
        if not sep or version != "v1":
            continue  # other schemes (v1a asymmetric) are not ours to check
        seen_v1 = True
        matched |= hmac.compare_digest(expected, _b(value))
    if not seen_v1:
        return reject("malformed webhook-signature (expected v1,<base64>)")
    if not matched:
        return reject("webhook-signature does not match the body")
    return OK


def gitlab(
    token: str | None,
    signing_key: bytes | None,
    body: bytes,
    *,
    gitlab_token: str | None,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    now: float,
) -> Verdict:
    """GitLab: the ``X-Gitlab-Token`` when a token is configured, and the
    Standard Webhooks signature when the delivery carries one and a signing
    secret is configured.  With only a signing secret configured, the
    signature is required."""
    if token is None and signing_key is None:
        return reject("no GitLab token or signing secret configured")
    if token is not None:
        if gitlab_token is None:
            return reject("missing X-Gitlab-Token header")
        if not token_matches(token, gitlab_token):
            return reject("X-Gitlab-Token does not match")
    if signing_key is not None and (signature is not None or token is None):
        return standard_webhooks(signing_key, body, msg_id, timestamp, signature, now=now)
    return OK


# --- Jenkins and Alertmanager (header credentials) -------------------------------------


def bearer(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer ...`` header, or None."""
    if authorization is None:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest.strip() else None


def _basic(authorization: str | None) -> tuple[str, str] | None:
    if authorization is None:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not rest.strip():
        return None
    try:
        decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def jenkins(token: str, *, authorization: str | None, jenkins_token: str | None) -> Verdict:
    """A token in ``Authorization: Bearer`` or ``X-Jenkins-Token``.  A token
    only in the query string is not looked at (it ends up in access logs)."""
    presented = bearer(authorization)
    if presented is None:
        presented = jenkins_token.strip() if jenkins_token else None
    if not presented:
        return reject("missing token (Authorization: Bearer or X-Jenkins-Token)")
    if not token_matches(token, presented):
        return reject("token does not match")
    return OK


def alertmanager_auth(
    bearer_token: str | None, basic: tuple[str, str] | None, authorization: str | None
) -> Verdict:
    """``Authorization`` against a configured bearer token and/or basic
    credentials; either configured method passes."""
    if bearer_token is None and basic is None:
        return reject("no credentials configured")
    if authorization is None or not authorization.strip():
        return reject("missing Authorization header")
    ok = False
    token = bearer(authorization)
    if bearer_token is not None and token is not None:
        ok |= token_matches(bearer_token, token)
    creds = _basic(authorization)
    if basic is not None and creds is not None:
        user_ok = token_matches(basic[0], creds[0])
        pass_ok = token_matches(basic[1], creds[1])
        ok |= user_ok and pass_ok
    if token is None and creds is None:
        return reject("malformed Authorization header (expected Bearer or Basic)")
    if not ok:
        return reject("Authorization does not match")
    return OK


def alertmanager_payload(payload: Any) -> Verdict:
    """Alertmanager's webhook payload format: ``version`` "4" only, with a
    ``status`` of firing or resolved and a list of ``alerts``."""
    if not isinstance(payload, dict):
        return reject("payload is not a JSON object")
    if payload.get("version") != "4":
        return reject('unsupported Alertmanager payload version (need "4")')
    if payload.get("status") not in ("firing", "resolved"):
        return reject("status must be firing or resolved")
    if not isinstance(payload.get("alerts"), list):
        return reject("alerts must be a list")
    return OK


# --- PagerDuty -------------------------------------------------------------------------


def _pagerduty_values(header: str) -> list[str]:
    values = []
    for part in header.split(",")[:16]:
        scheme, sep, value = part.strip().partition("=")
        if sep and scheme == "v1" and _HEX64.fullmatch(value):
            values.append(value)
    return values


def pagerduty(secrets: Sequence[str], body: bytes, signature: str | None) -> Verdict:
    """``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]``: any configured secret
    against any presented value may match (secret rotation)."""
    if not secrets:
        return reject("no PagerDuty secret configured")
    if signature is None or not signature.strip():
        return reject("missing X-PagerDuty-Signature header")
    values = _pagerduty_values(signature)
    if not values:
        return reject("malformed X-PagerDuty-Signature (expected v1=<64 hex digits>)")
    ok = False
    for secret in secrets:
        expected = hmac_sha256_hex(secret, body)
        for value in values:
            ok |= _hex_equal(expected, value)
    if not ok:
        return reject("X-PagerDuty-Signature does not match the body")
    return OK


# --- generic ---------------------------------------------------------------------------


def legacy_generic(
    secret: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: float,
    tolerance: float = TIMESTAMP_TOLERANCE_S,
) -> Verdict:
    """``X-Signature: sha256=<hex>`` of ``<X-Timestamp>.<body>``; the
    timestamp (epoch seconds) must be within ``tolerance`` of ``now``.

    The form generic hooks used before Standard Webhooks, kept for senders
    that cannot change (``legacy_signature: true``)."""
    digest = _sha256_prefixed("X-Signature", signature)
    if isinstance(digest, Verdict):
        return digest
    window = _window(timestamp, now, tolerance, "X-Timestamp")
    if not window:
        return window
    assert timestamp is not None
    expected = hmac_sha256_hex(secret, _b(timestamp.strip()) + b"." + body)
    if not _hex_equal(expected, digest):
        return reject("X-Signature does not match the body")
    return OK
