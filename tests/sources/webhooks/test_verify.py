"""Webhook signature checks: tables of cases, no sockets (masterchief.sources.webhooks.verify)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest

from masterchief.sources.webhooks import verify
from masterchief.sources.webhooks.verify import Verdict

NOW = 1_700_000_000.0
BODY = b'{"ref": "refs/heads/main", "message": "fix\\r\\nQUIT :bye"}'


def hexmac(secret: str | bytes, data: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def b64mac(key: bytes, data: bytes) -> str:
    return base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode()


# A case: (name, check, expected reason substring or None for OK, strings that
# must never appear in the reason).
Case = tuple[str, Callable[[], Verdict], str | None]


def _assert_case(check: Callable[[], Verdict], want: str | None, secrets: tuple[str, ...]) -> None:
    verdict = check()
    if want is None:
        assert verdict.ok, verdict.reason
        assert verdict.reason == ""
        return
    assert not verdict.ok
    assert want in verdict.reason
    assert "\n" not in verdict.reason and "\r" not in verdict.reason
    for s in secrets:
        assert s not in verdict.reason


# --- GitHub --------------------------------------------------------------------------

GH_SECRET = "It's a Secret to Everybody"
GH_VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_published_vector() -> None:
    assert verify.github(GH_SECRET, b"Hello, World!", GH_VECTOR) == verify.OK
    assert verify.hmac_sha256_hex(GH_SECRET, b"Hello, World!") == GH_VECTOR.removeprefix("sha256=")


GOOD_GH = "sha256=" + hexmac("s3cret", BODY)

GITHUB_CASES: list[tuple[str, str, bytes, str | None, str | None]] = [
    # name, secret, body, header, expected reason (None = ok)
    ("valid", "s3cret", BODY, GOOD_GH, None),
    ("upper-case hex", "s3cret", BODY, "sha256=" + hexmac("s3cret", BODY).upper(), None),
    ("surrounding spaces", "s3cret", BODY, f"  {GOOD_GH} ", None),
    ("missing", "s3cret", BODY, None, "missing X-Hub-Signature-256"),
    ("empty", "s3cret", BODY, "", "missing X-Hub-Signature-256"),
    ("sha1 scheme", "s3cret", BODY, "sha1=" + hexmac("s3cret", BODY)[:40], "malformed"),
    ("no scheme", "s3cret", BODY, hexmac("s3cret", BODY), "malformed"),
    ("short digest", "s3cret", BODY, GOOD_GH[:-2], "malformed"),
    ("non-hex digest", "s3cret", BODY, "sha256=" + "z" * 64, "malformed"),
    ("non-ascii", "s3cret", BODY, "sha256=" + "é" * 64, "malformed"),
    ("huge header", "s3cret", BODY, "sha256=" + "a" * 8000, "malformed"),
    ("wrong secret", "other", BODY, GOOD_GH, "does not match"),
    ("body changed", "s3cret", BODY + b" ", GOOD_GH, "does not match"),
    ("empty body", "s3cret", b"", GOOD_GH, "does not match"),
]


@pytest.mark.parametrize(("name", "secret", "body", "header", "want"), GITHUB_CASES)
def test_github(name: str, secret: str, body: bytes, header: str | None, want: str | None) -> None:
    _assert_case(lambda: verify.github(secret, body, header), want, (secret, hexmac(secret, body)))


# --- Standard Webhooks (GitLab) -----------------------------------------------------

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_KEY = verify.standard_webhooks_key(SW_SECRET)
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TS = "1614265330"
SW_BODY = b'{"test": 2432232314}'
SW_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="  # the spec's published example


def _sw(ts: str = SW_TS, body: bytes = SW_BODY, msg_id: str = SW_ID) -> str:
    return "v1," + b64mac(SW_KEY, f"{msg_id}.{ts}.".encode() + body)


SW_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("published example", {}, None),
    ("several signatures, one valid", {"signature": f"v1,bm9wZQ== v1a,abc {SW_SIG}"}, None),
    ("rotated: first valid", {"signature": f"{SW_SIG} v1,bm9wZQ=="}, None),
    ("4m59s late", {"now": 1614265330 + 299}, None),
    ("4m59s early", {"now": 1614265330 - 299}, None),
    ("6 minutes late", {"now": 1614265330 + 360}, "outside the 5-minute window"),
    ("6 minutes early", {"now": 1614265330 - 360}, "outside the 5-minute window"),
    ("missing id", {"msg_id": None}, "missing webhook-id"),
    ("missing timestamp", {"timestamp": None}, "missing webhook-timestamp"),
    ("non-numeric timestamp", {"timestamp": "yesterday"}, "malformed webhook-timestamp"),
    ("missing signature", {"signature": None}, "missing webhook-signature"),
    ("only other schemes", {"signature": "v1a,abc v2,def"}, "malformed webhook-signature"),
    ("wrong signature", {"signature": "v1,bm9wZQ=="}, "does not match"),
    ("id changed", {"msg_id": "msg_other"}, "does not match"),
    ("body changed", {"body": SW_BODY + b" "}, "does not match"),
]


@pytest.mark.parametrize(("name", "over", "want"), SW_CASES)
def test_standard_webhooks(name: str, over: dict[str, Any], want: str | None) -> None:
    args: dict[str, Any] = {
        "body": SW_BODY,
        "msg_id": SW_ID,
        "timestamp": SW_TS,
        "signature": SW_SIG,
        "now": 1614265330,
    }
    args.update(over)
    _assert_case(
        lambda: verify.standard_webhooks(
            SW_KEY,
            args["body"],
            args["msg_id"],
            args["timestamp"],
            args["signature"],
            now=args["now"],
        ),
        want,
        (SW_SECRET, SW_SIG.removeprefix("v1,")),
    )


@pytest.mark.parametrize("bad", ["whsec_not base64!", "whsec_", "%%%"])
def test_standard_webhooks_key_rejects_bad_secrets(bad: str) -> None:
    with pytest.raises(ValueError) as err:
        verify.standard_webhooks_key(bad)
    assert bad not in str(err.value)


def test_standard_webhooks_key_accepts_plain_base64() -> None:
    assert verify.standard_webhooks_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == SW_KEY


def test_standard_webhooks_key_for_any_string_when_plain_is_raw() -> None:
    # a generic hook: whsec_ is still base64, anything else is its own bytes
    assert verify.standard_webhooks_key(SW_SECRET, plain_is_raw=True) == SW_KEY
    assert verify.standard_webhooks_key("any string!", plain_is_raw=True) == b"any string!"
    with pytest.raises(ValueError, match="whsec_"):
        verify.standard_webhooks_key("whsec_not base64!", plain_is_raw=True)


GITLAB_CASES: list[tuple[str, str | None, bytes | None, dict[str, Any], str | None]] = [
    # name, token, signing key, delivery, want
    ("token ok", "gl-tok", None, {"gitlab_token": "gl-tok"}, None),
    ("token wrong", "gl-tok", None, {"gitlab_token": "gl-to"}, "X-Gitlab-Token does not match"),
    ("token missing", "gl-tok", None, {}, "missing X-Gitlab-Token"),
    ("token ok, unsigned, key set", "gl-tok", SW_KEY, {"gitlab_token": "gl-tok"}, None),
    (
        "token ok, signature present and valid",
        "gl-tok",
        SW_KEY,
        {"gitlab_token": "gl-tok", "msg_id": SW_ID, "timestamp": SW_TS, "signature": _sw()},
        None,
    ),
    (
        "token ok, signature present but wrong",
        "gl-tok",
        SW_KEY,
        {"gitlab_token": "gl-tok", "msg_id": SW_ID, "timestamp": SW_TS, "signature": "v1,AAAA"},
        "webhook-signature does not match",
    ),
    (
        "signature only: valid",
        None,
        SW_KEY,
        {"msg_id": SW_ID, "timestamp": SW_TS, "signature": _sw()},
        None,
    ),
    ("signature only: absent", None, SW_KEY, {}, "missing webhook-id"),
    ("nothing configured", None, None, {"gitlab_token": "x"}, "no GitLab token"),
]


@pytest.mark.parametrize(("name", "token", "key", "delivery", "want"), GITLAB_CASES)
def test_gitlab(
    name: str, token: str | None, key: bytes | None, delivery: dict[str, Any], want: str | None
) -> None:
    args: dict[str, Any] = {"gitlab_token": None, "msg_id": None, "timestamp": None}
    args["signature"] = None
    args.update(delivery)
    _assert_case(
        lambda: verify.gitlab(token, key, SW_BODY, now=1614265330 + 5, **args),
        want,
        ("gl-tok",),
    )


# --- Jenkins -------------------------------------------------------------------------

JENKINS_CASES: list[tuple[str, str | None, str | None, str | None]] = [
    # name, Authorization, X-Jenkins-Token, want
    ("bearer", "Bearer jk-token", None, None),
    ("bearer, lower-case scheme", "bearer jk-token", None, None),
    ("x-jenkins-token", None, "jk-token", None),
    ("bad bearer, good header", "Bearer nope", "jk-token", "does not match"),
    ("basic is not a token", "Basic amstdG9rZW4=", None, "missing token"),
    ("wrong bearer", "Bearer jk-tokeN", None, "does not match"),
    ("wrong header", None, "jk-toke", "does not match"),
    ("prefix of the token", None, "jk", "does not match"),
    ("nothing", None, None, "missing token"),
    ("empty bearer", "Bearer ", None, "missing token"),
]


@pytest.mark.parametrize(("name", "auth", "header", "want"), JENKINS_CASES)
def test_jenkins(name: str, auth: str | None, header: str | None, want: str | None) -> None:
    _assert_case(
        lambda: verify.jenkins("jk-token", authorization=auth, jenkins_token=header),
        want,
        ("jk-token",),
    )


# --- Alertmanager --------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


AM_CASES: list[tuple[str, str | None, tuple[str, str] | None, str | None, str | None]] = [
    # name, bearer configured, basic configured, Authorization, want
    ("bearer ok", "am-tok", None, "Bearer am-tok", None),
    ("bearer wrong", "am-tok", None, "Bearer am-to", "does not match"),
    ("bearer missing", "am-tok", None, None, "missing Authorization"),
    ("basic ok", None, ("am", "pw:with:colons"), basic("am", "pw:with:colons"), None),
    ("basic wrong password", None, ("am", "pw"), basic("am", "pq"), "does not match"),
    ("basic wrong user", None, ("am", "pw"), basic("ma", "pw"), "does not match"),
    ("basic not base64", None, ("am", "pw"), "Basic !!!", "malformed Authorization"),
    (
        "basic without colon",
        None,
        ("am", "pw"),
        "Basic " + base64.b64encode(b"ampw").decode(),
        "malformed Authorization",
    ),
    ("both configured, basic used", "am-tok", ("am", "pw"), basic("am", "pw"), None),
    ("both configured, bearer used", "am-tok", ("am", "pw"), "Bearer am-tok", None),
    ("bearer given, only basic configured", None, ("am", "pw"), "Bearer pw", "does not match"),
    ("unknown scheme", "am-tok", None, "Digest am-tok", "malformed Authorization"),
]


@pytest.mark.parametrize(("name", "bearer", "creds", "auth", "want"), AM_CASES)
def test_alertmanager_auth(
    name: str,
    bearer: str | None,
    creds: tuple[str, str] | None,
    auth: str | None,
    want: str | None,
) -> None:
    _assert_case(
        lambda: verify.alertmanager_auth(bearer, creds, auth), want, ("am-tok", "pw:with:colons")
    )


AM_PAYLOADS: list[tuple[str, Any, str | None]] = [
    ("v4 firing", {"version": "4", "status": "firing", "alerts": []}, None),
    ("v4 resolved", {"version": "4", "status": "resolved", "alerts": [{}]}, None),
    ("v3", {"version": "3", "status": "firing", "alerts": []}, "version"),
    ("v4 as a number", {"version": 4, "status": "firing", "alerts": []}, "version"),
    ("no version", {"status": "firing", "alerts": []}, "version"),
    ("odd status", {"version": "4", "status": "pending", "alerts": []}, "status"),
    ("alerts not a list", {"version": "4", "status": "firing", "alerts": {}}, "alerts"),
    ("not an object", ["version", "4"], "not a JSON object"),
]


@pytest.mark.parametrize(("name", "payload", "want"), AM_PAYLOADS)
def test_alertmanager_payload(name: str, payload: Any, want: str | None) -> None:
    _assert_case(lambda: verify.alertmanager_payload(payload), want, ())


# --- PagerDuty -----------------------------------------------------------------------

PD_OLD, PD_NEW = "pd-old-secret", "pd-new-secret"

PD_CASES: list[tuple[str, list[str], str | None, str | None]] = [
    ("one secret, one value", [PD_OLD], f"v1={hexmac(PD_OLD, BODY)}", None),
    (
        "rotation: two values, second matches",
        [PD_OLD],
        f"v1={hexmac(PD_NEW, BODY)},v1={hexmac(PD_OLD, BODY)}",
        None,
    ),
    ("rotation: two secrets, second matches", [PD_OLD, PD_NEW], f"v1={hexmac(PD_NEW, BODY)}", None),
    ("spaces after commas", [PD_OLD], f"v1={'0' * 64}, v1={hexmac(PD_OLD, BODY)}", None),
    ("no match", [PD_OLD], f"v1={hexmac(PD_NEW, BODY)}", "does not match"),
    ("missing", [PD_OLD], None, "missing X-PagerDuty-Signature"),
    ("other scheme only", [PD_OLD], f"v2={hexmac(PD_OLD, BODY)}", "malformed"),
    ("garbage", [PD_OLD], "v1=xyz", "malformed"),
    ("no secret configured", [], f"v1={hexmac(PD_OLD, BODY)}", "no PagerDuty secret"),
]


@pytest.mark.parametrize(("name", "secrets", "header", "want"), PD_CASES)
def test_pagerduty(name: str, secrets: list[str], header: str | None, want: str | None) -> None:
    _assert_case(
        lambda: verify.pagerduty(secrets, BODY, header),
        want,
        (PD_OLD, PD_NEW, hexmac(PD_OLD, BODY)),
    )


# --- generic -------------------------------------------------------------------------

TS = str(int(NOW))


def gsig(ts: str = TS, body: bytes = BODY, secret: str = "gen-secret") -> str:
    return "sha256=" + hexmac(secret, ts.encode() + b"." + body)


GENERIC_CASES: list[tuple[str, str | None, str | None, float, str | None]] = [
    # name, X-Signature, X-Timestamp, now, want
    ("valid", gsig(), TS, NOW, None),
    ("4 minutes old", gsig(), TS, NOW + 240, None),
    ("4 minutes ahead", gsig(), TS, NOW - 240, None),
    ("6 minutes old (replay)", gsig(), TS, NOW + 360, "outside the 5-minute window"),
    ("6 minutes ahead", gsig(), TS, NOW - 360, "outside the 5-minute window"),
    ("timestamp swapped", gsig(), str(int(NOW) + 1), NOW, "does not match"),
    ("signed without timestamp", "sha256=" + hexmac("gen-secret", BODY), TS, NOW, "not match"),
    ("missing timestamp", gsig(), None, NOW, "missing X-Timestamp"),
    ("float timestamp", gsig(), f"{NOW}", NOW, "malformed X-Timestamp"),
    ("negative timestamp", gsig(), "-5", NOW, "malformed X-Timestamp"),
    ("missing signature", None, TS, NOW, "missing X-Signature"),
    ("wrong secret", gsig(secret="other"), TS, NOW, "does not match"),
    ("sha1", "sha1=" + "a" * 40, TS, NOW, "malformed X-Signature"),
]


@pytest.mark.parametrize(("name", "sig", "ts", "now", "want"), GENERIC_CASES)
def test_legacy_generic(
    name: str, sig: str | None, ts: str | None, now: float, want: str | None
) -> None:
    _assert_case(
        lambda: verify.legacy_generic("gen-secret", BODY, sig, ts, now=now),
        want,
        ("gen-secret", gsig().removeprefix("sha256=")),
    )


def test_token_matches_is_exact() -> None:
    assert verify.token_matches("abc", "abc")
    for other in ("abd", "ab", "abcd", "ABC", ""):
        assert not verify.token_matches("abc", other)


def test_verdict_truthiness() -> None:
    assert verify.OK and verify.OK.ok
    assert not verify.reject("x")
