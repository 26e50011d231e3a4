"""Paging for long private listings (``!binds``, ``!help``, ``!jobs``, ``!job``, ``!files``).

A listing never sends more than ``PAGE_LINES`` lines for one request: at
most ``PAGE_LINES - 1`` lines of it and a last line saying which page this
is and how to get the next (``page 1/4, !binds 2 for more``).  A listing
that fits ``PAGE_LINES`` lines is sent whole, with no page line.  Pure
functions, and ``private_page`` that sends a page to the asker through the
Event's own ``Reply`` (IRC, a console: wherever it was typed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..bindings.event import Event

__all__ = ["PAGE_LINES", "page_lines", "private_page", "split_page", "wrap_words"]

PAGE_LINES = 5
_MAX_PAGE_DIGITS = 6


def split_page(args: Sequence[str], max_args: int) -> tuple[list[str], int]:
    """``args`` without a trailing page number, and that page (1 if none).

    Only the argument after ``max_args`` others is a page number (``!binds
    pub 2``: ``max_args`` 1), so an argument that merely looks like a number
    (a job id of digits) is never taken for one.
    """
    rest = list(args)
    if len(rest) == max_args + 1 and rest[-1].isdecimal() and len(rest[-1]) <= _MAX_PAGE_DIGITS:
        return rest[:-1], max(1, int(rest[-1]))
    return rest, 1


def page_lines(lines: Sequence[str], page: int, more: str, per_page: int = PAGE_LINES) -> list[str]:
    """The lines of *page* (1-based) of *lines*; *more* is the command that
    asks for a page when followed by its number (``!binds pub``)."""
    if per_page < 2:
        raise ValueError(f"per_page must be at least 2, got {per_page}")
    if len(lines) <= per_page:
        return list(lines) if page == 1 else [f"there is only one page ({more})"]
    size = per_page - 1
    pages = math.ceil(len(lines) / size)
    if page > pages:
        return [f"there are {pages} pages ({more} {pages} is the last)"]
    chunk = list(lines[(page - 1) * size : page * size])
    footer = f"page {page}/{pages}"
    if page < pages:
        footer += f", {more} {page + 1} for more"
    return [*chunk, footer]


def wrap_words(words: Sequence[str], max_chars: int, first: str = "") -> list[str]:
    """*words* joined by spaces into lines of at most *max_chars* characters
    (a longer word gets a line of its own); *first* starts the first line."""
    out: list[str] = []
    line = first
    for word in words:
        sep = "" if not line or line.endswith(" ") else " "
        if line and len(line) + len(sep) + len(word) > max_chars and line != first:
            out.append(line)
            line = word
        else:
            line += sep + word
    if line:
        out.append(line)
    return out


def private_page(
    ev: Event, command_prefix: str, lines: Sequence[str], page: int, more: str
) -> None:
    """Send *page* of a listing to the asker privately; *more* is the command
    and arguments that ask for another page, without the prefix (which a
    private message does not use)."""
    prefix = command_prefix if ev.channel else ""
    for line in page_lines(lines, page, prefix + more):
        ev.private(line)
