"""Senders with no standard shape: generic webhooks (``generic/<name>``) and
REST pollers (``rest`` Events, plus the pollers' ``rest.failing`` /
``rest.recovered`` notices)."""

from __future__ import annotations

from collections.abc import Mapping

from .common import (
    NAME,
    Announcement,
    clean,
    compact_json,
    duration,
    integer,
    join,
    number,
    text,
    unannounced,
    url,
)

__all__ = ["format_generic", "format_rest", "format_rest_status"]

BODY = 300  # characters of message text or compact JSON shown

_TEXT_KEYS = ("text", "message", "summary", "title")


def _label(name: str, fallback: str) -> str:
    return clean(name, NAME) or fallback


def format_generic(name: str, payload: object) -> list[Announcement]:
    """``[<name>] <text>`` when the payload has a text/message/summary/title
    string (plus its ``url``), else ``[<name>] <compact JSON>``."""
    label = _label(name, "generic")
    if payload is None:
        return unannounced(f"generic/{name}", "empty payload")
    if isinstance(payload, Mapping):
        for key in _TEXT_KEYS:
            said = text(payload, key, limit=BODY)
            if said:
                return [Announcement(join(f"[{label}] {said}", url(payload, "url")))]
    return [Announcement(f"[{label}] {compact_json(payload, BODY)}")]


def format_rest(name: str, data: object, *, changed: bool = True) -> list[Announcement]:
    """``[<name>] changed: <compact JSON>`` (``changed=False``, for pollers
    that emit every poll: ``[<name>] <compact JSON>``)."""
    label = _label(name, "rest")
    return [Announcement(f"[{label}] {'changed: ' if changed else ''}{compact_json(data, BODY)}")]


def format_rest_status(event: str, payload: object) -> list[Announcement]:
    """A poller's one-time notices: ``rest.failing`` and ``rest.recovered``."""
    if not isinstance(payload, Mapping):
        return unannounced(event, "payload is not a JSON object")
    label = _label(text(payload, "name", limit=NAME), "rest")
    kind = event.strip().lower()
    if kind == "rest.failing":
        reason = text(payload, "reason", limit=80) or "unreachable"
        retry = duration(number(payload, "retry_in_s"))
        line = f"[{label}] polling is failing: {reason}"
        return [Announcement(line + (f" (retrying in {retry})" if retry else ""))]
    if kind == "rest.recovered":
        down = duration(number(payload, "down_s"))
        failures = integer(payload, "failures")
        line = f"[{label}] polling recovered" + (f" after {down}" if down else "")
        if failures:
            line += f" ({failures} failed polls)" if failures != 1 else " (1 failed poll)"
        return [Announcement(line)]
    return []
