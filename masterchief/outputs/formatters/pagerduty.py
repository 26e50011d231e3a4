"""PagerDuty V3 webhooks (``pagerduty/<event_type>``): incident lifecycle
events.  Notes, responder requests, status updates, priority changes and
service events give no line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import (
    NAME,
    Announcement,
    first_line,
    integer,
    items,
    join,
    listing,
    mapping,
    quoted,
    text,
    unannounced,
    url,
    word,
)

__all__ = ["format_pagerduty"]

P = "[pagerduty]"

# event type -> (verb, show "by <agent>", show assignees, show priority/urgency)
_EVENTS: dict[str, tuple[str, bool, bool, bool]] = {
    "incident.triggered": ("TRIGGERED", False, True, True),
    "incident.acknowledged": ("ACKNOWLEDGED", True, False, False),
    "incident.unacknowledged": ("UNACKNOWLEDGED", False, True, False),
    "incident.resolved": ("RESOLVED", True, False, False),
    "incident.reopened": ("REOPENED", True, True, True),
    "incident.escalated": ("ESCALATED", False, True, False),
    "incident.reassigned": ("REASSIGNED", True, True, False),
    "incident.delegated": ("DELEGATED", True, True, False),
}


def _assignees(incident: Mapping[str, Any]) -> list[str]:
    names = [text(a, "summary", limit=NAME) for a in items(incident, "assignees")]
    return [n for n in dict.fromkeys(names) if n]


def format_pagerduty(event: str, payload: object) -> list[Announcement]:
    """A line for one incident event (``event`` is ``event.event_type``)."""
    key = f"pagerduty/{event}"
    if not isinstance(payload, Mapping):
        return unannounced(key, "payload is not a JSON object")
    ev = mapping(payload, "event")
    event_type = word(ev, "event_type") or event.lower()
    spec = _EVENTS.get(event_type)
    if spec is None:
        return []
    verb, by_agent, assigned, priority = spec
    incident = mapping(ev, "data")
    num = integer(incident, "number")
    title = first_line(incident, "title") or first_line(incident, "summary")
    if num is None and not title:
        return unannounced(key, "no incident number or title")
    line = f"{P} {verb}" + (f" #{num}" if num is not None else "")
    service = text(incident, "service", "summary", limit=NAME)
    if service:
        line += f" on {service}"
    if priority:
        tags = [text(incident, "priority", "summary", limit=20)]
        urgency = text(incident, "urgency", limit=20)
        tags.append(f"{urgency} urgency" if urgency else "")
        shown = ", ".join(t for t in tags if t)
        if shown:
            line += f" ({shown})"
    agent = text(ev, "agent", "summary", limit=NAME)
    if by_agent and agent:
        line += f" by {agent}"
    if title:
        line += f": {quoted(title)}"
    if assigned:
        names = _assignees(incident)
        if names:
            line += f", assigned to {listing(names)}"
    return [Announcement(join(line, url(incident, "html_url")))]
