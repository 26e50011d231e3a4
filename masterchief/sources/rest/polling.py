"""What one REST poll is, without I/O: limits, hashing, backoff, URL
redaction, JMESPath selection, the stored state and the outcomes.

``poller.py`` runs polls with these; tests check them with tables.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from yarl import URL

from masterchief.config.schema import RestPollConfig
from masterchief.config.secrets import MASK, REDACTOR

if TYPE_CHECKING:
    from jmespath.parser import ParsedResult

__all__ = [
    "MAX_BYTES",
    "PollFailure",
    "PollResult",
    "PollerStats",
    "RestState",
    "backoff_delay",
    "canonical_hash",
    "check_select",
    "jittered",
    "redact_url",
]

MAX_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 5
USER_AGENT = "MasterChief REST poller"
PARSE_INLINE_BYTES = 256 * 1024  # bigger bodies are parsed off the event loop
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Query parameters masked in any URL we show, besides the configured api_key one.
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "api-key",
        "api_key",
        "apikey",
        "auth",
        "client_secret",
        "key",
        "password",
        "secret",
        "sig",
        "signature",
        "token",
    }
)


# --- pure helpers -------------------------------------------------------------


def canonical_hash(value: Any) -> str:
    """SHA-256 hex of ``value`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def backoff_delay(interval_s: float, failures: int, cap: float = 10.0) -> float:
    """The delay before the next poll: ``interval_s`` while healthy, then
    ``interval_s * 2**failures`` up to ``cap * interval_s``."""
    if failures <= 0:
        return interval_s
    return min(interval_s * 2.0 ** min(failures, 32), interval_s * cap)


def jittered(delay: float, jitter: float, u: float) -> float:
    """``delay`` moved by up to ±``jitter`` (a fraction) using ``u`` in [0, 1)."""
    return delay * (1.0 + jitter * (2.0 * u - 1.0))


def redact_url(url: str | URL, params: Iterable[str] = ()) -> str:
    """``url`` fit to show: no userinfo or fragment, credential-like query values masked."""
    try:
        u = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError):
        return "<invalid url>"
    u = u.with_user(None).with_fragment(None)
    hidden = SECRET_PARAMS | {p.lower() for p in params}
    if u.query:
        masked = [(k, MASK if k.lower() in hidden else v) for k, v in u.query.items()]
        u = u.with_query(masked)
    return REDACTOR.redact(str(u))


def check_select(expression: str) -> ParsedResult:
    """Compile a JMESPath expression; ``ValueError`` with the parser's reason.
    (jmespath is imported here: only pollers with a ``select`` need it.)"""
    import jmespath
    import jmespath.exceptions

    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"invalid JMESPath expression: {exc}") from None


@dataclass(frozen=True, slots=True)
class RestState:
    """A poller's checkpoint: what it last saw, valid for ``fingerprint``."""

    fingerprint: str
    hash: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    failures: int = 0
    failing_since: float | None = None


def fingerprint(config: RestPollConfig) -> str:
    """What the stored state is valid for: the same URL and selection."""
    return hashlib.sha256(f"{config.url}\n{config.select or ''}".encode()).hexdigest()


def same_origin(a: URL, b: URL) -> bool:
    if a.host != b.host:
        return False
    if a.scheme == b.scheme:
        return a.port == b.port
    return a.scheme == "http" and b.scheme == "https" and b.port == 443


# --- outcomes ------------------------------------------------------------------


class PollFailure(Exception):
    """A failed poll.  ``reason`` is safe to show anyone; ``detail`` goes to the log."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PollResult:
    ok: bool
    status: int | None = None
    not_modified: bool = False
    changed: bool = False
    emitted: bool = False
    reason: str | None = None


@dataclass(slots=True)
class PollerStats:
    polls: int = 0
    failed: int = 0
    not_modified: int = 0
    emitted: int = 0
    token_refreshes_on_401: int = 0


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    body: bytes
    etag: str | None
    last_modified: str | None
