"""Announcements: the formatters (documented payloads in, exact lines out),
the sanitising rule, hostile and malformed payloads, and the bindings that
route lines to the configured channels (through an injected recorder)."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.config.engine import build_config
from masterchief.outputs import announce
from masterchief.outputs.formatters import (
    PROVIDERS,
    Announcement,
    clean,
    format_alertmanager,
    format_generic,
    format_github,
    format_gitlab,
    format_jenkins,
    format_pagerduty,
    format_rest,
    format_rest_status,
)
from masterchief.outputs.formatters.common import duration, integer, truncate
from masterchief.outputs.targets import Target

PAYLOADS = Path(__file__).parents[1] / "sources" / "webhooks" / "payloads" / "announce"


def load(path: str) -> Any:
    return json.loads((PAYLOADS / path).read_text(encoding="utf-8"))


def texts(lines: list[Announcement]) -> list[str]:
    return [a.text for a in lines]


# --- documented payloads -> exact lines ------------------------------------------------

GH = "https://github.com/Codertocat/Hello-World"
PR_TITLE = '"Update the README with new information."'
ISSUE = f'#1 in Codertocat/Hello-World: "Spelling error in the README file" {GH}/issues/1'

DOCUMENTED = [
    # GitHub
    (
        "github",
        "push",
        "github/push.json",
        f'[github] Codertocat pushed 3 commits to master of Codertocat/Hello-World: "Fix retries in the HTTP client" {GH}/compare/6113728f27ae...b5e6f8f1a0c3',
    ),
    (
        "github",
        "push",
        "github/push-new-branch.json",
        f'[github] Codertocat pushed 1 commit to new branch master of Codertocat/Hello-World: "Initial commit" {GH}/commit/6113728f27ae82c7b1a177c8d03f9e96e0adf246',
    ),
    (
        "github",
        "push",
        "github/push-delete-tag.json",
        "[github] Codertocat deleted tag simple-tag of Codertocat/Hello-World",
    ),
    (
        "github",
        "pull_request",
        "github/pull_request-opened.json",
        f"[github] Codertocat opened PR #2 in Codertocat/Hello-World: {PR_TITLE} (changes → master) {GH}/pull/2",
    ),
    (
        "github",
        "pull_request",
        "github/pull_request-closed.json",
        f"[github] Codertocat closed PR #2 in Codertocat/Hello-World: {PR_TITLE} {GH}/pull/2",
    ),
    (
        "github",
        "pull_request",
        "github/pull_request-merged.json",
        f"[github] Codertocat merged PR #2 in Codertocat/Hello-World: {PR_TITLE} {GH}/pull/2",
    ),
    ("github", "issues", "github/issues-opened.json", f"[github] Codertocat opened issue {ISSUE}"),
    ("github", "issues", "github/issues-closed.json", f"[github] Codertocat closed issue {ISSUE}"),
    (
        "github",
        "issues",
        "github/issues-reopened.json",
        f"[github] Codertocat reopened issue {ISSUE}",
    ),
    (
        "github",
        "release",
        "github/release-published.json",
        f"[github] Codertocat published release 0.0.1 of Codertocat/Hello-World {GH}/releases/tag/0.0.1",
    ),
    (
        "github",
        "ping",
        "github/ping.json",
        "[github] webhook is set up for Octocoders/Hello-World (ping)",
    ),
    # GitLab
    (
        "gitlab",
        "push",
        "gitlab/push.json",
        '[gitlab] jsmith pushed 4 commits to master of mike/diaspora: "Update Catalan translation to e38cb41." http://example.com/mike/diaspora/-/compare/95790bf891e7...da1560886d4f',
    ),
    (
        "gitlab",
        "tag_push",
        "gitlab/tag_push.json",
        "[gitlab] John Smith pushed tag v1.0.0 to jsmith/example http://example.com/jsmith/example/-/tags/v1.0.0",
    ),
    (
        "gitlab",
        "merge_request",
        "gitlab/merge_request-opened.json",
        '[gitlab] root opened MR !1 in gitlabhq/gitlab-test: "MS-Viewport" (ms-viewport → master) http://example.com/diaspora/merge_requests/1',
    ),
    (
        "gitlab",
        "merge_request",
        "gitlab/merge_request-merged.json",
        '[gitlab] root merged MR !1 in gitlabhq/gitlab-test: "MS-Viewport" http://example.com/diaspora/merge_requests/1',
    ),
    (
        "gitlab",
        "merge_request",
        "gitlab/merge_request-closed.json",
        '[gitlab] root closed MR !1 in gitlabhq/gitlab-test: "MS-Viewport" http://example.com/diaspora/merge_requests/1',
    ),
    (
        "gitlab",
        "pipeline",
        "gitlab/pipeline-success.json",
        '[gitlab] pipeline #31 passed on master of gitlab-org/gitlab-test in 1m03s: "test" by root http://example.com/gitlab-org/gitlab-test/-/pipelines/31',
    ),
    (
        "gitlab",
        "pipeline",
        "gitlab/pipeline-failed.json",
        '[gitlab] pipeline #31 failed on master of gitlab-org/gitlab-test in 1m03s: "test" by root; failed jobs: test-build http://example.com/gitlab-org/gitlab-test/-/pipelines/31',
    ),
    # Jenkins
    (
        "jenkins",
        "COMPLETED",
        "jenkins/completed.json",
        "[jenkins] asgard #18 SUCCESS in 2m05s on origin/master http://localhost:8080/job/asgard/18/",
    ),
    (
        "jenkins",
        "FINALIZED",
        "jenkins/finalized.json",
        "[jenkins] asgard #18 SUCCESS in 2m05s on origin/master http://localhost:8080/job/asgard/18/",
    ),
    (
        "jenkins",
        "FINALIZED",
        "jenkins/finalized-failure-folder.json",
        "[jenkins] platform/api/main #42 FAILURE in 47s on main, 3 of 120 tests failed https://ci.example.com/job/platform/job/api/job/main/42/",
    ),
    (
        "jenkins",
        "build",
        "jenkins/flat.json",
        "[jenkins] deploy-prod #311 UNSTABLE in 1m33s https://ci.example.com/job/deploy-prod/311/",
    ),
    # Alertmanager
    (
        "alertmanager",
        "firing",
        "alertmanager/firing.json",
        "[alertmanager] FIRING: InstanceDown \u00d75 (critical) on web-1:9100, web-2:9100, web-3:9100 and 2 more [+2 truncated] https://runbooks.example.com/InstanceDown",
    ),
    (
        "alertmanager",
        "resolved",
        "alertmanager/resolved.json",
        "[alertmanager] RESOLVED: InstanceDown (critical) on web-1:9100: web-1:9100 is down https://runbooks.example.com/InstanceDown",
    ),
    # PagerDuty
    (
        "pagerduty",
        "incident.triggered",
        "pagerduty/triggered.json",
        '[pagerduty] TRIGGERED #2 on API Service (P1, high urgency): "A little bump in the road", assigned to User 123 https://acme.pagerduty.com/incidents/PGR0VU2',
    ),
    (
        "pagerduty",
        "incident.acknowledged",
        "pagerduty/acknowledged.json",
        '[pagerduty] ACKNOWLEDGED #2 on API Service by Tenex Engineer: "A little bump in the road" https://acme.pagerduty.com/incidents/PGR0VU2',
    ),
    (
        "pagerduty",
        "incident.resolved",
        "pagerduty/resolved.json",
        '[pagerduty] RESOLVED #2 on API Service by Tenex Engineer: "A little bump in the road" https://acme.pagerduty.com/incidents/PGR0VU2',
    ),
]


@pytest.mark.parametrize(
    ("provider", "event", "fixture", "line"), DOCUMENTED, ids=[c[2] for c in DOCUMENTED]
)
def test_documented_payload_gives_one_line(
    provider: str, event: str, fixture: str, line: str
) -> None:
    assert texts(PROVIDERS[provider](event, load(fixture))) == [line]


SILENT = [
    ("github", "star", "github/push.json"),  # events with no formatter
    ("github", "pull_request", "github/issues-opened.json"),  # no pull_request, no action
    ("gitlab", "pipeline", "gitlab/pipeline-running.json"),  # not an outcome
    ("gitlab", "merge_request", "gitlab/merge_request-updated.json"),
    ("gitlab", "note", "gitlab/push.json"),
    ("jenkins", "STARTED", "jenkins/started.json"),
    ("pagerduty", "incident.priority_updated", "pagerduty/priority_updated.json"),
]


@pytest.mark.parametrize(("provider", "event", "fixture"), SILENT)
def test_events_not_worth_a_line_give_none(provider: str, event: str, fixture: str) -> None:
    assert PROVIDERS[provider](event, load(fixture)) == []


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("labeled", []),
        ("synchronize", []),
        ("reopened", ["reopened PR #2"]),
        ("ready_for_review", ["marked ready for review PR #2"]),
    ],
)
def test_pull_request_actions(action: str, expected: list[str]) -> None:
    payload = load("github/pull_request-opened.json")
    payload["action"] = action
    got = texts(format_github("pull_request", payload))
    assert len(got) == len(expected)
    for line, part in zip(got, expected, strict=True):
        assert part in line


def test_github_release_only_when_published() -> None:
    payload = load("github/release-published.json")
    for action in ("created", "released", "prereleased", "edited"):
        payload["action"] = action
        assert format_github("release", payload) == []
    payload["action"] = "published"
    payload["release"].update(prerelease=True, name="Spring cleaning")
    assert texts(format_github("release", payload)) == [
        f'[github] Codertocat published pre-release 0.0.1 of Codertocat/Hello-World: "Spring cleaning" {GH}/releases/tag/0.0.1'
    ]


def test_github_push_variants() -> None:
    force = load("github/push.json")
    force.update(forced=True, commits=[])
    assert texts(format_github("push", force)) == [
        f"[github] Codertocat force-pushed to master of Codertocat/Hello-World {GH}/compare/6113728f27ae...b5e6f8f1a0c3"
    ]
    tag = load("github/push.json")
    tag.update(ref="refs/tags/v2.0", created=True)
    assert texts(format_github("push", tag)) == [
        f"[github] Codertocat pushed tag v2.0 to Codertocat/Hello-World {GH}/compare/6113728f27ae...b5e6f8f1a0c3"
    ]


def test_gitlab_new_branch_and_deleted_branch() -> None:
    new = load("gitlab/push.json")
    new["before"] = "0" * 40
    new["ref"] = "refs/heads/feature/a b"
    assert texts(format_gitlab("push", new)) == [
        '[gitlab] jsmith pushed 4 commits to new branch feature/a b of mike/diaspora: "Update Catalan translation to e38cb41." http://example.com/mike/diaspora/-/commits/feature/a%20b'
    ]
    gone = load("gitlab/push.json")
    gone.update(after="0" * 40, commits=[], total_commits_count=0)
    assert texts(format_gitlab("push", gone)) == [
        "[gitlab] jsmith deleted branch master of mike/diaspora"
    ]


def test_alertmanager_firing_meta_for_the_outbox() -> None:
    [a] = format_alertmanager("firing", load("alertmanager/firing.json"))
    assert a.kind == "alert"
    assert a.fold_key == "InstanceDown"
    assert dict(a.meta) == {
        "alertname": "InstanceDown",
        "status": "firing",
        "severity": "critical",
        "instances": [f"web-{i}:9100" for i in range(1, 6)],
        "summary": "web-1:9100 is down",
        "fingerprints": [f"{i:016x}" for i in range(1, 6)],
        "starts_at": "2024-05-01T03:01:00Z",
        "count": 5,
        "truncated": 2,
        "alerts": [
            {
                "alertname": "InstanceDown",
                "instance": f"web-{i}:9100",
                "fingerprint": f"{i:016x}",
                "status": "firing",
                "severity": "critical",
            }
            for i in range(1, 6)
        ],
    }


def test_alertmanager_meta_is_what_the_outbox_folds_by() -> None:
    from masterchief.irc.storm import notes_from_meta

    [a] = format_alertmanager("firing", load("alertmanager/firing.json"))
    notes = notes_from_meta(a.meta, fold_key=a.fold_key, ref="1")
    assert len(notes) == 5 + 2  # every alert, and each truncated one, is represented
    assert {n.instance for n in notes} == {*(f"web-{i}:9100" for i in range(1, 6)), None}
    assert {n.status for n in notes} == {"firing"}


def test_alertmanager_resolved_meta() -> None:
    [a] = format_alertmanager("resolved", load("alertmanager/resolved.json"))
    assert (a.kind, a.fold_key) == ("alert", "InstanceDown")
    assert a.meta["status"] == "resolved"
    assert a.meta["instances"] == ["web-1:9100"]
    assert a.meta["truncated"] == 0


def test_alertmanager_mixed_group_gives_one_line_per_alertname_and_status() -> None:
    lines = format_alertmanager("firing", load("alertmanager/mixed.json"))
    assert [(a.fold_key, a.meta["status"]) for a in lines] == [
        ("DiskFull", "firing"),
        ("InstanceDown", "resolved"),
    ]
    assert texts(lines) == [
        "[alertmanager] FIRING: DiskFull (warning) on db-1:9100: disk / is 97% full",
        "[alertmanager] RESOLVED: InstanceDown (warning) on db-2:9100: db-2:9100 is down https://runbooks.example.com/InstanceDown",
    ]


def test_alertmanager_truncated_counted_once_and_without_alerts() -> None:
    payload = load("alertmanager/mixed.json")
    payload["truncatedAlerts"] = 7
    lines = format_alertmanager("firing", payload)
    assert [a.meta["truncated"] for a in lines] == [7, 0]
    assert "[+7 truncated]" in lines[0].text
    empty = load("alertmanager/firing.json")
    empty["alerts"] = []
    [a] = format_alertmanager("firing", empty)
    assert (
        a.text
        == "[alertmanager] FIRING: InstanceDown (critical) [+2 truncated] https://runbooks.example.com/InstanceDown"
    )
    assert a.meta["count"] == 0
    assert a.meta["truncated"] == 2
    empty["truncatedAlerts"] = 0
    assert format_alertmanager("firing", empty) == []


def test_alertmanager_severity_most_severe_and_shared_summary() -> None:
    payload = load("alertmanager/firing.json")
    for i, alert in enumerate(payload["alerts"]):
        alert["labels"]["severity"] = "warning" if i else "info"
        alert["annotations"]["summary"] = "node exporter unreachable"
    payload["alerts"][3]["labels"]["severity"] = "critical"
    [a] = format_alertmanager("firing", payload)
    assert a.meta["severity"] == "critical"
    assert ": node exporter unreachable [+2 truncated]" in a.text


def test_jenkins_flat_pending_statuses_give_nothing() -> None:
    for status in ("STARTED", "running", "QUEUED"):
        assert format_jenkins("build", {"job_name": "x", "build_number": 1, "status": status}) == []


def test_jenkins_result_carries_a_once_key() -> None:
    [done] = format_jenkins("COMPLETED", load("jenkins/completed.json"))
    [final] = format_jenkins("FINALIZED", load("jenkins/finalized.json"))
    assert done.once == final.once == "jenkins:asgard#18"


def test_pagerduty_agentless_and_other_lifecycle_events() -> None:
    payload = load("pagerduty/acknowledged.json")
    payload["event"]["agent"] = None
    assert texts(format_pagerduty("incident.acknowledged", payload)) == [
        '[pagerduty] ACKNOWLEDGED #2 on API Service: "A little bump in the road" https://acme.pagerduty.com/incidents/PGR0VU2'
    ]
    payload["event"]["event_type"] = "incident.escalated"
    payload["event"]["data"]["assignees"].append({"summary": "Maeve"})
    assert texts(format_pagerduty("incident.escalated", payload)) == [
        '[pagerduty] ESCALATED #2 on API Service: "A little bump in the road", assigned to User 123, Maeve https://acme.pagerduty.com/incidents/PGR0VU2'
    ]
    payload["event"]["event_type"] = "incident.annotated"
    assert format_pagerduty("incident.annotated", payload) == []


def test_generic_and_rest_lines() -> None:
    assert texts(
        format_generic("release", {"text": "v1.4.2 is live", "url": "https://x.test/r"})
    ) == ["[release] v1.4.2 is live https://x.test/r"]
    assert texts(format_generic("release", {"version": "1.4.2", "env": "prod"})) == [
        '[release] {"version":"1.4.2","env":"prod"}'
    ]
    assert texts(format_rest("statuspage", [{"name": "API", "status": "major_outage"}])) == [
        '[statuspage] changed: [{"name":"API","status":"major_outage"}]'
    ]
    assert texts(format_rest("statuspage", [], changed=False)) == ["[statuspage] []"]
    [long] = format_rest("statuspage", {"components": ["x" * 50] * 50})
    assert len(long.text) <= len("[statuspage] changed: ") + 300
    assert long.text.endswith("…")


def test_rest_status_notices() -> None:
    assert texts(
        format_rest_status(
            "rest.failing",
            {"name": "statuspage", "reason": "HTTP 503", "failures": 1, "retry_in_s": 120.0},
        )
    ) == ["[statuspage] polling is failing: HTTP 503 (retrying in 2m00s)"]
    assert texts(
        format_rest_status("rest.recovered", {"name": "statuspage", "failures": 7, "down_s": 845.2})
    ) == ["[statuspage] polling recovered after 14m05s (7 failed polls)"]


# --- the sanitising rule -------------------------------------------------------------------

CLEAN = [
    ("plain", "plain"),
    ("a\r\nQUIT :bye", "a QUIT :bye"),
    ("a\rb\nc\x00d", "a b c d"),
    ("tab\there\x0bv\x0cf", "tab here v f"),
    ("nel\x85ls\u2028ps\u2029end", "nel ls ps end"),
    ("\x01ACTION waves\x01", "ACTION waves"),
    (
        "\x02bold\x02 \x1ditalic\x1d \x1funder\x1f \x1estrike\x1e \x11mono\x11 \x16rev\x16",
        "bold italic under strike mono rev",
    ),
    ("\x0304red\x03 \x0304,12on blue\x03 \x03,5x \x0399", "red on blue ,5x"),
    ("\x0312,text", ",text"),
    ("\x04FF0000hex\x04 \x04ff0000,00ff00both \x04zz", "hex both zz"),
    ("reset\x0f here", "reset here"),
    ("del\x7f c1\x9b[31m", "del c1[31m"),
    ("rtl \u202eevil\u202c \u2066iso\u2069", "rtl evil iso"),
    ("   many     spaces \r\n\r\n ", "many spaces"),
    ("emoji 👩‍🚒 ok", "emoji 👩‍🚒 ok"),
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "expected"), CLEAN)
def test_clean(raw: str, expected: str) -> None:
    assert clean(raw) == expected


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("abcdefghijkl", 10, "abcdefghi…"),
        ("fix the retry loop in client", 20, "fix the retry loop…"),
        ("e\u0301e\u0301e\u0301e\u0301", 4, "e\u0301…"),
    ],
)
def test_truncate(raw: str, limit: int, expected: str) -> None:
    assert truncate(raw, limit) == expected
    assert len(truncate(raw, limit)) <= limit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        ("42", 42),
        (7.0, 7),
        (7.5, None),
        (True, None),
        ("x", None),
        (10**30, None),
        (None, None),
    ],
)
def test_integer(value: object, expected: int | None) -> None:
    assert integer({"n": value}, "n") == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (59.4, "59s"),
        (63, "1m03s"),
        (3720, "1h02m"),
        (97200, "1d03h"),
        (-1, ""),
        (1e300, ""),
        (float("nan"), ""),
        (None, ""),
    ],
)
def test_duration(seconds: float | None, expected: str) -> None:
    assert duration(seconds) == expected


# --- hostile and malformed payloads ----------------------------------------------------

FORBIDDEN = {chr(c) for c in range(0x20)} | {"\x7f"} | {chr(c) for c in range(0x80, 0xA0)}
FORBIDDEN |= {"\u2028", "\u2029", "\u202e", "\u2066"}
MAX_LINE = 1000  # characters; the output layer splits at 512 bytes


def assert_safe(lines: list[Announcement]) -> None:
    for a in lines:
        assert isinstance(a.text, str) and a.text
        bad = FORBIDDEN.intersection(a.text)
        assert not bad, (a.text, bad)
        assert len(a.text) <= MAX_LINE, len(a.text)
        a.text.encode("utf-8")  # no lone surrogates


INJECTION = "Fix retries\r\nQUIT :bye\r\nPRIVMSG #ops :\x01ACTION pwned\x01"


def test_crlf_in_commit_message_never_leaves_the_line() -> None:
    payload = load("github/push.json")
    payload["commits"][0]["message"] = INJECTION
    [a] = format_github("push", payload)
    assert_safe([a])
    assert '"Fix retries"' in a.text  # the commit title is the message's first line
    payload["commits"][0]["message"] = "\r\nQUIT :bye"
    [a] = format_github("push", payload)
    assert_safe([a])
    assert ': "QUIT :bye" https://' in a.text  # harmless text inside our line


@pytest.mark.parametrize(
    ("provider", "event", "fixture", "path"),
    [
        ("github", "pull_request", "github/pull_request-opened.json", ("pull_request", "title")),
        ("github", "push", "github/push.json", ("ref",)),
        ("github", "issues", "github/issues-opened.json", ("sender", "login")),
        (
            "gitlab",
            "merge_request",
            "gitlab/merge_request-opened.json",
            ("object_attributes", "title"),
        ),
        ("gitlab", "pipeline", "gitlab/pipeline-failed.json", ("commit", "message")),
        ("jenkins", "COMPLETED", "jenkins/completed.json", ("name",)),
        (
            "alertmanager",
            "firing",
            "alertmanager/resolved.json",
            ("alerts", 0, "annotations", "summary"),
        ),
        ("pagerduty", "incident.triggered", "pagerduty/triggered.json", ("event", "data", "title")),
    ],
)
def test_injection_in_any_field_stays_inline(
    provider: str, event: str, fixture: str, path: tuple[str | int, ...]
) -> None:
    payload = load(fixture)
    target = payload
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = "x\x02\x0304,01" + INJECTION + "\x0f\u202e"
    lines = PROVIDERS[provider](event, payload)
    assert lines
    assert_safe(lines)
    joined = " ".join(texts(lines))
    assert "ACTION pwned" in joined or "Fix retries" in joined


def test_ten_kilobyte_title_is_cut_with_an_ellipsis() -> None:
    payload = load("github/pull_request-opened.json")
    payload["pull_request"]["title"] = "A" * 10_240
    [a] = format_github("pull_request", payload)
    assert_safe([a])
    assert "A" * 100 + "…" in a.text
    assert len(a.text) < 400
    am = load("alertmanager/resolved.json")
    am["alerts"][0]["annotations"]["summary"] = "word " * 2048
    am["alerts"][0]["labels"]["instance"] = "h" * 10_240
    [b] = format_alertmanager("resolved", am)
    assert_safe([b])
    assert len(b.text) < 400


def test_overlong_url_is_dropped_not_cut() -> None:
    payload = load("github/pull_request-opened.json")
    payload["pull_request"]["html_url"] = "https://github.com/" + "x" * 400
    [a] = format_github("pull_request", payload)
    assert "https://" not in a.text
    payload["pull_request"]["html_url"] = "https://github.com/a b\r\nQUIT"
    [a] = format_github("pull_request", payload)
    assert "https://" not in a.text
    payload["pull_request"]["html_url"] = "javascript:alert(1)"
    [a] = format_github("pull_request", payload)
    assert "javascript" not in a.text


NOT_OBJECTS = [None, [], [1, 2], "text", 42, 1.5, True]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize("payload", NOT_OBJECTS, ids=repr)
def test_payload_that_is_not_an_object_never_raises(provider: str, payload: object) -> None:
    event = {"github": "push", "gitlab": "push", "jenkins": "COMPLETED", "alertmanager": "firing",
             "pagerduty": "incident.triggered", "generic": "release"}[provider]  # fmt: skip
    lines = PROVIDERS[provider](event, payload)
    assert_safe(lines)
    if provider != "generic":
        assert lines == []


EVENTS = [
    ("github", "push"),
    ("github", "pull_request"),
    ("github", "issues"),
    ("github", "release"),
    ("github", "ping"),
    ("gitlab", "push"),
    ("gitlab", "tag_push"),
    ("gitlab", "merge_request"),
    ("gitlab", "pipeline"),
    ("jenkins", "COMPLETED"),
    ("jenkins", "build"),
    ("alertmanager", "firing"),
    ("pagerduty", "incident.triggered"),
]


@pytest.mark.parametrize(("provider", "event"), EVENTS)
def test_empty_object_gives_nothing_or_a_degraded_line(provider: str, event: str) -> None:
    lines = PROVIDERS[provider](event, {})
    assert_safe(lines)
    if provider == "github" and event == "ping":
        assert texts(lines) == ["[github] webhook is set up (ping)"]
    else:
        assert lines == []


def test_malformed_payload_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "masterchief.announce"):
        assert format_github("push", {"commits": []}) == []
        assert format_alertmanager("firing", {"alerts": "none"}) == []
        assert format_pagerduty("incident.triggered", ["not", "an", "object"]) == []
    assert [r.getMessage() for r in caplog.records] == [
        "github/push: no repository and no ref; nothing announced",
        "alertmanager/firing: no alerts in the notification; nothing announced",
        "pagerduty/incident.triggered: payload is not a JSON object; nothing announced",
    ]


def test_wrong_types_and_nested_nulls_degrade() -> None:
    pr: dict[str, Any] = {
        "action": "opened",
        "pull_request": {"number": "7", "title": 12345, "head": None, "base": [], "html_url": 3},
        "repository": {"full_name": None},
        "sender": ["not", "an", "object"],
    }
    assert texts(format_github("pull_request", pr)) == ['[github] someone opened PR #7: "12345"']
    push: dict[str, Any] = {
        "ref": 5,
        "repository": {"full_name": "o/r"},
        "commits": "abc",
        "pusher": None,
    }
    assert texts(format_github("push", push)) == ["[github] someone pushed to ? of o/r"]
    push = {"ref": "refs/heads/main", "repository": {"full_name": "o/r"}, "commits": [None, 3]}
    assert texts(format_github("push", push)) == [
        "[github] someone pushed 2 commits to main of o/r"
    ]
    am: dict[str, Any] = {
        "status": "firing",
        "alerts": [None, 3, {"labels": None, "annotations": []}],
    }
    [a] = format_alertmanager("firing", am)
    assert a.text == "[alertmanager] FIRING: alert"
    assert a.meta["instances"] == [] and a.meta["count"] == 1
    am = {
        "status": 7,
        "truncatedAlerts": "lots",
        "alerts": [{"status": "weird", "labels": {"alertname": ["x"]}}],
    }
    [a] = format_alertmanager("resolved", am)
    assert a.text == "[alertmanager] RESOLVED: alert"
    pd: dict[str, Any] = {
        "event": {
            "event_type": "incident.resolved",
            "agent": "me",
            "data": {"number": None, "title": None},
        }
    }
    assert format_pagerduty("incident.resolved", pd) == []
    pd["event"]["data"] = {"number": 9, "service": {"summary": {"deep": 1}}}
    assert texts(format_pagerduty("incident.resolved", pd)) == ["[pagerduty] RESOLVED #9"]
    jk: dict[str, Any] = {
        "name": None,
        "build": {"number": 3.0, "status": None, "phase": "COMPLETED"},
    }
    assert format_jenkins("COMPLETED", jk) == []
    jk["build"]["status"] = "FAILURE"
    jk["build"]["duration"] = "soon"
    assert texts(format_jenkins("COMPLETED", jk)) == ["[jenkins] build #3 FAILURE"]
    gl: dict[str, Any] = {
        "object_attributes": {"status": "failed", "id": "31", "duration": -5},
        "builds": {"a": 1},
    }
    assert texts(format_gitlab("pipeline", gl)) == ["[gitlab] pipeline #31 failed"]


HOSTILE_VALUES: list[object] = [
    None,
    0,
    -1,
    10**20,
    1e308,
    True,
    "",
    "x\r\nQUIT :bye\x00\x01\x02\x03",
    "0" * 40,
    "refs/heads/\r\n",
    "Z" * 5000,
    "\ud83d lone surrogate",
    [],
    [None],
    {},
    {"a": None},
]


def leaf_paths(obj: object, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield prefix
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from leaf_paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:3]):
            yield from leaf_paths(value, (*prefix, i))


def replaced(obj: Any, path: tuple[str | int, ...], value: object) -> Any:
    if not path:
        return copy.deepcopy(value)
    out = copy.copy(obj)
    out[path[0]] = replaced(obj[path[0]], path[1:], value)
    return out


FUZZED = [
    ("github", "push", "github/push.json"),
    ("github", "pull_request", "github/pull_request-merged.json"),
    ("github", "issues", "github/issues-closed.json"),
    ("github", "release", "github/release-published.json"),
    ("gitlab", "push", "gitlab/push.json"),
    ("gitlab", "merge_request", "gitlab/merge_request-opened.json"),
    ("gitlab", "pipeline", "gitlab/pipeline-failed.json"),
    ("jenkins", "FINALIZED", "jenkins/finalized-failure-folder.json"),
    ("jenkins", "build", "jenkins/flat.json"),
    ("alertmanager", "firing", "alertmanager/mixed.json"),
    ("pagerduty", "incident.triggered", "pagerduty/triggered.json"),
]


@pytest.mark.parametrize(("provider", "event", "fixture"), FUZZED, ids=[f[2] for f in FUZZED])
def test_every_field_replaced_by_hostile_values_never_raises(
    provider: str, event: str, fixture: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "masterchief.announce")
    original = load(fixture)
    formatter = PROVIDERS[provider]
    runs = 0
    for path in leaf_paths(original):
        for value in HOSTILE_VALUES:
            assert_safe(formatter(event, replaced(original, path, value)))
            runs += 1
    assert runs >= 6 * len(HOSTILE_VALUES)  # the walk reached the fields
    assert load(fixture) == original  # nothing mutated the fixture


# --- bindings: routing, once, suppression -------------------------------------------------


class Recorder:
    def __init__(self, fail_for: str | None = None) -> None:
        self.calls: list[tuple[str, str, str, str | None, dict[str, Any] | None]] = []
        self.fail_for = fail_for

    async def __call__(
        self,
        target: Target,
        text: str,
        *,
        kind: str = "text",
        fold_key: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        assert target.is_irc  # configured channels are IRC targets
        if target.name == self.fail_for:
            raise OSError("store is down")
        meta_copy = dict(meta) if meta is not None else None
        self.calls.append((target.name, text, kind, fold_key, meta_copy))

    def lines(self) -> list[tuple[str, str]]:
        return [(target, text) for target, text, *_ in self.calls]


CONFIG = {
    "webhooks": {
        "github": {"channels": ["#dev", "#github"]},
        "gitlab": {"channels": ["#dev"]},
        "jenkins": {"channels": ["#ci"]},
        "alertmanager": {"channels": ["#alerts"]},
        "pagerduty": {"channels": ["#oncall"]},
        "generic": [{"name": "release", "channels": ["#ops"]}, {"name": "quiet"}],
    },
    "rest": [
        {"name": "statuspage", "url": "https://status.example.com/api", "channels": ["#status"]}
    ],
}


@pytest.fixture
async def bot(tmp_path: Path) -> Any:
    app = SimpleNamespace(table=BindingTable(), config=build_config(CONFIG, project_dir=tmp_path))
    recorder = Recorder()
    announcer = announce.install(app.table, lambda: app.config, recorder)
    dispatcher = Dispatcher(app.table, handler_timeout_s=5.0)
    task = asyncio.create_task(dispatcher.run())
    yield SimpleNamespace(
        app=app, recorder=recorder, announcer=announcer, dispatcher=dispatcher, table=app.table
    )
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def webhook(key: str, fixture: str | None = None, payload: object = None) -> Event:
    source = key.partition("/")[0]
    return Event(
        type="webhook", key=key, source=source, payload=load(fixture) if fixture else payload
    )


async def dispatch(bot: Any, *events: Event) -> None:
    for ev in events:
        assert bot.dispatcher.submit(ev)
    await bot.dispatcher.drain()


async def test_lines_go_to_each_providers_channels(bot: Any) -> None:
    await dispatch(
        bot,
        webhook("github/pull_request", "github/pull_request-merged.json"),
        webhook("gitlab/pipeline", "gitlab/pipeline-failed.json"),
        webhook("jenkins/COMPLETED", "jenkins/completed.json"),
        webhook("pagerduty/incident.triggered", "pagerduty/triggered.json"),
        webhook("generic/release", payload={"text": "v2 shipped"}),
        webhook("generic/quiet", payload={"text": "nobody hears this"}),
        webhook("generic/unknown", payload={"text": "no such hook"}),
        webhook("github/star", payload={"action": "created"}),
    )
    got = bot.recorder.lines()
    assert [t for t, _ in got] == ["#dev", "#github", "#dev", "#ci", "#oncall", "#ops"]
    assert got[0][1] == got[1][1] and got[0][1].startswith("[github] Codertocat merged PR #2")
    assert got[2][1].startswith("[gitlab] pipeline #31 failed")
    assert got[3][1].startswith("[jenkins] asgard #18 SUCCESS")
    assert got[4][1].startswith("[pagerduty] TRIGGERED #2")
    assert got[5][1] == "[release] v2 shipped"
    assert [(kind, fold, meta) for *_, kind, fold, meta in bot.recorder.calls] == [
        ("text", None, {"source": source})
        for source in ("github", "github", "gitlab", "jenkins", "pagerduty", "release")
    ]
    # generic/quiet has no channels, generic/unknown no hook
    assert bot.announcer.stats.unrouted == 2


async def test_alertmanager_announces_as_alert_with_fold_key_and_meta(bot: Any) -> None:
    await dispatch(bot, webhook("alertmanager/firing", "alertmanager/firing.json"))
    [(target, text, kind, fold_key, meta)] = bot.recorder.calls
    assert (target, kind, fold_key) == ("#alerts", "alert", "InstanceDown")
    assert text.startswith("[alertmanager] FIRING: InstanceDown \u00d75 (critical)")
    assert meta is not None and meta["truncated"] == 2 and len(meta["fingerprints"]) == 5
    assert meta["source"] == "alertmanager" and len(meta["alerts"]) == 5


async def test_jenkins_completed_then_finalized_is_announced_once(bot: Any) -> None:
    await dispatch(
        bot,
        webhook("jenkins/STARTED", "jenkins/started.json"),
        webhook("jenkins/COMPLETED", "jenkins/completed.json"),
        webhook("jenkins/FINALIZED", "jenkins/finalized.json"),
    )
    assert bot.recorder.lines() == [
        (
            "#ci",
            "[jenkins] asgard #18 SUCCESS in 2m05s on origin/master http://localhost:8080/job/asgard/18/",
        )
    ]
    assert bot.announcer.stats.repeats == 1


async def test_rest_poll_envelope_and_status_notices(bot: Any) -> None:
    envelope = {
        "name": "statuspage",
        "data": [{"name": "API", "status": "degraded_performance"}],
        "previous": [],
        "initial": False,
        "changed": True,
        "hash": "ab" * 32,
        "previous_hash": "cd" * 32,
        "status": 200,
        "url": "https://status.example.com/api",
        "emit": "on_change",
        "channels": ["#status"],
    }
    await dispatch(
        bot,
        Event(type="rest", key="rest/statuspage", source="rest", payload=envelope),
        Event(type="rest", key="rest/statuspage", source="rest", payload={"bare": 1}),
        Event(type="rest", key="rest/other", source="rest", payload={"unrouted": 1}),
        Event(
            type="event",
            key="rest.failing",
            source="rest",
            payload={"name": "statuspage", "reason": "HTTP 503", "failures": 1, "retry_in_s": 60},
        ),
    )
    assert bot.recorder.lines() == [
        ("#status", '[statuspage] changed: [{"name":"API","status":"degraded_performance"}]'),
        ("#status", '[statuspage] changed: {"bare":1}'),
        ("#status", "[statuspage] polling is failing: HTTP 503 (retrying in 1m00s)"),
    ]


async def test_user_binding_returning_true_suppresses_the_builtin_line(bot: Any) -> None:
    seen: list[str] = []

    async def my_push(ev: Event) -> bool:
        seen.append(ev.key)
        return True

    def observer(ev: Event) -> None:
        seen.append("observer " + ev.key)

    bot.table.bind("webhook", "-|-", "github/push", my_push, owner="script:mine")
    bot.table.bind("webhook", "-|-", "github/*", observer, owner="script:other")
    await dispatch(
        bot,
        webhook("github/push", "github/push.json"),
        webhook("github/issues", "github/issues-opened.json"),
    )
    assert "github/push" in seen and "observer github/issues" in seen
    assert [text.split(" ")[2] for _, text in bot.recorder.lines()] == ["opened", "opened"]
    assert all("pushed" not in text for _, text in bot.recorder.lines())
    bot.table.unbind("webhook", "-|-", "github/push", my_push)
    await dispatch(bot, webhook("github/push", "github/push.json"))
    assert any("pushed 3 commits" in text for _, text in bot.recorder.lines())


async def test_bindings_are_builtin_listed_and_replaced_on_reinstall(bot: Any) -> None:
    rows = [b for b in bot.table.binds() if b.owner == announce.OWNER]
    assert sorted((b.type, b.mask) for b in rows) == sorted(
        [
            ("webhook", f"{s}/*")
            for s in ("github", "gitlab", "jenkins", "alertmanager", "pagerduty", "generic")
        ]
        + [("rest", "rest/*"), ("event", "rest.failing"), ("event", "rest.recovered")]
    )
    assert all(b.builtin for b in rows)
    announce.install(bot.table, lambda: bot.app.config, bot.recorder)
    assert len([b for b in bot.table.binds() if b.owner == announce.OWNER]) == len(rows)


async def test_formatter_bug_and_failing_channel_are_isolated(
    bot: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: str, payload: object) -> list[Announcement]:
        raise RuntimeError("bug")

    monkeypatch.setitem(PROVIDERS, "gitlab", broken)
    bot.recorder.fail_for = "#dev"
    with caplog.at_level(logging.ERROR, "masterchief.announce"):
        await dispatch(
            bot,
            webhook("gitlab/push", "gitlab/push.json"),
            webhook("github/issues", "github/issues-opened.json"),
        )
    assert [t for t, _ in bot.recorder.lines()] == ["#github"]  # #dev failed, #github still got it
    assert bot.announcer.stats.errors == 2
    assert bot.dispatcher.stats.errors == 0  # nothing escaped to the dispatcher
    assert "formatting webhook gitlab/push failed" in caplog.text


# --- end to end: a hostile commit message through the real outbox and InspIRCd --------


async def test_crlf_quit_in_a_commit_reaches_the_channel_as_text(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd, irc_client
) -> None:
    from tests.harness import running_bot

    over: dict[str, Any] = {
        "web": {"enabled": False},
        "webhooks": {"github": {"insecure": True, "channels": ["#ops"]}},
    }
    watcher = await irc_client()
    await watcher.join("#ops")
    async with running_bot(tmp_path, ircd.host, ircd.port, **over) as app:
        nick = app.irc.nickname
        payload = load("github/push.json")
        payload["commits"][0]["message"] = "\r\nQUIT :bye\r\nPRIVMSG #ops :\x01ACTION pwned\x01"
        payload["ref"] = "refs/heads/\x02main\x0304,01\r\nJOIN #evil"
        app.dispatcher.submit(webhook("github/push", payload=payload))
        line = await watcher.wait_for(rf"^:{nick}!\S+ PRIVMSG #ops :\[github\] ", timeout=15)
        assert line.text == (
            '[github] Codertocat pushed 3 commits to main JOIN #evil of Codertocat/Hello-World: "QUIT :bye"'
            " https://github.com/Codertocat/Hello-World/compare/6113728f27ae...b5e6f8f1a0c3"
        )
        await watcher.expect_none(
            rf"^:{nick}!\S+ (QUIT|JOIN :?#evil|PRIVMSG #ops :\x01)", within=1.0
        )
        assert app.irc.connected.is_set()
