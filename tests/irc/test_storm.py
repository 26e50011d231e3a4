"""Alert-storm folding (masterchief/irc/storm.py): tables of cases, no I/O."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import pytest

from masterchief.irc.storm import (
    AlertNote,
    Outcome,
    compress,
    expand_range,
    fold,
    natural_key,
    notes_from_meta,
    parse_summary,
)

X = "\u00d7"  # the multiplication sign of "HighCPU xN"


def note(
    name: str, instance: str | None, status: str = "firing", severity: str | None = None
) -> AlertNote:
    key = f"ai:{name}\0{instance}"
    return AlertNote(key, name, instance, status, severity)  # type: ignore[arg-type]


def check_represented(
    lines: list[str], expected: dict[tuple[Outcome, str], list[str | None]], max_bytes: int
) -> None:
    """Every expected alert is named, in a range, or in a +K count; counts exact."""
    named: dict[tuple[str, str], list[str]] = defaultdict(list)
    more: Counter[tuple[str, str]] = Counter()
    declared: Counter[tuple[str, str]] = Counter()
    bare: set[tuple[str, str]] = set()  # "Name xN" alone: the count stands for all
    totals: dict[str, int] = {}
    for line in lines:
        assert len(line.encode()) <= max_bytes, line
        parsed = parse_summary(line)
        assert parsed is not None, line
        assert totals.setdefault(parsed.outcome, parsed.total) == parsed.total
        for g in parsed.groups:
            key = (parsed.outcome, g.alertname)
            named[key].extend(g.names)
            more[key] += g.more
            if g.count is not None:
                declared[key] += g.count
                if not g.names and not g.more:
                    bare.add(key)
    want = {k: v for k, v in expected.items() if v}
    assert set(declared) == set(want)
    for key, instances in want.items():
        assert declared[key] == len(instances), key
        assert len(named[key]) == len(set(named[key])), f"{key}: a name twice"
        assert set(named[key]) <= {i for i in instances if i is not None}, key
        if key in bare:
            assert not named[key] and not more[key], key
        else:
            assert len(named[key]) + more[key] == declared[key], key
    for outcome, total in totals.items():
        assert total == sum(len(v) for (o, _), v in want.items() if o == outcome)


# --------------------------------------------------------------------------- instances


@pytest.mark.parametrize(
    ("instances", "items"),
    [
        ([f"web-{i}" for i in range(1, 21)], ["web-1..web-20"]),
        (["web-1", "web-2"], ["web-1", "web-2"]),
        (["web-1", "web-2", "web-3", "web-5"], ["web-1..web-3", "web-5"]),
        (["db-1", "db-3", "db-5", "db-6", "db-7"], ["db-1", "db-3", "db-5..db-7"]),
        (["web-10", "web-9", "web-8"], ["web-8..web-10"]),  # natural order
        (["node01", "node02", "node03"], ["node01..node03"]),
        (["node09", "node10", "node11"], ["node09..node11"]),
        (["n8", "n9", "n010"], ["n8", "n9", "n010"]),  # padding changes: no range
        (["10.0.0.1:9100", "10.0.0.2:9100", "10.0.0.3:9100"], ["10.0.0.1:9100..10.0.0.3:9100"]),
        (["a1b1", "a2b2", "a3b3"], ["a1b1", "a2b2", "a3b3"]),  # two numbers move
        (["r1-1", "r1-2", "r2-2"], ["r1-1", "r1-2", "r2-2"]),  # the moving number changes
        (["web-1", "web-1", "web-2", "web-3"], ["web-1..web-3"]),  # distinct names
        (["cache-a", "web-1", "api"], ["api", "cache-a", "web-1"]),
        (
            ["web", "web-1", "web-2", "web-3", "web-1a"],
            ["web", "web-1", "web-1a", "web-2", "web-3"],
        ),
        ([], []),
    ],
)
def test_compress(instances: list[str], items: list[str]) -> None:
    got = compress(instances)
    assert [i.text for i in got] == items
    assert sum(i.covers for i in got) == len(set(instances))


@pytest.mark.parametrize(
    ("first", "last", "expanded"),
    [
        ("web-1", "web-3", ["web-1", "web-2", "web-3"]),
        ("node09", "node11", ["node09", "node10", "node11"]),
        ("10.0.0.8:9100", "10.0.0.10:9100", ["10.0.0.8:9100", "10.0.0.9:9100", "10.0.0.10:9100"]),
    ],
)
def test_expand_range(first: str, last: str, expanded: list[str]) -> None:
    assert expand_range(first, last) == expanded


@pytest.mark.parametrize(
    ("first", "last"), [("web-3", "web-1"), ("a1b1", "a2b2"), ("web-1", "db-2"), ("x", "y")]
)
def test_expand_range_refuses(first: str, last: str) -> None:
    with pytest.raises(ValueError):
        expand_range(first, last)


def test_natural_key() -> None:
    names = ["web-10", "web-2", "db-1", "web-1", "web-02"]
    assert sorted(names, key=natural_key) == ["db-1", "web-1", "web-02", "web-2", "web-10"]


# --------------------------------------------------------------------------- meta


@pytest.mark.parametrize(
    ("meta", "fold_key", "expected"),
    [
        (
            {
                "alertname": "HighCPU",
                "status": "firing",
                "severity": "critical",
                "instances": ["web-1", "web-2"],
                "fingerprints": ["f1", "f2"],
            },
            "HighCPU",
            [
                ("fp:f1", "HighCPU", "web-1", "firing", "critical"),
                ("fp:f2", "HighCPU", "web-2", "firing", "critical"),
            ],
        ),
        (  # fingerprints not aligned with instances: identity by name
            {
                "alertname": "HighCPU",
                "status": "resolved",
                "instances": ["web-1"],
                "fingerprints": ["a", "b"],
            },
            None,
            [("ai:HighCPU\0web-1", "HighCPU", "web-1", "resolved", None)],
        ),
        (  # per-alert detail wins over the notification's status
            {
                "alertname": "Disk",
                "status": "firing",
                "alerts": [
                    {"instance": "db-1", "status": "resolved", "fingerprint": "z"},
                    {"instance": "db-2"},
                ],
            },
            None,
            [
                ("fp:z", "Disk", "db-1", "resolved", None),
                ("ai:Disk\0db-2", "Disk", "db-2", "firing", None),
            ],
        ),
        (  # truncatedAlerts: counted, unnamed
            {"alertname": "Disk", "instances": ["db-1"], "truncated": 2},
            None,
            [
                ("ai:Disk\0db-1", "Disk", "db-1", "firing", None),
                ("ref:7#1", "Disk", None, "firing", None),
                ("ref:7#2", "Disk", None, "firing", None),
            ],
        ),
        (None, "Watchdog", [("ref:7#0", "Watchdog", None, "firing", None)]),
        ({"status": "weird"}, None, [("ref:7#0", "alert", None, "firing", None)]),
        ({"alertname": "A", "fingerprints": ["q"]}, None, [("fp:q", "A", None, "firing", None)]),
        (  # names are one word, whatever the payload held
            {"alertname": "High CPU\r\n", "instances": ["web 1"]},
            None,
            [("ai:High CPU\0web 1", "High CPU", "web 1", "firing", None)],
        ),
    ],
)
def test_notes_from_meta(
    meta: dict[str, Any] | None, fold_key: str | None, expected: list[tuple[Any, ...]]
) -> None:
    got = notes_from_meta(meta, fold_key=fold_key, ref="7")
    assert [(n.key, n.alertname, n.instance, n.status, n.severity) for n in got] == expected


# --------------------------------------------------------------------------- fold


def firing(name: str, instances: list[str]) -> list[AlertNote]:
    return [note(name, i) for i in instances]


@pytest.mark.parametrize(
    ("notes", "lines"),
    [
        (
            firing("HighCPU", [f"web-{i}" for i in range(1, 21)])
            + firing("DiskFull", ["db-1", "db-3", *(f"db-{i}" for i in range(5, 20))]),
            [
                f"37 alerts firing: HighCPU {X}20 (web-1..web-20), DiskFull {X}17 (db-1, db-3, db-5..db-19)"
            ],
        ),
        (firing("HighCPU", ["web-1"]), [f"1 alert firing: HighCPU {X}1 (web-1)"]),
        (  # fired then resolved inside the window: one collapsed entry
            [
                note("HighCPU", "web-1"),
                note("HighCPU", "web-1", "resolved"),
                note("HighCPU", "web-2"),
            ],
            [
                f"1 alert firing: HighCPU {X}1 (web-2)",
                f"1 alert fired and resolved: HighCPU {X}1 (web-1)",
            ],
        ),
        (  # resolved, fired again: firing; only resolved: resolved
            [note("A", "x-1", "resolved"), note("A", "x-1"), note("B", "y-1", "resolved")],
            [f"1 alert firing: A {X}1 (x-1)", f"1 alert resolved: B {X}1 (y-1)"],
        ),
        (  # repeated notifications of one alert count once
            firing("A", ["x-1", "x-2"]) + firing("A", ["x-1", "x-2", "x-3"]),
            [f"3 alerts firing: A {X}3 (x-1..x-3)"],
        ),
        (  # severity first, then size, then name
            [
                note("Small", "s-1", severity="critical"),
                *firing("Big", ["b-1", "b-2"]),
                note("Alpha", "a-1"),
            ],
            [f"4 alerts firing: Small {X}1 (s-1), Big {X}2 (b-1, b-2), Alpha {X}1 (a-1)"],
        ),
        (  # no instance: counted
            [
                note("Watchdog", None),
                AlertNote("ref:2#0", "Watchdog", None, "firing"),
                note("Disk", "db-1"),
                AlertNote("ref:3#0", "Disk", None, "firing"),
            ],
            [f"4 alerts firing: Disk {X}2 (db-1, ... +1), Watchdog {X}2"],
        ),
    ],
)
def test_fold(notes: list[AlertNote], lines: list[str]) -> None:
    assert fold(notes, max_bytes=400) == lines


def test_fold_nothing_and_too_small_a_budget() -> None:
    assert fold([], max_bytes=400) == []
    with pytest.raises(ValueError, match="at least"):
        fold(firing("A", ["x"]), max_bytes=100)


def test_long_summary_is_split_not_truncated() -> None:
    # 120 scattered instances do not fit one line: the group continues.
    names = [f"host-{i * 7}.example.com" for i in range(120)]
    lines = fold(firing("HighCPU", names) + firing("Disk", ["db-1"]), max_bytes=300, max_lines=50)
    assert len(lines) > 5
    assert lines[0].startswith(
        f"121 alerts firing (1/{len(lines)}): HighCPU {X}120 (host-0.example.com, "
    )
    assert lines[1].startswith(f"121 alerts firing (2/{len(lines)}): HighCPU (cont.) (host-")
    assert lines[-1].endswith(f", Disk {X}1 (db-1)")
    assert "..." not in "".join(lines).replace("..host", "")  # all named, no "+K"
    check_represented(lines, {("firing", "HighCPU"): names, ("firing", "Disk"): ["db-1"]}, 300)


def test_max_lines_replaces_names_by_exact_counts() -> None:
    names = [f"host-{i * 7}.example.com" for i in range(300)]
    lines = fold(
        firing("HighCPU", names[:200]) + firing("Disk", names[200:]), max_bytes=300, max_lines=3
    )
    assert len(lines) <= 3
    assert "... +" in " ".join(lines)
    check_represented(
        lines, {("firing", "HighCPU"): names[:200], ("firing", "Disk"): names[200:]}, 300
    )


def test_the_page_number_widens_without_breaking_the_limit() -> None:
    names = [f"instance-number-{i * 3}" for i in range(400)]
    lines = fold(firing("A", names), max_bytes=170, max_lines=1000)
    assert len(lines) >= 10
    assert lines[9].startswith(f"400 alerts firing (10/{len(lines)}): A (cont.) (")
    check_represented(lines, {("firing", "A"): names}, 170)


def test_multibyte_names_stay_within_the_byte_budget() -> None:
    names = [f"サーバー-{i * 2}" for i in range(80)]
    lines = fold(firing("Ошибка", names), max_bytes=200, max_lines=100)
    check_represented(lines, {("firing", "Ошибка"): names}, 200)


def test_overlong_names_are_shortened_or_counted() -> None:
    long = "x" * 300
    lines = fold(
        [
            note("A", long + "1"),
            note("A", long + "2"),
            note("A", long + "3"),
            note("B" * 200, "b-1"),
        ],
        max_bytes=160,
    )
    for line in lines:
        assert len(line.encode()) <= 160
        assert parse_summary(line) is not None
    assert sum(g.count or 0 for ln in lines for g in parse_summary(ln).groups) == 4  # type: ignore[union-attr]


def test_delayed_prefix_is_read_back() -> None:
    parsed = parse_summary(f"[delayed 3m] 2 alerts resolved (1/2): A {X}2 (a-1, ... +1)")
    assert parsed is not None
    assert (parsed.total, parsed.outcome, parsed.page, parsed.pages) == (2, "resolved", 1, 2)
    assert parsed.groups[0].names == ("a-1",) and parsed.groups[0].more == 1
    assert parse_summary("HighCPU on web-1 is firing") is None


@pytest.mark.parametrize("seed", range(25))
def test_random_storms_are_represented_exactly(seed: int) -> None:
    rng = random.Random(seed)
    names = ["HighCPU", "DiskFull", "InstanceDown", "Latency", "ÜberLast"][: rng.randint(1, 5)]
    notes: list[AlertNote] = []
    state: dict[tuple[str, str], list[str]] = {}
    for _ in range(rng.randint(1, 600)):
        name = rng.choice(names)
        style = rng.random()
        inst = (
            f"web-{rng.randint(1, 80)}"
            if style < 0.5
            else f"10.0.{rng.randint(0, 3)}.{rng.randint(1, 40)}:9100"
            if style < 0.8
            else rng.choice(["api", "cache-a", "cache-b", "db-primary", "ñandú"])
        )
        status = "resolved" if rng.random() < 0.25 else "firing"
        notes.append(note(name, inst, status))
        state.setdefault((name, inst), []).append(status)
    expected: dict[tuple[Outcome, str], list[str | None]] = defaultdict(list)
    for (name, inst), seen in state.items():
        outcome: Outcome = (
            "firing"
            if seen[-1] == "firing"
            else "fired and resolved"
            if seen[0] == "firing"
            else "resolved"
        )
        expected[(outcome, name)].append(inst)
    budget = rng.randint(160, 420)
    max_lines = rng.randint(1, 12)
    lines = fold(notes, max_bytes=budget, max_lines=max_lines)
    check_represented(lines, expected, budget)
    # More lines than asked for only when bare counts need them.
    if len(lines) > max_lines:
        assert len(lines) == len(fold(notes, max_bytes=budget, max_lines=1))
        assert len(lines) <= 3 * len({name for name, _ in state})
