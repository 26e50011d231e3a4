"""The provider table and the intake pipeline without sockets
(masterchief.sources.webhooks.providers): which providers are enabled, event keys, dedup
keys, kept headers and the order of checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from masterchief.config.engine import build_config
from masterchief.config.schema import (
    AlertmanagerHook,
    BasicAuthConfig,
    GithubHook,
    GitlabHook,
    JenkinsHook,
    PagerDutyHook,
    WebhooksConfig,
)
from masterchief.config.secrets import Secret
from masterchief.sources.webhooks.providers import Accepted, Rejection, build_providers, intake

PAYLOADS = Path(__file__).parent / "payloads"
NOW = 1_700_000_000.0


def hooks(**over: Any) -> Any:
    return build_config({"webhooks": over}, project_dir=Path("/tmp")).webhooks


def sig(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def test_enabled_providers() -> None:
    table = build_providers(
        hooks(
            github={"secret": "s"},
            gitlab={"channels": ["#dev"]},  # no token: disabled
            jenkins={"insecure": True},
            alertmanager={"basic": {"username": "am", "password": "pw"}},
            pagerduty={"secrets": []},  # no secret: disabled
            generic=[{"name": "a", "secret": "x"}, {"name": "b"}],
        )
    )
    assert sorted(table) == ["alertmanager", "generic/a", "github", "jenkins"]
    assert table["jenkins"].insecure and not table["github"].insecure


def _unvalidated(**over: Any) -> WebhooksConfig:
    """Hook config built without validation (which refuses blank secrets)."""
    models: dict[str, Any] = {
        "github": GithubHook,
        "gitlab": GitlabHook,
        "jenkins": JenkinsHook,
        "alertmanager": AlertmanagerHook,
        "pagerduty": PagerDutyHook,
    }
    fields = {name: models[name].model_construct(**value) for name, value in over.items()}
    return WebhooksConfig.model_construct(**fields)


def test_blank_secrets_count_as_none_even_past_validation() -> None:
    blank, space = Secret(""), Secret(" \t")
    table = build_providers(
        _unvalidated(
            github={"secret": blank},
            gitlab={"token": space, "signing_secret": blank},
            jenkins={"token": blank},
            alertmanager={
                "bearer_token": blank,
                "basic": BasicAuthConfig.model_construct(username="am", password=blank),
            },
            pagerduty={"secrets": (blank, space)},
        )
    )
    assert table == {}
    # insecure with a blank secret: open, and flagged as such (warned about at start)
    table = build_providers(_unvalidated(github={"secret": blank, "insecure": True}))
    assert table["github"].insecure
    # one real PagerDuty secret next to a blank one: only the real one verifies
    pd = build_providers(_unvalidated(pagerduty={"secrets": (blank, Secret("pd-k"))}))
    body = b'{"event": {"event_type": "incident.triggered"}}'
    for key, ok in (("", False), ("pd-k", True)):
        got = intake(
            pd["pagerduty"],
            CIMultiDict({"X-PagerDuty-Signature": f"v1={sig(key, body)}"}),
            body,
            NOW,
        )
        assert isinstance(got, Accepted) is ok, got


def test_gitlab_without_signing_secret_lists_the_signature_as_unchecked() -> None:
    token_only = build_providers(hooks(gitlab={"token": "t"}))["gitlab"]
    assert token_only.unchecked == (("webhook-signature", "signing_secret"),)
    signing = "whsec_" + base64.b64encode(b"k" * 24).decode()
    both = build_providers(hooks(gitlab={"token": "t", "signing_secret": signing}))["gitlab"]
    assert both.unchecked == ()


def test_bad_gitlab_signing_secret_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        build_providers(hooks(gitlab={"signing_secret": "whsec_???"}))


def _one(name: str, config: dict[str, Any], headers: dict[str, str], body: bytes) -> Any:
    table = build_providers(hooks(**config))
    return intake(table[name], CIMultiDict(headers), body, NOW)


def test_checks_run_in_order_signature_before_json() -> None:
    # a bad signature on garbage is a 401, not a 400: nothing is parsed unverified
    got = _one("github", {"github": {"secret": "s"}}, {"X-GitHub-Event": "push"}, b"{not json")
    assert isinstance(got, Rejection) and got.status == 401
    body = b"{not json"
    good = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sig("s", body)}
    got = _one("github", {"github": {"secret": "s"}}, good, body)
    assert isinstance(got, Rejection) and (got.status, got.reason) == (400, "malformed JSON")


def test_alertmanager_version_checked_after_auth() -> None:
    body = json.dumps({"version": "3", "status": "firing", "alerts": []}).encode()
    config = {"alertmanager": {"bearer_token": "t"}}
    got = _one("alertmanager", config, {}, body)
    assert isinstance(got, Rejection) and got.status == 401
    got = _one("alertmanager", config, {"Authorization": "Bearer t"}, body)
    assert isinstance(got, Rejection) and got.status == 400 and "version" in got.reason


KEYS: list[tuple[str, dict[str, str], Any, str]] = [
    # provider, headers, payload, event key
    ("github", {"X-GitHub-Event": "release"}, {}, "github/release"),
    ("gitlab", {}, {"object_kind": "merge_request"}, "gitlab/merge_request"),
    ("gitlab", {}, {"event_name": "project_create"}, "gitlab/project_create"),
    ("jenkins", {}, {"build": {"phase": "FINALIZED"}}, "jenkins/FINALIZED"),
    ("jenkins", {}, {"build": {"phase": None}}, "jenkins/build"),
    ("jenkins", {}, {}, "jenkins/build"),
    ("alertmanager", {}, {"version": "4", "status": "resolved", "alerts": []},
     "alertmanager/resolved"),
    ("pagerduty", {}, {"event": {"event_type": "incident.acknowledged"}},
     "pagerduty/incident.acknowledged"),
    ("generic/release", {}, [1, 2, 3], "generic/release"),
]  # fmt: skip

OPEN = {
    "github": {"insecure": True},
    "gitlab": {"insecure": True},
    "jenkins": {"insecure": True},
    "alertmanager": {"insecure": True},
    "pagerduty": {"insecure": True},
    "generic": [{"name": "release", "insecure": True}],
}


@pytest.mark.parametrize(("name", "headers", "payload", "key"), KEYS)
def test_event_keys(name: str, headers: dict[str, str], payload: Any, key: str) -> None:
    got = _one(name, OPEN, headers, json.dumps(payload).encode())
    assert isinstance(got, Accepted), got
    assert got.event_key == key
    assert got.payload == payload


BAD_KEYS: list[tuple[str, dict[str, str], Any, str]] = [
    ("github", {"X-GitHub-Event": "push\x01"}, {}, "event name"),
    ("github", {"X-GitHub-Event": "x" * 65}, {}, "event name"),
    ("gitlab", {}, {"object_kind": "push hook"}, "event name"),
    ("gitlab", {}, {"object_kind": 5}, "object_kind"),
    ("jenkins", {}, {"build": {"phase": "../../etc"}}, "event name"),
    ("pagerduty", {}, {"event": {"event_type": ""}}, "event_type"),
    ("pagerduty", {}, {"messages": [{"event": "incident.trigger"}]}, "event_type"),
]


@pytest.mark.parametrize(("name", "headers", "payload", "reason"), BAD_KEYS)
def test_bad_event_names(name: str, headers: dict[str, str], payload: Any, reason: str) -> None:
    got = _one(name, OPEN, headers, json.dumps(payload).encode())
    assert isinstance(got, Rejection) and got.status == 400 and reason in got.reason


def test_dedup_keys() -> None:
    body = b"{}"
    by_body = "body-sha256:" + hashlib.sha256(body).hexdigest()
    # GitHub and PagerDuty sign only the body: their id headers do not count
    gh = _one("github", OPEN, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "abc-1"}, body)
    assert gh.dedup_key == by_body
    nodelivery = _one("github", OPEN, {"X-GitHub-Event": "push"}, body)
    assert nodelivery.dedup_key == by_body
    weird = _one("generic/release", OPEN, {"X-Request-Id": "a b"}, body)
    assert weird.dedup_key.startswith("hdr-sha256:")
    gl = _one(
        "gitlab",
        OPEN,
        {"Idempotency-Key": "k1", "X-Gitlab-Event-UUID": "u1"},
        b'{"object_kind": "push"}',
    )
    assert gl.dedup_key == "k1"
    gl = _one("gitlab", OPEN, {"X-Gitlab-Event-UUID": "u1"}, b'{"object_kind": "push"}')
    assert gl.dedup_key == "u1"
    pd_body = b'{"event": {"event_type": "x.y"}}'
    pd = _one("pagerduty", OPEN, {"X-Webhook-Id": "w1"}, pd_body)
    assert pd.dedup_key == "body-sha256:" + hashlib.sha256(pd_body).hexdigest()
    jk = _one("jenkins", OPEN, {"X-Request-Id": "r1"}, body)
    assert jk.dedup_key == "r1"
    # generic without X-Request-Id: the timestamp is part of what is hashed
    g1 = _one("generic/release", OPEN, {"X-Timestamp": "1"}, body)
    g2 = _one("generic/release", OPEN, {"X-Timestamp": "2"}, body)
    g1again = _one("generic/release", OPEN, {"X-Timestamp": "1"}, body)
    assert g1.dedup_key == g1again.dedup_key != g2.dedup_key


GEN_SECRET = "gen-secret-value"


def _standard(body: bytes, msg_id: str, ts: int = int(NOW)) -> dict[str, str]:
    mac = hmac.new(GEN_SECRET.encode(), f"{msg_id}.{ts}.".encode() + body, "sha256").digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


def _legacy(body: bytes, request_id: str, ts: int = int(NOW)) -> dict[str, str]:
    mac = sig(GEN_SECRET, f"{ts}.".encode() + body)
    return {"X-Timestamp": str(ts), "X-Signature": "sha256=" + mac, "X-Request-Id": request_id}


def test_a_replay_with_a_new_unsigned_id_keeps_its_dedup_key() -> None:
    """What identifies a delivery is what its signature covers: changing an
    unsigned id header does not make a captured delivery new."""
    body = b'{"version": "1.2.3"}'
    secured = {
        "github": {"secret": GEN_SECRET},
        "pagerduty": {"secrets": [GEN_SECRET]},
        "generic": [
            {"name": "std", "secret": GEN_SECRET},
            {"name": "old", "secret": GEN_SECRET, "legacy_signature": True},
        ],
    }
    gh = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sig(GEN_SECRET, body)}
    first = _one("github", secured, {**gh, "X-GitHub-Delivery": "d-1"}, body)
    again = _one("github", secured, {**gh, "X-GitHub-Delivery": "d-2"}, body)
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert first.dedup_key == again.dedup_key
    pd = {"X-PagerDuty-Signature": "v1=" + sig(GEN_SECRET, body)}
    first = _one(
        "pagerduty", secured, {**pd, "X-Webhook-Id": "w-1"}, b'{"event": {"event_type": "a.b"}}'
    )
    assert isinstance(first, Rejection)  # signed a different body: 401
    pd_body = b'{"event": {"event_type": "a.b"}}'
    pd = {"X-PagerDuty-Signature": "v1=" + sig(GEN_SECRET, pd_body)}
    first = _one("pagerduty", secured, {**pd, "X-Webhook-Id": "w-1"}, pd_body)
    again = _one("pagerduty", secured, {**pd, "X-Webhook-Id": "w-2"}, pd_body)
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert first.dedup_key == again.dedup_key
    first = _one("generic/old", secured, _legacy(body, "r-1"), body)
    again = _one("generic/old", secured, _legacy(body, "r-2"), body)
    without = _one("generic/old", secured, {**_legacy(body, "r-1"), "X-Request-Id": ""}, body)
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert isinstance(without, Accepted)
    assert first.dedup_key == again.dedup_key == without.dedup_key
    assert first.headers["x-request-id"] == "r-1"  # still kept as a tag
    # Standard Webhooks: the id is signed, so it is the dedup key, and a new
    # id under the old signature does not verify
    std = _one("generic/std", secured, _standard(body, "msg_1"), body)
    assert isinstance(std, Accepted) and std.dedup_key == "msg_1"
    # whitespace the check strips does not make it another delivery
    padded = {**_standard(body, "msg_1"), "webhook-id": " msg_1\t"}
    again = _one("generic/std", secured, padded, body)
    assert isinstance(again, Accepted) and again.dedup_key == "msg_1"
    padded = {**_legacy(body, "r-9"), "X-Timestamp": f" {int(NOW)} "}
    again = _one("generic/old", secured, padded, body)
    assert isinstance(again, Accepted) and again.dedup_key == first.dedup_key
    forged = _one("generic/std", secured, {**_standard(body, "msg_1"), "webhook-id": "msg_2"}, body)
    assert isinstance(forged, Rejection) and forged.status == 401


def test_generic_takes_the_legacy_form_only_when_enabled() -> None:
    body = b'{"version": "1.2.3"}'
    config = {
        "generic": [
            {"name": "std", "secret": GEN_SECRET},
            {"name": "old", "secret": GEN_SECRET, "legacy_signature": True},
        ]
    }
    legacy_to_std = _one("generic/std", config, _legacy(body, "r-1"), body)
    assert isinstance(legacy_to_std, Rejection) and legacy_to_std.status == 401
    assert "webhook-id" in legacy_to_std.reason
    std_to_legacy = _one("generic/old", config, _standard(body, "msg_1"), body)
    assert isinstance(std_to_legacy, Rejection) and std_to_legacy.status == 401
    assert "X-Signature" in std_to_legacy.reason
    old = _one("generic/std", config, _standard(body, "msg_1", ts=int(NOW) - 301), body)
    assert isinstance(old, Rejection) and "window" in old.reason


def test_generic_whsec_secret_is_the_base64_key_and_bad_base64_is_refused() -> None:
    key = b"k" * 24
    secret = "whsec_" + base64.b64encode(key).decode()
    body = b"{}"
    mac = hmac.new(key, f"msg_1.{int(NOW)}.".encode() + body, "sha256").digest()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(NOW)),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }
    got = _one("generic/k", {"generic": [{"name": "k", "secret": secret}]}, headers, body)
    assert isinstance(got, Accepted)
    with pytest.raises(ValueError, match="whsec_") as err:
        build_providers(hooks(generic=[{"name": "k", "secret": "whsec_!!notbase64"}]))
    assert "notbase64" not in str(err.value)


def test_alertmanager_dedup_key() -> None:
    base = json.loads((PAYLOADS / "alertmanager_firing.json").read_bytes())

    def key(payload: Any) -> str:
        got = _one("alertmanager", OPEN, {}, json.dumps(payload).encode())
        assert isinstance(got, Accepted)
        return str(got.dedup_key)

    k = key(base)
    assert k.startswith("am-sha256:")
    assert key({**base, "alerts": base["alerts"][::-1], "receiver": "x"}) == k
    assert key({**base, "groupKey": "other"}) != k
    refired = [{**base["alerts"][0], "startsAt": "2024-05-20T15:00:00Z"}, base["alerts"][1]]
    assert key({**base, "alerts": refired}) != k
    resolved = [{**a, "status": "resolved"} for a in base["alerts"]]
    assert key({**base, "status": "resolved", "alerts": resolved}) != k


def test_kept_headers_are_lower_cased_and_bounded() -> None:
    got = _one(
        "github",
        OPEN,
        {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "d" * 300,
            "X-GitHub-Hook-ID": "292430182",
            "Authorization": "Bearer nope",
        },
        b"{}",
    )
    assert isinstance(got, Accepted)
    assert got.headers["x-github-hook-id"] == "292430182"
    assert len(got.headers["x-github-delivery"]) == 256
    assert "authorization" not in got.headers
