"""Webhook providers: from a verified request to a delivery record, without I/O.

How this works
--------------
``build_providers(config)`` turns ``webhooks:`` config into a table of
``Provider`` entries keyed by route name (``github``, ..., ``generic/release``).
A provider with no secret is left out of the table (its endpoint answers
404); one with ``insecure: true`` and no secret is in it with a check that
always passes (the server warns about it at every start).  An empty or blank
secret counts as none (config validation refuses one already; this is the
second line of defence: an empty HMAC key is a key anyone has).

``intake(provider, headers, body, now)`` is the whole per-request pipeline
after the size limit, in this order, each step only after the previous one
passed:

1. verification against the raw bytes (401),
2. UTF-8 and JSON parsing (400),
3. provider-specific validation, e.g. Alertmanager ``version`` "4" (400),
4. the event name (``github/<X-GitHub-Event>`` ...), printable and short (400),
5. the dedup key: what the signature covers, so that nobody without the
   secret can make a captured delivery look new.  Standard Webhooks (generic,
   GitLab with ``signing_secret``): the signed ``webhook-id``.  GitHub and
   PagerDuty sign the body alone, and their delivery-id headers are not
   signed: a hash of the body (their payloads carry the event's own id and
   times, so two real deliveries never share a body).  Legacy generic: a
   hash of ``X-Timestamp`` and the body (``X-Request-Id`` is not signed).
   Token providers (GitLab token, Jenkins): their delivery-id header, since
   whoever holds the token can send anything anyway.  Alertmanager: a hash
   of groupKey and each alert's fingerprint, status and startsAt — so a
   notification Alertmanager repeats unchanged after ``repeat_interval`` is
   a duplicate, while a resolve or a re-fire is new,
6. the headers worth keeping (they become Event tags).

It returns an ``Accepted`` (what the server stores and dispatches) or a
``Rejection`` (status, outcome counter name, one-line reason).

Event keys: ``github/<X-GitHub-Event>``, ``gitlab/<object_kind>`` (system
hooks: ``event_name``), ``jenkins/<build.phase>`` (the Notification
plugin's STARTED / COMPLETED / FINALIZED; ``jenkins/build`` when the payload
has no phase), ``alertmanager/firing|resolved``,
``pagerduty/<event.event_type>`` (V3 webhooks), ``generic/<name>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from masterchief.config.schema import WebhooksConfig
from masterchief.config.secrets import Secret

from . import verify
from .verify import OK, Verdict, reject

__all__ = [
    "PROVIDERS",
    "Accepted",
    "Headers",
    "Provider",
    "ProviderConfigError",
    "Rejection",
    "build_providers",
    "intake",
]

Headers = Mapping[str, str]
"""Request headers; lookups must be case-insensitive (aiohttp's CIMultiDictProxy)."""

PROVIDERS = ("github", "gitlab", "jenkins", "alertmanager", "pagerduty")
"""The fixed provider routes (``/webhooks/<name>``); generic ones are ``generic/<name>``."""

_EVENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_HEADER_ID = re.compile(r"[\x21-\x7e]{1,200}")
_MAX_HEADER_KEPT = 256


@dataclass(frozen=True, slots=True)
class Rejection:
    """A delivery we refuse: HTTP status, counter name, one-line reason."""

    status: int
    outcome: str
    reason: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A verified, parsed delivery, ready to be stored and dispatched."""

    provider: str  # route name: github ... or generic/<name>
    source: str  # Event.source: github ... or generic
    event_key: str  # Event.key: github/push ...
    dedup_key: str
    body: str  # the JSON text as received
    payload: Any
    headers: Mapping[str, str]  # kept headers, lower-case names


Check = Callable[[Headers, bytes, float], Verdict]
EventName = Callable[[Headers, Any], "str | Rejection"]


@dataclass(frozen=True, slots=True)
class Provider:
    """One webhook endpoint: how to verify, name and deduplicate its deliveries."""

    name: str
    source: str
    check: Check
    event_name: EventName
    id_headers: tuple[str, ...] = ()
    keep_headers: tuple[str, ...] = ()
    validate: Callable[[Any], Verdict] | None = None
    dedup_payload: Callable[[Any], str] | None = None
    hash_headers: tuple[str, ...] = ()  # hashed with the body when there is no id header
    insecure: bool = False
    # (header, config key): a signature header a delivery may carry that we
    # have no key to check (GitLab's webhook-signature without signing_secret).
    # The server says so once, so nobody believes it is verified.
    unchecked: tuple[tuple[str, str], ...] = ()


class ProviderConfigError(ValueError):
    """A webhook config that cannot work; ``key`` is the dotted config key
    at fault.  The message never holds the secret."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def _bad(reason: str) -> Rejection:
    return Rejection(400, "bad_request", reason)


def _open(_h: Headers, _b: bytes, _now: float) -> Verdict:
    return OK


def _reveal(secret: Secret | None) -> str | None:
    """The secret's value, or None when there is none or it is blank."""
    value = secret.reveal() if secret is not None else None
    return value if value is not None and value.strip() else None


# --- event names -------------------------------------------------------------------


def _github_event(headers: Headers, _payload: Any) -> str | Rejection:
    name = headers.get("X-GitHub-Event")
    if not name:
        return _bad("missing X-GitHub-Event header")
    return name


def _dig(payload: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(part)
    return payload


def _gitlab_event(_headers: Headers, payload: Any) -> str | Rejection:
    name = _dig(payload, "object_kind") or _dig(payload, "event_name")
    if not isinstance(name, str) or not name:
        return _bad("payload has no object_kind")
    return name


def _jenkins_event(_headers: Headers, payload: Any) -> str | Rejection:
    phase = _dig(payload, "build", "phase")
    return phase if isinstance(phase, str) and phase else "build"


def _alertmanager_event(_headers: Headers, payload: Any) -> str | Rejection:
    return str(payload["status"])  # validated: firing | resolved


def _pagerduty_event(_headers: Headers, payload: Any) -> str | Rejection:
    name = _dig(payload, "event", "event_type")
    if not isinstance(name, str) or not name:
        return _bad("payload has no event.event_type (V3 webhook expected)")
    return name


def _fixed(name: str) -> EventName:
    def event_name(_headers: Headers, _payload: Any) -> str | Rejection:
        return name

    return event_name


def _object(payload: Any) -> Verdict:
    return OK if isinstance(payload, dict) else reject("payload is not a JSON object")


def _alertmanager_dedup(payload: Any) -> str:
    """groupKey plus each alert's fingerprint, status and startsAt (sorted, so
    the order Alertmanager lists them in does not matter)."""
    parts = []
    for alert in payload.get("alerts", []):
        if isinstance(alert, dict):
            parts.append(
                "\x1f".join(str(alert.get(k, "")) for k in ("fingerprint", "status", "startsAt"))
            )
    text = "\x1e".join([str(payload.get("groupKey", "")), *sorted(parts)])
    return "am-sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- the table -----------------------------------------------------------------------


def build_providers(config: WebhooksConfig) -> dict[str, Provider]:
    """The enabled providers, keyed by route name.  Raises
    ``ProviderConfigError`` for a config that cannot work (a ``whsec_``
    secret that is not base64)."""
    table: dict[str, Provider] = {}

    gh = config.github
    secret = _reveal(gh.secret) if gh is not None else None
    if gh is not None and (secret is not None or gh.insecure):
        table["github"] = Provider(
            name="github",
            source="github",
            check=(
                (lambda h, b, _now: verify.github(secret, b, h.get("X-Hub-Signature-256")))
                if secret is not None
                else _open
            ),
            event_name=_github_event,
            # X-GitHub-Delivery is not signed: a replay with a new one would
            # pass as new.  The body is what the signature covers.
            keep_headers=(
                "X-GitHub-Event",
                "X-GitHub-Delivery",
                "X-GitHub-Hook-ID",
                "X-GitHub-Hook-Installation-Target-Type",
                "X-GitHub-Hook-Installation-Target-ID",
            ),
            validate=_object,
            insecure=secret is None,
        )

    gl = config.gitlab
    token = _reveal(gl.token) if gl is not None else None
    signing = _reveal(gl.signing_secret) if gl is not None else None
    if gl is not None and (token is not None or signing is not None or gl.insecure):
        try:
            key = verify.standard_webhooks_key(signing) if signing is not None else None
        except ValueError as exc:
            raise ProviderConfigError(str(exc), "webhooks.gitlab.signing_secret") from None
        secured = token is not None or key is not None
        table["gitlab"] = Provider(
            name="gitlab",
            source="gitlab",
            check=(
                (
                    lambda h, b, now: verify.gitlab(
                        token,
                        key,
                        b,
                        gitlab_token=h.get("X-Gitlab-Token"),
                        msg_id=h.get("webhook-id"),
                        timestamp=h.get("webhook-timestamp"),
                        signature=h.get("webhook-signature"),
                        now=now,
                    )
                )
                if secured
                else _open
            ),
            event_name=_gitlab_event,
            # the signed webhook-id first when we check signatures
            id_headers=(
                ("webhook-id", "Idempotency-Key", "X-Gitlab-Event-UUID")
                if key is not None
                else ("Idempotency-Key", "X-Gitlab-Event-UUID", "webhook-id")
            ),
            keep_headers=(
                "X-Gitlab-Event",
                "X-Gitlab-Event-UUID",
                "X-Gitlab-Webhook-UUID",
                "X-Gitlab-Instance",
                "Idempotency-Key",
                "webhook-id",
            ),
            validate=_object,
            insecure=not secured,
            unchecked=(("webhook-signature", "signing_secret"),) if key is None else (),
        )

    jk = config.jenkins
    jtoken = _reveal(jk.token) if jk is not None else None
    if jk is not None and (jtoken is not None or jk.insecure):
        table["jenkins"] = Provider(
            name="jenkins",
            source="jenkins",
            check=(
                (
                    lambda h, _b, _now: verify.jenkins(
                        jtoken,
                        authorization=h.get("Authorization"),
                        jenkins_token=h.get("X-Jenkins-Token"),
                    )
                )
                if jtoken is not None
                else _open
            ),
            event_name=_jenkins_event,
            id_headers=("X-Request-Id",),
            keep_headers=("X-Request-Id",),
            validate=_object,
            insecure=jtoken is None,
        )

    am = config.alertmanager
    bearer = _reveal(am.bearer_token) if am is not None else None
    creds = am.basic if am is not None else None
    password = _reveal(creds.password) if creds is not None else None
    basic = (creds.username, password) if creds is not None and password is not None else None
    if am is not None and (bearer is not None or basic is not None or am.insecure):
        secured = bearer is not None or basic is not None
        table["alertmanager"] = Provider(
            name="alertmanager",
            source="alertmanager",
            check=(
                (
                    lambda h, _b, _now: verify.alertmanager_auth(
                        bearer, basic, h.get("Authorization")
                    )
                )
                if secured
                else _open
            ),
            event_name=_alertmanager_event,
            validate=verify.alertmanager_payload,
            dedup_payload=_alertmanager_dedup,
            insecure=not secured,
        )

    pd = config.pagerduty
    secrets = [v for v in map(_reveal, pd.secrets) if v is not None] if pd is not None else []
    if pd is not None and (secrets or pd.insecure):
        table["pagerduty"] = Provider(
            name="pagerduty",
            source="pagerduty",
            check=(
                (lambda h, b, _now: verify.pagerduty(secrets, b, h.get("X-PagerDuty-Signature")))
                if secrets
                else _open
            ),
            event_name=_pagerduty_event,
            # X-Webhook-Id is not signed (like GitHub): dedup by the body
            keep_headers=("X-Webhook-Id", "X-Webhook-Subscription"),
            validate=_object,
            insecure=not secrets,
        )

    for hook in config.generic:
        hook_secret = _reveal(hook.secret)
        if hook_secret is None and not hook.insecure:
            continue
        if hook_secret is None:
            table[f"generic/{hook.name}"] = _generic_open(hook.name)
        elif hook.legacy_signature:
            table[f"generic/{hook.name}"] = _generic_legacy(hook.name, hook_secret)
        else:
            table[f"generic/{hook.name}"] = _generic(hook.name, hook_secret)
    return table


def _standard_webhooks(key: bytes) -> Check:
    """The one Standard Webhooks check over a request's headers."""

    def check(h: Headers, b: bytes, now: float) -> Verdict:
        return verify.standard_webhooks(
            key,
            b,
            h.get("webhook-id"),
            h.get("webhook-timestamp"),
            h.get("webhook-signature"),
            now=now,
        )

    return check


def _generic(name: str, secret: str) -> Provider:
    try:
        key = verify.standard_webhooks_key(secret, plain_is_raw=True)
    except ValueError as exc:
        raise ProviderConfigError(f"{exc} (generic webhook {name!r})", "webhooks.generic") from None
    return Provider(
        name=f"generic/{name}",
        source="generic",
        check=_standard_webhooks(key),
        event_name=_fixed(name),
        id_headers=("webhook-id",),  # signed, and required by the check
        keep_headers=("webhook-id", "webhook-timestamp"),
    )


def _generic_legacy(name: str, secret: str) -> Provider:
    def check(h: Headers, b: bytes, now: float) -> Verdict:
        return verify.legacy_generic(secret, b, h.get("X-Signature"), h.get("X-Timestamp"), now=now)

    return Provider(
        name=f"generic/{name}",
        source="generic",
        check=check,
        event_name=_fixed(name),
        # X-Request-Id is not signed: dedup by what is (timestamp and body),
        # so a captured delivery re-posted with a new id is a duplicate.
        hash_headers=("X-Timestamp",),
        keep_headers=("X-Request-Id", "X-Timestamp"),
    )


def _generic_open(name: str) -> Provider:
    return Provider(
        name=f"generic/{name}",
        source="generic",
        check=_open,
        event_name=_fixed(name),
        id_headers=("webhook-id", "X-Request-Id"),
        hash_headers=("X-Timestamp",),
        keep_headers=("webhook-id", "X-Request-Id", "X-Timestamp"),
        insecure=True,
    )


# --- the pipeline ----------------------------------------------------------------------


def _parse(body: bytes) -> Any | Rejection:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _bad("body is not UTF-8")
    try:
        return text, json.loads(text)
    except RecursionError:
        return _bad("JSON nested too deeply")
    except ValueError:
        return _bad("malformed JSON")


def _dedup(provider: Provider, headers: Headers, payload: Any, body: bytes) -> str:
    # Header values are stripped as the checks strip them: " msg_1" verifies
    # like "msg_1", so it must not be a different delivery.
    for name in provider.id_headers:
        value = headers.get(name, "").strip()
        if value:
            if _HEADER_ID.fullmatch(value):
                return value
            return (
                "hdr-sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
            )
    if provider.dedup_payload is not None:
        return provider.dedup_payload(payload)
    digest = hashlib.sha256()
    for name in provider.hash_headers:
        digest.update(headers.get(name, "").strip().encode("utf-8", "surrogatepass") + b"\x00")
    digest.update(body)
    return "body-sha256:" + digest.hexdigest()


def _kept(provider: Provider, headers: Headers) -> dict[str, str]:
    kept = {}
    for name in provider.keep_headers:
        value = headers.get(name)
        if value is not None:
            kept[name.lower()] = value[:_MAX_HEADER_KEPT]
    return kept


def intake(provider: Provider, headers: Headers, body: bytes, now: float) -> Accepted | Rejection:
    """Verify, parse, validate and name one delivery (see the module docstring)."""
    verdict = provider.check(headers, body, now)
    if not verdict:
        return Rejection(401, "unauthorized", verdict.reason)
    parsed = _parse(body)
    if isinstance(parsed, Rejection):
        return parsed
    text, payload = parsed
    if provider.validate is not None:
        valid = provider.validate(payload)
        if not valid:
            return _bad(valid.reason)
    name = provider.event_name(headers, payload)
    if isinstance(name, Rejection):
        return name
    if not _EVENT_NAME.fullmatch(name):
        return _bad("event name is not short printable text")
    return Accepted(
        provider=provider.name,
        source=provider.source,
        event_key=f"{provider.source}/{name}",
        dedup_key=_dedup(provider, headers, payload, body),
        body=text,
        payload=payload,
        headers=_kept(provider, headers),
    )
