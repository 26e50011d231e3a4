"""Log line parsers, table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from masterchief.sources.logs.parse import make_parser

CASES: list[tuple[str, str | None, str, dict[str, Any], str | None]] = [
    # format, pattern, line, expected fields (subset), expected error (substring)
    ("plain", None, "hello world", {"message": "hello world"}, None),
    ("plain", None, "", {"message": ""}, None),
    ("json", None, '{"level": "error", "n": 3}', {"level": "error", "n": 3}, None),
    ("json", None, '{"level": ', {"message": '{"level": '}, "invalid JSON"),
    ("json", None, "[1, 2]", {"message": "[1, 2]"}, "not an object"),
    ("json", None, "plain text", {"message": "plain text"}, "invalid JSON"),
    (
        "syslog",
        None,
        "<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed for lonvick",
        {
            "rfc": 3164,
            "facility": "auth",
            "severity": "crit",
            "pri": 34,
            "timestamp": "Oct 11 22:14:15",
            "hostname": "mymachine",
            "appname": "su",
            "procid": "123",
            "message": "'su root' failed for lonvick",
        },
        None,
    ),
    (
        "syslog",
        None,
        "Feb  3 04:05:06 host sshd: Accepted key",
        {"rfc": 3164, "timestamp": "Feb  3 04:05:06", "appname": "sshd", "procid": None},
        None,
    ),
    (
        "syslog",
        None,
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47"
        ' [exampleSDID@32473 iut="3" eventSource="App"] An application event',
        {
            "rfc": 5424,
            "facility": "local4",
            "severity": "notice",
            "version": 1,
            "timestamp": "2003-10-11T22:14:15.003Z",
            "hostname": "mymachine.example.com",
            "appname": "evntslog",
            "procid": None,
            "msgid": "ID47",
            "structured_data": '[exampleSDID@32473 iut="3" eventSource="App"]',
            "message": "An application event",
        },
        None,
    ),
    (
        "syslog",
        None,
        "<13>1 - - - - - -",
        {"rfc": 5424, "timestamp": None, "hostname": None, "message": ""},
        None,
    ),
    ("syslog", None, "<999>1 - - - - - - x", {"rfc": 5424}, "out of range"),
    ("syslog", None, "not syslog at all", {"message": "not syslog at all"}, "not an RFC"),
    (
        "regex",
        r"^(?P<ts>\S+) (?P<level>\w+) (?P<msg>.*)$",
        "2026-01-01T00:00:00Z ERROR disk full",
        {"ts": "2026-01-01T00:00:00Z", "level": "ERROR", "msg": "disk full"},
        None,
    ),
    ("regex", r"^(?P<level>[A-Z]+):", "lowercase", {"message": "lowercase"}, "does not match"),
]


@pytest.mark.parametrize(("fmt", "pattern", "line", "fields", "error"), CASES)
def test_parse(
    fmt: str, pattern: str | None, line: str, fields: dict[str, Any], error: str | None
) -> None:
    parsed = make_parser(fmt, pattern)(line)
    assert {k: parsed.fields.get(k) for k in fields} == fields
    if error is None:
        assert parsed.error is None
    else:
        assert parsed.error is not None and error in parsed.error


def test_unknown_format_and_missing_pattern() -> None:
    with pytest.raises(ValueError, match="unknown"):
        make_parser("xml")
    with pytest.raises(ValueError, match="pattern"):
        make_parser("regex")
