"""Alertmanager webhook notifications, payload version 4
(``alertmanager/firing|resolved``).

One notification gives one line per (alertname, status) among its alerts —
one line in the usual setup (``group_by: [alertname]``, one status) — with
``kind="alert"`` and ``fold_key=<alertname>`` so the outbox can fold a storm.
``meta`` carries what a summary needs: alertname, status, severity,
instances (distinct), summary, fingerprints, starts_at, count, truncated
(the notification's ``truncatedAlerts``, counted on its first line) and
``alerts``: each alert's alertname, instance, fingerprint, status and
severity (what ``bot.storm.notes_from_meta`` reads first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import (
    NAME,
    SUMMARY,
    Announcement,
    integer,
    items,
    join,
    listing,
    mapping,
    text,
    unannounced,
    url,
    word,
)

__all__ = ["format_alertmanager"]

P = "[alertmanager]"
TIMES = "\u00d7"  # the multiplication sign, as in "HighCPU x5" but typeset

_STATUSES = ("firing", "resolved")
_INSTANCE_LABELS = ("instance", "pod", "host", "hostname", "node", "service", "job")
# Most severe first; unknown severities rank after these, in order seen.
_SEVERITY_RANK = {
    s: i
    for i, s in enumerate(
        ("critical", "page", "error", "high", "major", "warning", "minor", "low", "info", "none")
    )
}


def _instance(alert: Mapping[str, Any]) -> str:
    for label in _INSTANCE_LABELS:
        value = text(alert, "labels", label, limit=NAME)
        if value:
            return value
    return ""


def _summary(annotations: Mapping[str, Any]) -> str:
    for key in ("summary", "description", "message"):
        value = text(annotations, key, limit=SUMMARY)
        if value:
            return value
    return ""


def _distinct(values: list[str]) -> list[str]:
    return [v for v in dict.fromkeys(values) if v]


def _line(
    name: str,
    status: str,
    alerts: list[Mapping[str, Any]],
    truncated: int,
    common: Mapping[str, Any],
) -> Announcement:
    instances = _distinct([_instance(a) for a in alerts])
    severities = _distinct([text(a, "labels", "severity", limit=20) for a in alerts])
    severities.sort(key=lambda s: _SEVERITY_RANK.get(s.lower(), len(_SEVERITY_RANK)))
    severity = severities[0] if severities else text(common, "labels", "severity", limit=20)
    # One summary for the line: the alerts' own when they all say the same,
    # else the notification's common one; a per-instance summary ("web-1 is
    # down") on a line about five alerts would mislead.
    summaries = _distinct([_summary(mapping(a, "annotations")) for a in alerts])
    shared = summaries[0] if len(summaries) == 1 else ""
    summary = shared or _summary(mapping(common, "annotations"))
    runbook = next(
        (u for u in (url(a, "annotations", "runbook_url") for a in alerts) if u), ""
    ) or url(common, "annotations", "runbook_url")
    starts = sorted(_distinct([text(a, "startsAt", limit=40) for a in alerts]))
    count = len(alerts)

    line = f"{P} {status.upper()}: {name}"
    if count > 1:
        line += f" {TIMES}{count}"
    if severity:
        line += f" ({severity})"
    if instances:
        line += f" on {listing(instances)}"
    if summary:
        line += f": {summary}"
    if truncated > 0:
        line += f" [+{truncated} truncated]"
    meta: dict[str, Any] = {
        "alertname": name,
        "status": status,
        "severity": severity or None,
        "instances": instances,
        "summary": summary or (summaries[0] if summaries else None),
        "fingerprints": _distinct([text(a, "fingerprint", limit=64) for a in alerts]),
        "starts_at": starts[0] if starts else None,
        "count": count,
        "truncated": truncated,
        # each alert on its own, for folding that keeps every alert apart
        "alerts": [
            {
                "alertname": name,
                "instance": _instance(a) or None,
                "fingerprint": text(a, "fingerprint", limit=64) or None,
                "status": status,
                "severity": text(a, "labels", "severity", limit=20) or None,
            }
            for a in alerts
        ],
    }
    return Announcement(join(line, runbook), kind="alert", fold_key=name, meta=meta)


def format_alertmanager(event: str, payload: object) -> list[Announcement]:
    """Lines for one Alertmanager notification (``event``: firing | resolved)."""
    key = f"alertmanager/{event}"
    if not isinstance(payload, Mapping):
        return unannounced(key, "payload is not a JSON object")
    overall = word(payload, "status")
    if overall not in _STATUSES:
        overall = event.lower() if event.lower() in _STATUSES else "firing"
    truncated = max(integer(payload, "truncatedAlerts") or 0, 0)
    group_name = text(payload, "groupLabels", "alertname", limit=NAME) or text(
        payload, "commonLabels", "alertname", limit=NAME
    )
    common = {
        "labels": mapping(payload, "commonLabels"),
        "annotations": mapping(payload, "commonAnnotations"),
    }

    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for alert in items(payload, "alerts"):
        if not isinstance(alert, Mapping):
            continue
        name = text(alert, "labels", "alertname", limit=NAME) or group_name or "alert"
        status = word(alert, "status")
        if status not in _STATUSES:
            status = overall
        groups.setdefault((name, status), []).append(alert)

    if not groups:
        if truncated <= 0:
            return unannounced(key, "no alerts in the notification")
        groups[(group_name or "alert", overall)] = []
    # truncatedAlerts belong to the notification: count them once, on the
    # first line with the notification's own status.
    carrier = next((k for k in groups if k[1] == overall), next(iter(groups)))
    return [
        _line(name, status, alerts, truncated if (name, status) == carrier else 0, common)
        for (name, status), alerts in groups.items()
    ]
