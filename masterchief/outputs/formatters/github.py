"""GitHub webhooks (``github/<X-GitHub-Event>``): push, pull_request, issues,
release and ping.  Other events and actions give no line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import (
    REF,
    Announcement,
    EventFormatter,
    by_event,
    clean,
    dig,
    first_line,
    integer,
    items,
    join,
    mapping,
    plural,
    quoted,
    text,
    unannounced,
    url,
    word,
)

__all__ = ["format_github"]

P = "[github]"


def _who(p: Mapping[str, Any], *paths: tuple[str, ...]) -> str:
    for path in paths:
        name = text(p, *path)
        if name:
            return name
    return "someone"


def _repo(p: Mapping[str, Any]) -> str:
    return text(p, "repository", "full_name", limit=REF) or text(
        p, "organization", "login", limit=REF
    )


def _split_ref(ref: object) -> tuple[str, str]:
    """(``branch``|``tag``|``ref``, its name) for a git ref."""
    raw = ref if isinstance(ref, str) else ""
    for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
        if raw.startswith(prefix):
            return kind, clean(raw[len(prefix) :], REF)
    return "ref", clean(raw, REF)


def _push(p: Mapping[str, Any]) -> list[Announcement]:
    repo = _repo(p)
    kind, name = _split_ref(dig(p, "ref"))
    if not repo and not name:
        return unannounced("github/push", "no repository and no ref")
    who = _who(p, ("pusher", "name"), ("sender", "login"))
    of = f" of {repo}" if repo else ""
    name = name or "?"
    if dig(p, "deleted") is True:
        return [Announcement(f"{P} {who} deleted {kind} {name}{of}")]
    link = url(p, "compare")
    if kind == "tag":
        to = f" to {repo}" if repo else ""
        return [Announcement(join(f"{P} {who} pushed tag {name}{to}", link))]
    commits = items(p, "commits")
    created = dig(p, "created") is True
    verb = "force-pushed" if dig(p, "forced") is True else "pushed"
    if not commits:
        if created:
            return [Announcement(join(f"{P} {who} created {kind} {name}{of}", link))]
        return [Announcement(join(f"{P} {who} {verb} to {name}{of}", link))]
    title = first_line(commits[0], "message") or first_line(p, "head_commit", "message")
    target = f"new {kind} {name}" if created else name
    line = f"{P} {who} {verb} {plural(len(commits), 'commit')} to {target}{of}"
    if title:
        line += f": {quoted(title)}"
    return [Announcement(join(line, link))]


def _pull_request(p: Mapping[str, Any]) -> list[Announcement]:
    action = word(p, "action")
    pr = mapping(p, "pull_request")
    who = ""
    if action == "closed":
        merged = dig(pr, "merged") is True
        verb = "merged" if merged else "closed"
        if merged:
            who = text(pr, "merged_by", "login")
    elif action in ("opened", "reopened"):
        verb = action
    elif action == "ready_for_review":
        verb = "marked ready for review"
    else:
        return []
    number = integer(pr, "number")
    if number is None:
        number = integer(p, "number")
    title = first_line(pr, "title")
    if number is None and not title:
        return unannounced(f"github/pull_request {action}", "no pull request number or title")
    who = who or _who(p, ("sender", "login"), ("pull_request", "user", "login"))
    draft = "draft " if action == "opened" and dig(pr, "draft") is True else ""
    num = f" #{number}" if number is not None else ""
    repo = _repo(p)
    line = f"{P} {who} {verb} {draft}PR{num}" + (f" in {repo}" if repo else "")
    if title:
        line += f": {quoted(title)}"
    if action in ("opened", "reopened"):
        head, base = text(pr, "head", "ref", limit=REF), text(pr, "base", "ref", limit=REF)
        if head and base:
            line += f" ({head} → {base})"
    return [Announcement(join(line, url(pr, "html_url")))]


def _issues(p: Mapping[str, Any]) -> list[Announcement]:
    action = word(p, "action")
    if action not in ("opened", "closed", "reopened"):
        return []
    issue = mapping(p, "issue")
    number = integer(issue, "number")
    title = first_line(issue, "title")
    if number is None and not title:
        return unannounced(f"github/issues {action}", "no issue number or title")
    who = _who(p, ("sender", "login"), ("issue", "user", "login"))
    num = f" #{number}" if number is not None else ""
    repo = _repo(p)
    line = f"{P} {who} {action} issue{num}" + (f" in {repo}" if repo else "")
    if action == "closed" and word(issue, "state_reason") == "not_planned":
        line += " as not planned"
    if title:
        line += f": {quoted(title)}"
    return [Announcement(join(line, url(issue, "html_url")))]


def _release(p: Mapping[str, Any]) -> list[Announcement]:
    # "published" covers releases and pre-releases; "released"/"created"
    # would announce the same release twice.
    if word(p, "action") != "published":
        return []
    rel = mapping(p, "release")
    tag = text(rel, "tag_name", limit=REF)
    name = first_line(rel, "name")
    if not tag and not name:
        return unannounced("github/release published", "no tag and no name")
    who = _who(p, ("sender", "login"), ("release", "author", "login"))
    repo = _repo(p)
    line = f"{P} {who} published {'pre-release' if dig(rel, 'prerelease') is True else 'release'}"
    line += f" {tag or name}" + (f" of {repo}" if repo else "")
    if tag and name and name != tag:
        line += f": {quoted(name)}"
    return [Announcement(join(line, url(rel, "html_url")))]


def _ping(p: Mapping[str, Any]) -> list[Announcement]:
    where = _repo(p)
    return [Announcement(f"{P} webhook is set up" + (f" for {where}" if where else "") + " (ping)")]


_EVENTS: dict[str, EventFormatter] = {
    "push": _push,
    "pull_request": _pull_request,
    "issues": _issues,
    "release": _release,
    "ping": _ping,
}


def format_github(event: str, payload: object) -> list[Announcement]:
    """Lines for one GitHub delivery (``event`` is the X-GitHub-Event value)."""
    return by_event("github", _EVENTS, event, payload)
