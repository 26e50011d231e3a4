"""GitLab webhooks (``gitlab/<object_kind>``): push, tag_push, merge_request
(opened, reopened, closed, merged) and pipeline (passed, failed, canceled).

Pipelines report every status change (created, pending, running ...); only
the outcomes are announced.  Other kinds and actions give no line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .common import (
    REF,
    URL_MAX,
    Announcement,
    EventFormatter,
    by_event,
    clean,
    dig,
    duration,
    first_line,
    integer,
    items,
    join,
    listing,
    mapping,
    number,
    plural,
    quoted,
    text,
    unannounced,
    url,
    word,
)

__all__ = ["format_gitlab"]

P = "[gitlab]"

_SHA = re.compile(r"[0-9a-f]{7,64}")
_ZERO = re.compile(r"0+")


def _project(p: Mapping[str, Any]) -> str:
    return text(p, "project", "path_with_namespace", limit=REF) or text(
        p, "project", "name", limit=REF
    )


def _who(p: Mapping[str, Any]) -> str:
    for path in (("user_username",), ("user", "username"), ("user_name",), ("user", "name")):
        name = text(p, *path)
        if name:
            return name
    return "someone"


def _link(base: str, *parts: str) -> str:
    """``base`` (a checked URL) with path parts appended, each percent-encoded."""
    if not base:
        return ""
    full = base.rstrip("/") + "/" + "/".join(quote(part, safe="/") for part in parts)
    return full if len(full) <= URL_MAX else ""


def _push(p: Mapping[str, Any], tag: bool) -> list[Announcement]:
    key = "gitlab/tag_push" if tag else "gitlab/push"
    ref = dig(p, "ref")
    raw = ref if isinstance(ref, str) else ""
    prefix = "refs/tags/" if tag else "refs/heads/"
    raw_name = raw[len(prefix) :] if raw.startswith(prefix) else raw
    name = clean(raw_name, REF)
    project = _project(p)
    if not project and not name:
        return unannounced(key, "no project and no ref")
    who = _who(p)
    kind = "tag" if tag else "branch"
    name = name or "?"
    of = f" of {project}" if project else ""
    before, after = word(p, "before"), word(p, "after")
    web = url(p, "project", "web_url")
    if _ZERO.fullmatch(after):
        return [Announcement(f"{P} {who} deleted {kind} {name}{of}")]
    if tag:
        to = f" to {project}" if project else ""
        link = _link(web, "-/tags", raw_name) if raw_name else ""
        return [Announcement(join(f"{P} {who} pushed tag {name}{to}", link))]
    created = bool(_ZERO.fullmatch(before))
    if created:
        link = _link(web, "-/commits", raw_name) if raw_name else ""
    elif _SHA.fullmatch(before) and _SHA.fullmatch(after):
        link = _link(web, f"-/compare/{before[:12]}...{after[:12]}")
    else:
        link = ""
    commits = items(p, "commits")
    count = integer(p, "total_commits_count")
    n = count if count is not None and count >= 0 else len(commits)
    if n == 0:
        verb = f"created branch {name}" if created else f"pushed to {name}"
        return [Announcement(join(f"{P} {who} {verb}{of}", link))]
    first = commits[0] if commits else None
    title = first_line(first, "title") or first_line(first, "message")
    target = f"new branch {name}" if created else name
    line = f"{P} {who} pushed {plural(n, 'commit')} to {target}{of}"
    if title:
        line += f": {quoted(title)}"
    return [Announcement(join(line, link))]


_MR_VERBS = {"open": "opened", "reopen": "reopened", "close": "closed", "merge": "merged"}


def _merge_request(p: Mapping[str, Any]) -> list[Announcement]:
    attrs = mapping(p, "object_attributes")
    action = word(attrs, "action")
    verb = _MR_VERBS.get(action)
    if verb is None:
        return []
    iid = integer(attrs, "iid")
    title = first_line(attrs, "title")
    if iid is None and not title:
        return unannounced(f"gitlab/merge_request {action}", "no merge request iid or title")
    draft = dig(attrs, "draft") is True or dig(attrs, "work_in_progress") is True
    project = _project(p)
    line = f"{P} {_who(p)} {verb} {'draft ' if draft and action == 'open' else ''}MR"
    line += (f" !{iid}" if iid is not None else "") + (f" in {project}" if project else "")
    if title:
        line += f": {quoted(title)}"
    if action in ("open", "reopen"):
        source = text(attrs, "source_branch", limit=REF)
        target = text(attrs, "target_branch", limit=REF)
        if source and target:
            line += f" ({source} → {target})"
    return [Announcement(join(line, url(attrs, "url")))]


_PIPELINE_VERBS = {"success": "passed", "failed": "failed", "canceled": "was canceled"}


def _pipeline(p: Mapping[str, Any]) -> list[Announcement]:
    attrs = mapping(p, "object_attributes")
    status = word(attrs, "status")
    verb = _PIPELINE_VERBS.get(status)
    if verb is None:
        return []
    pid = integer(attrs, "id")
    project = _project(p)
    ref = text(attrs, "ref", limit=REF)
    if pid is None and not project:
        return unannounced(f"gitlab/pipeline {status}", "no pipeline id and no project")
    line = f"{P} pipeline" + (f" #{pid}" if pid is not None else "") + f" {verb}"
    if ref:
        line += f" on {'tag ' if dig(attrs, 'tag') is True else ''}{ref}"
    if project:
        line += f" of {project}"
    took = duration(number(attrs, "duration"))
    if took:
        line += f" in {took}"
    title = first_line(p, "commit", "title") or first_line(p, "commit", "message")
    if title:
        line += f": {quoted(title)}"
    who = text(p, "user", "username") or text(p, "user", "name")
    if who:
        line += f" by {who}"
    if status == "failed":
        failed = [
            text(job, "name")
            for job in items(p, "builds")
            if word(job, "status") == "failed" and dig(job, "allow_failure") is not True
        ]
        failed = [name for name in failed if name]
        if failed:
            line += f"; failed jobs: {listing(failed)}"
    link = url(attrs, "url")
    if not link and pid is not None:
        link = _link(url(p, "project", "web_url"), "-/pipelines", str(pid))
    return [Announcement(join(line, link))]


_KINDS: dict[str, EventFormatter] = {
    "push": lambda p: _push(p, tag=False),
    "tag_push": lambda p: _push(p, tag=True),
    "merge_request": _merge_request,
    "pipeline": _pipeline,
}


def format_gitlab(event: str, payload: object) -> list[Announcement]:
    """Lines for one GitLab delivery (``event`` is the payload's object_kind)."""
    return by_event("gitlab", _KINDS, event, payload)
