"""Paging of private listings: at most PAGE_LINES lines per request."""

from __future__ import annotations

import pytest

from masterchief.commands.paging import PAGE_LINES, page_lines, split_page, wrap_words

ROWS = [f"row {i}" for i in range(1, 11)]  # 10 lines: pages of 4 + a page line


@pytest.mark.parametrize(
    ("lines", "page", "expected"),
    [
        (ROWS[:5], 1, ROWS[:5]),  # fits: sent whole, no page line
        (ROWS[:5], 2, ["there is only one page (!binds)"]),
        (ROWS, 1, [*ROWS[0:4], "page 1/3, !binds 2 for more"]),
        (ROWS, 2, [*ROWS[4:8], "page 2/3, !binds 3 for more"]),
        (ROWS, 3, [*ROWS[8:10], "page 3/3"]),
        (ROWS, 4, ["there are 3 pages (!binds 3 is the last)"]),
        ([], 1, []),
    ],
)
def test_page_lines(lines: list[str], page: int, expected: list[str]) -> None:
    assert page_lines(lines, page, "!binds") == expected


def test_no_page_is_longer_than_page_lines() -> None:
    for n in range(0, 60):
        rows = [str(i) for i in range(n)]
        pages = [page_lines(rows, p, "x") for p in range(1, 20)]
        assert all(len(p) <= PAGE_LINES for p in pages)
        shown = [ln for p in pages for ln in p if not ln.startswith(("page ", "there "))]
        assert shown == rows  # every row once, in order


@pytest.mark.parametrize(
    ("args", "max_args", "expected"),
    [
        ([], 0, ([], 1)),
        (["2"], 0, ([], 2)),
        (["chattr"], 0, (["chattr"], 1)),
        (["pub", "3"], 1, (["pub"], 3)),
        (["pub"], 1, (["pub"], 1)),
        (["123456"], 1, (["123456"], 1)),  # a job id of digits is not a page
        (["123456", "2"], 1, (["123456"], 2)),
        (["pub", "0"], 1, (["pub"], 1)),
        (["pub", "99999999999"], 1, (["pub", "99999999999"], 1)),  # absurd: not a page
        (["pub", "²"], 1, (["pub", "²"], 1)),  # isdigit but not decimal
    ],
)
def test_split_page(args: list[str], max_args: int, expected: tuple[list[str], int]) -> None:
    assert split_page(args, max_args) == expected


def test_wrap_words() -> None:
    words = [f"!cmd{i}" for i in range(30)]
    lines = wrap_words(words, 40, first="commands you may use: ")
    assert lines[0].startswith("commands you may use: !cmd0")
    assert all(len(ln) <= 40 for ln in lines)
    assert " ".join(lines).removeprefix("commands you may use: ").split() == words
    assert wrap_words(["x" * 50], 10) == ["x" * 50]
    assert wrap_words([], 10, first="none: ") == ["none: "]
