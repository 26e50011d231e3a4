"""Jenkins build results (``jenkins/<phase>``).

The Notification plugin posts ``{"name", "url", "build": {"full_url",
"number", "phase", "status", "duration" (ms), "scm": {"branch"},
"test_summary": {...}}}`` at QUEUED, STARTED, COMPLETED and FINALIZED.
Only COMPLETED and FINALIZED carry a result; an endpoint set to "all" gets
both, one set to "failed" only FINALIZED.  Both give the same line with
``once="jenkins:<job>#<number>"`` so the announcer posts it once.

Senders of a flat JSON (Generic Webhook Trigger style jobs, Outbound WebHook,
a curl in a pipeline) are read defensively: ``job_name``/``jobName``/
``projectName``, ``build_number``/``buildNumber``, ``status``/``result``/
``build_status``, ``build_url``/``buildUrl``, ``duration`` (ms).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from .common import (
    NAME,
    REF,
    Announcement,
    clean,
    dig,
    duration,
    integer,
    join,
    mapping,
    number,
    text,
    unannounced,
    url,
    word,
)

__all__ = ["format_jenkins"]

P = "[jenkins]"

_NOT_A_RESULT = frozenset(
    {"queued", "started", "start", "running", "in_progress", "pending", "building"}
)
_JOB_PATH = re.compile(r"(?:job/[^/]+/)+")


def _text(obj: object, *keys: str, limit: int = NAME) -> str:
    return next((v for v in (text(obj, k, limit=limit) for k in keys) if v), "")


def _int(obj: object, *keys: str) -> int | None:
    return next((v for v in (integer(obj, k) for k in keys) if v is not None), None)


def _number(obj: object, *keys: str) -> float | None:
    return next((v for v in (number(obj, k) for k in keys) if v is not None), None)


def _url(obj: object, *keys: str) -> str:
    return next((v for v in (url(obj, k) for k in keys) if v), "")


def _job_name(p: Mapping[str, Any]) -> str:
    """``folder/job/branch`` from the job's relative URL (``job/a/job/b/``) when
    it names folders, else the plugin's ``name``."""
    rel = dig(p, "url")
    if isinstance(rel, str) and _JOB_PATH.fullmatch(rel) and rel.count("job/") > 1:
        parts = [unquote(seg) for seg in rel.strip("/").split("/")[1::2]]
        return clean("/".join(parts), REF)
    return _text(p, "name", "display_name")


def _tests(build: Mapping[str, Any]) -> str:
    summary = mapping(build, "test_summary")
    failed, total = integer(summary, "failed"), integer(summary, "total")
    if failed and total:
        return f"{failed} of {total} tests failed"
    return ""


def format_jenkins(event: str, payload: object) -> list[Announcement]:
    """A line for a finished build; nothing for queued/started notifications."""
    if not isinstance(payload, Mapping):
        return unannounced(f"jenkins/{event}", "payload is not a JSON object")
    build = mapping(payload, "build")
    if build:
        phase = word(build, "phase") or event.lower()
        status = text(build, "status", limit=20)
        job = _job_name(payload)
        num = integer(build, "number")
        link = url(build, "full_url")
        millis = number(build, "duration")
        branch = text(build, "scm", "branch", limit=REF)
        tests = _tests(build)
    else:
        phase = event.lower()
        status = _text(
            payload, "status", "result", "build_status", "buildStatus", "event", limit=20
        )
        job = _text(payload, "job_name", "jobName", "projectName", "name", "job")
        num = _int(payload, "build_number", "buildNumber", "number")
        link = _url(payload, "build_url", "buildUrl", "full_url", "url")
        millis = _number(payload, "duration", "durationMs", "duration_ms")
        branch = _text(payload, "branch", "git_branch", "GIT_BRANCH", limit=REF)
        tests = ""
    if phase in _NOT_A_RESULT or status.lower() in _NOT_A_RESULT:
        return []
    if not status:
        return unannounced(f"jenkins/{event}", "no build status")
    if not job and num is None:
        return unannounced(f"jenkins/{event}", "no job name and no build number")
    line = join(P, job or "build", f"#{num}" if num is not None else "")
    line += f" {status.upper()}"
    took = duration(millis / 1000.0) if millis else ""
    if took:
        line += f" in {took}"
    if branch:
        line += f" on {branch}"
    if tests:
        line += f", {tests}"
    once = f"jenkins:{job}#{num}" if num is not None else None
    return [Announcement(join(line, link), once=once)]
