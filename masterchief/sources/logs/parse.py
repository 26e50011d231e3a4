"""Log line parsers: one line of text in, a dict of fields (or an error) out.

Pure functions, no I/O.  ``make_parser(format, pattern)`` returns a callable
for one ``logs:`` entry.  A line that does not parse is never dropped: it
comes back with ``error`` set and whatever fields could be salvaged (at least
``message``, the raw line), so a handler still sees it.

Formats:

- ``json``: one JSON object per line.
- ``syslog``: RFC 5424 (``<PRI>1 TS HOST APP PROCID MSGID SD MSG``) or
  RFC 3164 (``<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG``, the ``<PRI>`` being
  optional as in files written by rsyslog/syslog-ng).
- ``regex``: the named groups of ``pattern`` (``re.search``).
- ``plain``: ``{"message": line}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Parsed", "Parser", "make_parser", "parse_json", "parse_plain", "parse_syslog"]


@dataclass(frozen=True, slots=True)
class Parsed:
    """The fields of one line; ``error`` says why it did not parse (else None)."""

    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


Parser = Callable[[str], Parsed]

_FACILITIES = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
]
_SEVERITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]

_RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<timestamp>\S+) (?P<hostname>\S+)"
    r" (?P<appname>\S+) (?P<procid>\S+) (?P<msgid>\S+)"
    r" (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<message>.*))?\Z",
    re.DOTALL,
)
_RFC3164 = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?"
    r"(?P<timestamp>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) (?P<hostname>\S+)"
    r" (?:(?P<tag>[^:\[\s]+)(?:\[(?P<procid>[^\]]*)\])?: ?)?(?P<message>.*)\Z",
    re.DOTALL,
)


def parse_plain(line: str) -> Parsed:
    return Parsed({"message": line})


def parse_json(line: str) -> Parsed:
    try:
        value = json.loads(line)
    except ValueError as exc:
        return Parsed({"message": line}, f"invalid JSON: {exc}")
    if not isinstance(value, dict):
        return Parsed({"message": line}, f"JSON is a {type(value).__name__}, not an object")
    return Parsed(value)


def _pri(fields: dict[str, Any]) -> str | None:
    """Split ``pri`` into facility and severity; an error text when out of range."""
    raw = fields.pop("pri", None)
    if raw is None:
        return None
    pri = int(raw)
    if pri > 191:
        return f"syslog PRI {pri} out of range"
    fields["facility"] = _FACILITIES[pri >> 3]
    fields["severity"] = _SEVERITIES[pri & 7]
    fields["pri"] = pri
    return None


def _nil(value: str | None) -> str | None:
    return None if value in (None, "-") else value


def parse_syslog(line: str) -> Parsed:
    m = _RFC5424.match(line)
    if m is not None:
        g = m.groupdict()
        fields: dict[str, Any] = {
            "rfc": 5424,
            "pri": g["pri"],
            "version": int(g["version"]),
            "timestamp": _nil(g["timestamp"]),
            "hostname": _nil(g["hostname"]),
            "appname": _nil(g["appname"]),
            "procid": _nil(g["procid"]),
            "msgid": _nil(g["msgid"]),
            "structured_data": _nil(g["sd"]),
            "message": (g["message"] or "").removeprefix("\ufeff"),
        }
        error = _pri(fields)
        return Parsed(fields, error)
    m = _RFC3164.match(line)
    if m is not None:
        g = m.groupdict()
        fields = {
            "rfc": 3164,
            "pri": g["pri"],
            "timestamp": g["timestamp"],
            "hostname": g["hostname"],
            "appname": g["tag"],
            "procid": g["procid"],
            "message": g["message"],
        }
        error = _pri(fields)
        return Parsed(fields, error)
    return Parsed({"message": line}, "not an RFC 5424 or RFC 3164 syslog line")


def _regex_parser(pattern: str) -> Parser:
    compiled = re.compile(pattern)

    def parse(line: str) -> Parsed:
        m = compiled.search(line)
        if m is None:
            return Parsed({"message": line}, "line does not match the pattern")
        return Parsed(m.groupdict())

    return parse


def make_parser(format: str, pattern: str | None = None) -> Parser:
    """The parser for a ``logs:`` entry's ``format`` (and ``pattern``)."""
    if format == "json":
        return parse_json
    if format == "syslog":
        return parse_syslog
    if format == "plain":
        return parse_plain
    if format == "regex":
        if not pattern:
            raise ValueError("format regex needs a pattern")
        return _regex_parser(pattern)
    raise ValueError(f"unknown log format {format!r}")
