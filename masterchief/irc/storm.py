"""Alert storms folded into summary lines: pure logic, no I/O.

How this works
--------------
When a channel's queued alert announcements would take too long to send one
by one, the outbox (``outbox.py``) folds them with ``fold()`` into a few
lines such as::

    37 alerts firing: HighCPU ×20 (web-1..web-20), DiskFull ×17 (db-1, db-3, ... +12)

1. Every announcement becomes ``AlertNote``s (``notes_from_meta``): one per
   alert it carries, identified by its Alertmanager fingerprint, else by
   alertname and instance. The formatter's ``meta`` gives the alertname,
   status, severity, instances and fingerprints (index-aligned), optionally a
   per-alert list ``alerts`` and a ``truncated`` count of alerts Alertmanager
   left out of the notification.
2. Notes are reduced in arrival order; the newest state of each alert wins.
   An alert first seen firing and last seen resolved inside the folded window
   collapses into one "fired and resolved" entry: it is neither dropped nor
   counted twice. One first seen resolved stays "resolved" (it fired before
   the window); one that resolved and fired again is "firing".
3. Each outcome (firing, fired and resolved, resolved) is one section with an
   exact count; inside it one group per alertname with an exact ``×N``
   (severity order, then size, then name); inside that the distinct
   instances in natural order, runs of consecutive numbers written as ranges
   (``web-1..web-20``, three or more in a run).
4. Lines must fit ``max_bytes`` (the caller's text budget for one IRC line):
   a group that does not fit continues on the next line as
   ``HighCPU (cont.) (...)`` and a section over several lines is numbered
   ``(1/3)``. Nothing is cut off. To keep a summary within ``max_lines``,
   each group names at most N items, the largest N that fits (found by
   bisection), followed by ``... +K``, K the exact number of alerts of that
   group not named. Alerts without an instance are only ever counted.

So every alert is represented: named, inside a range, or in a ``+K`` count,
and each ``×N`` equals its named alerts plus its count. ``parse_summary`` and
``expand_range`` read the format back (tests and the storm benchmark use them).
"""  # noqa: RUF002 (the multiplication sign is the format)

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "OUTCOMES",
    "AlertNote",
    "Outcome",
    "SummaryGroup",
    "SummaryLine",
    "compress",
    "expand_range",
    "fold",
    "natural_key",
    "notes_from_meta",
    "parse_summary",
]

Status = Literal["firing", "resolved"]
Outcome = Literal["firing", "fired and resolved", "resolved"]
TIMES: Final = "\u00d7"  # the multiplication sign in "HighCPU ×20"  # noqa: RUF003
OUTCOMES: Final[tuple[Outcome, ...]] = ("firing", "fired and resolved", "resolved")

_MIN_RUN: Final = 3  # shortest run written as a range
_MAX_NAME_BYTES: Final = 80  # one alertname or instance; longer ones are shortened
_MIN_BUDGET: Final = 160  # below this a summary line cannot hold a header and a group
_SEVERITY_ORDER: Final = {"critical": 0, "page": 0, "error": 1, "high": 1, "warning": 2}
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True, slots=True)
class AlertNote:
    """One alert's state as one announcement reported it."""

    key: str  # identity across announcements
    alertname: str
    instance: str | None
    status: Status
    severity: str | None = None


def _clip(text: str) -> str:
    """Shorten a name to _MAX_NAME_BYTES on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= _MAX_NAME_BYTES:
        return text
    return data[: _MAX_NAME_BYTES - 3].decode("utf-8", "ignore") + "..."


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())  # no spaces or line breaks inside a name
    return _clip(text) if text else None


def _status(value: Any, default: Status) -> Status:
    return "resolved" if value == "resolved" else ("firing" if value == "firing" else default)


def notes_from_meta(
    meta: Mapping[str, Any] | None, *, fold_key: str | None, ref: str
) -> list[AlertNote]:
    """The alerts one announcement carries; never empty.

    *ref* identifies the announcement (e.g. its outbox id) for alerts that
    have neither a fingerprint nor an instance: each of those counts once.
    """
    meta = meta if isinstance(meta, Mapping) else {}
    name = _str_or_none(meta.get("alertname")) or _str_or_none(fold_key) or "alert"
    status = _status(meta.get("status"), "firing")
    severity = _str_or_none(meta.get("severity"))
    notes: list[AlertNote] = []

    def add(
        instance: str | None, fingerprint: str | None, st: Status, alertname: str, sev: str | None
    ) -> None:
        if fingerprint:
            key = f"fp:{fingerprint}"
        elif instance is not None:
            key = f"ai:{alertname}\0{instance}"
        else:
            key = f"ref:{ref}#{len(notes)}"
        notes.append(AlertNote(key, alertname, instance, st, sev))

    alerts = meta.get("alerts")
    if isinstance(alerts, Sequence) and not isinstance(alerts, str) and alerts:
        for item in alerts:
            item = item if isinstance(item, Mapping) else {}
            add(
                _str_or_none(item.get("instance")),
                _str_or_none(item.get("fingerprint")),
                _status(item.get("status"), status),
                _str_or_none(item.get("alertname")) or name,
                _str_or_none(item.get("severity")) or severity,
            )
    else:
        instances = _list(meta.get("instances"))
        prints = _list(meta.get("fingerprints"))
        if instances:
            aligned = len(prints) == len(instances)
            for i, inst in enumerate(instances):
                add(_str_or_none(inst), prints[i] if aligned else None, status, name, severity)
        elif prints:
            for fp in prints:
                add(None, fp, status, name, severity)
    truncated = meta.get("truncated")
    if isinstance(truncated, int) and not isinstance(truncated, bool) and truncated > 0:
        for _ in range(min(truncated, 100_000)):
            add(None, None, status, name, severity)
    if not notes:
        add(None, None, status, name, severity)
    return notes


def _list(value: Any) -> list[str]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [s for s in (_str_or_none(v) for v in value) if s is not None]
    return []


# --------------------------------------------------------------------------- instances


def natural_key(text: str) -> tuple[tuple[Any, ...], str]:
    """Sort key putting ``web-2`` before ``web-10``."""
    parts = _DIGITS.split(text)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), text


def _step(a: list[str], b: list[str]) -> int | None:
    """The index of the one number that grows by 1 from *a* to *b*, else None."""
    if len(a) != len(b):
        return None
    found: int | None = None
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == y:
            continue
        if i % 2 == 0 or found is not None:
            return None
        if int(y) != int(x) + 1 or not _same_style(x, y):
            return None
        found = i
    return found


def _same_style(x: str, y: str) -> bool:
    """Both unpadded (``9``, ``10``) or both zero-padded to one width (``09``, ``10``)."""
    plain = str(int(x)) == x and str(int(y)) == y
    return plain or len(x) == len(y)


@dataclass(frozen=True, slots=True)
class _Item:
    text: str
    covers: int  # distinct instances it stands for


def compress(instances: Sequence[str]) -> list[_Item]:
    """Distinct instances in natural order, runs of 3+ consecutive numbers as ranges."""
    names = sorted(set(instances), key=natural_key)
    split = [_DIGITS.split(n) for n in names]
    items: list[_Item] = []
    i = 0
    while i < len(names):
        j, at = i, None
        while j + 1 < len(names):
            step = _step(split[j], split[j + 1])
            if step is None or (at is not None and step != at):
                break
            at = step
            j += 1
        run = j - i + 1
        if run >= _MIN_RUN:
            items.append(_Item(f"{names[i]}..{names[j]}", run))
            i = j + 1
        else:
            items.append(_Item(names[i], 1))
            i += 1
    return items


def expand_range(first: str, last: str) -> list[str]:
    """The instances ``first..last`` stands for; ``ValueError`` if it is no range."""
    a, b = _DIGITS.split(first), _DIGITS.split(last)
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
    if len(a) != len(b) or len(diff) != 1 or diff[0] % 2 == 0:
        raise ValueError(f"{first}..{last} is not a range of one number")
    at = diff[0]
    lo, hi = int(a[at]), int(b[at])
    if hi < lo:
        raise ValueError(f"{first}..{last} runs backwards")
    width = len(a[at]) if str(lo) != a[at] else 0
    out = []
    for n in range(lo, hi + 1):
        a[at] = str(n).zfill(width)
        out.append("".join(a))
    return out


# --------------------------------------------------------------------------- folding


@dataclass(slots=True)
class _Alert:
    alertname: str
    instance: str | None
    first: Status
    last: Status
    severity: str | None

    @property
    def outcome(self) -> Outcome:
        if self.last == "firing":
            return "firing"
        return "fired and resolved" if self.first == "firing" else "resolved"


@dataclass(slots=True)
class _Group:
    alertname: str
    count: int
    items: list[_Item]
    rank: int


def _reduce(notes: Sequence[AlertNote]) -> dict[str, _Alert]:
    alerts: dict[str, _Alert] = {}
    for note in notes:
        seen = alerts.get(note.key)
        if seen is None:
            instance = _clip(note.instance) if note.instance is not None else None
            alerts[note.key] = _Alert(
                _clip(note.alertname), instance, note.status, note.status, note.severity
            )
        else:
            seen.last = note.status
            seen.severity = note.severity or seen.severity
            if seen.instance is None and note.instance is not None:
                seen.instance = _clip(note.instance)
    return alerts


def _groups(alerts: Sequence[_Alert]) -> list[_Group]:
    by_name: dict[str, list[_Alert]] = {}
    for a in alerts:
        by_name.setdefault(a.alertname, []).append(a)
    groups = []
    for name, members in by_name.items():
        instances = [a.instance for a in members if a.instance is not None]
        rank = min(_SEVERITY_ORDER.get((a.severity or "").lower(), 3) for a in members)
        groups.append(_Group(name, len(members), compress(instances), rank))
    groups.sort(key=lambda g: (g.rank, -g.count, natural_key(g.alertname)))
    return groups


def fold(notes: Sequence[AlertNote], *, max_bytes: int, max_lines: int = 10) -> list[str]:
    """Summary lines representing every alert in *notes* (see the module doc).

    Each line's UTF-8 length is at most *max_bytes*. The summary takes at
    most *max_lines* lines unless even bare counts per alertname (one section
    per outcome) need more; then it names what fits in that many.
    """
    if max_bytes < _MIN_BUDGET:
        raise ValueError(f"a summary line needs at least {_MIN_BUDGET} bytes, got {max_bytes}")
    if not notes:
        return []
    alerts = _reduce(notes)
    sections: list[tuple[Outcome, int, list[_Group]]] = []
    for outcome in OUTCOMES:
        members = [a for a in alerts.values() if a.outcome == outcome]
        if members:
            sections.append((outcome, len(members), _groups(members)))

    def render(limit: int | None) -> list[str]:
        return [
            line
            for outcome, total, groups in sections
            for line in _section(outcome, total, groups, limit, max_bytes)
        ]

    lines = render(None)
    if len(lines) <= max_lines:
        return lines
    # The most items per group that still fits (more items never take fewer
    # lines); bare counts when nothing fits, and then as few lines as they need.
    best = render(0)
    max_lines = max(max_lines, len(best))
    lo, hi = 0, max(len(g.items) for _, _, groups in sections for g in groups)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        attempt = render(mid)
        if len(attempt) <= max_lines:
            lo, best = mid, attempt
        else:
            hi = mid - 1
    return best


def _blen(text: str) -> int:
    return len(text.encode("utf-8"))


def _tokens(group: _Group, limit: int | None, room: int) -> list[str]:
    """The items a group shows under *limit*, plus ``... +K`` for the rest.

    An item that could not fit a line of *room* bytes even alone (a range of
    two very long names) is counted in ``+K`` instead.
    """
    shown = group.items if limit is None else group.items[:limit]
    longest = room - _blen(f"{group.alertname} (cont.) ()")
    shown = [i for i in shown if _blen(i.text) <= longest]
    hidden = group.count - sum(i.covers for i in shown)
    tokens = [i.text for i in shown]
    if tokens and hidden:
        tokens.append(f"... +{hidden}")
    return tokens


def _section(
    outcome: Outcome, total: int, groups: list[_Group], limit: int | None, max_bytes: int
) -> list[str]:
    head = f"{total} alert{'' if total == 1 else 's'} {outcome}"
    reserve = 0
    while True:
        bodies = _pack(groups, limit, max_bytes - _blen(head) - reserve - 2)
        n = len(bodies)
        need = 0 if n == 1 else _blen(f" ({n}/{n})")
        if need <= reserve:
            break
        reserve = need
    if n == 1:
        return [f"{head}: {bodies[0]}"]
    return [f"{head} ({i}/{n}): {body}" for i, body in enumerate(bodies, 1)]


def _pack(groups: list[_Group], limit: int | None, room: int) -> list[str]:
    """Lay the groups out in lines of at most *room* bytes, splitting only
    between items."""
    lines: list[str] = []
    cur = ""

    def fits(extra: str) -> bool:
        return _blen(cur + (", " if cur else "") + extra) <= room

    def put(piece: str) -> None:
        nonlocal cur
        cur = cur + (", " if cur else "") + piece

    def newline() -> None:
        nonlocal cur
        if cur:
            lines.append(cur)
        cur = ""

    for group in groups:
        head = f"{group.alertname} {TIMES}{group.count}"
        tokens = _tokens(group, limit, room) if limit != 0 else []
        whole = f"{head} ({', '.join(tokens)})" if tokens else head
        if fits(whole):
            put(whole)
            continue
        if _blen(whole) <= room or not tokens:
            newline()
            put(whole)
            continue
        # Longer than a line: continue it on the next line(s).
        opening = f"{head} ("
        if not fits(opening + tokens[0] + ")"):
            newline()
        part: list[str] = []
        for tok in tokens:
            if fits(opening + ", ".join([*part, tok]) + ")"):
                part.append(tok)
                continue
            if part:
                put(opening + ", ".join(part) + ")")
            newline()
            opening, part = f"{group.alertname} (cont.) (", [tok]
        put(opening + ", ".join(part) + ")")
    newline()
    return lines


# --------------------------------------------------------------------------- reading back

_LINE = re.compile(
    r"^(?:\[delayed [^\]]*\] )?(?P<total>\d+) alerts? "
    r"(?P<outcome>firing|fired and resolved|resolved)"
    r"(?: \((?P<page>\d+)/(?P<pages>\d+)\))?: (?P<body>.+)$"
)
_GROUP = re.compile(
    r"^(?P<name>\S+) (?:" + TIMES + r"(?P<count>\d+)|\(cont\.\))(?: \((?P<items>.*)\))?$"
)


@dataclass(frozen=True, slots=True)
class SummaryGroup:
    """One alertname's part of a summary line; ``count`` is None on ``(cont.)``."""

    alertname: str
    count: int | None
    names: tuple[str, ...] = ()  # instances named, ranges expanded
    more: int = 0  # the ``+K``


@dataclass(frozen=True, slots=True)
class SummaryLine:
    total: int
    outcome: Outcome
    page: int = 1
    pages: int = 1
    groups: tuple[SummaryGroup, ...] = field(default_factory=tuple)


def _split_top(body: str) -> list[str]:
    """Split on ", " outside parentheses."""
    out: list[str] = []
    depth = start = i = 0
    while i < len(body):
        c = body[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and body.startswith(", ", i):
            out.append(body[start:i])
            start = i + 2
            i += 1
        i += 1
    out.append(body[start:])
    return out


def parse_summary(text: str) -> SummaryLine | None:
    """Read a line ``fold()`` wrote (with or without a ``[delayed ...]`` prefix)."""
    m = _LINE.match(text)
    if m is None:
        return None
    groups = []
    for piece in _split_top(m["body"]):
        g = _GROUP.match(piece)
        if g is None:
            return None
        names: list[str] = []
        more = 0
        for item in g["items"].split(", ") if g["items"] else []:
            if item.startswith("... +") or (item.startswith("+") and item[1:].isdigit()):
                more += int(item.rsplit("+", 1)[1])
            elif ".." in item:
                first, _, last = item.partition("..")
                try:
                    names.extend(expand_range(first, last))
                except ValueError:
                    names.append(item)
            else:
                names.append(item)
        count = int(g["count"]) if g["count"] is not None else None
        groups.append(SummaryGroup(g["name"], count, tuple(names), more))
    outcome: Outcome = m["outcome"]  # type: ignore[assignment]
    return SummaryLine(
        int(m["total"]),
        outcome,
        int(m["page"] or 1),
        int(m["pages"] or 1),
        tuple(groups),
    )
