"""Deploy runners: a module's run as one process group, its output cleaned.

How this works.  The commands come from the module's kind (``kinds/``: a
fixed argv template per kind; parameters and module config travel as data,
never in an argv).  ``run(spec, on_output)`` writes the vars file (mode
0600, the only place where secret values are revealed besides a script's
environment), runs the steps through ``process.run_process`` under one
deadline for the whole run, stops at the first step whose exit code is not
accepted, removes the files holding secrets, and returns a ``RunResult``.
Every output line is cleaned (ANSI sequences and control characters
removed), redacted by the global redactor and by one that knows this run's
secret values, cut to ``max_line_bytes`` and handed to ``on_output`` as an
``OutputLine``.

Tools with structured output are parsed (``parsers``: our Ansible
callback's JSON lines and ``terraform -json`` become ``task``/``step``/
``error`` lines and give the changed / failed counts).  A dry run also
collects what it would change -- changed Ansible tasks, Terraform's planned
changes and its ``Plan: ...`` line, the objects helm-diff, helm template or
kubectl diff name, a script's dry-run output -- into the result's
``changes`` (cleaned and redacted like every line).  Raw lines are read up
to ``RAW_LINE_BYTES`` so a long JSON event still parses, and are shown cut
to ``max_line_bytes``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from masterchief.config.secrets import MASK, REDACTOR, Redactor
from masterchief.config.tree import secrets_in
from masterchief.deploy.parsers import Item, LineKind, Parser, parser_for
from masterchief.deploy.process import run_process

from .kinds import KINDS, build_steps, kind_of, kubernetes, vars_path
from .kinds.base import MARKER, RunSpec, Step, merged_vars

__all__ = [
    "LineKind",
    "OutputLine",
    "RunResult",
    "RunSpec",
    "Status",
    "clean_text",
    "run",
]

log = logging.getLogger(__name__)
Status = Literal["succeeded", "failed", "timed_out", "cancelled"]
RAW_LINE_BYTES = 65536
CHANGES_KEPT = 200  # plan lines a result keeps (all are counted)


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line for the channel and the job record: cleaned and redacted.

    ``kind``: ``task`` a task or phase starts, ``step`` a unit of work
    finished (host result, resource change), ``error`` a failure, ``line``
    anything else.  ``cut``: the line was longer than allowed and was cut.
    """

    text: str
    kind: LineKind = "line"
    data: Mapping[str, Any] | None = None
    cut: bool = False


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended.  ``changed``/``failed`` come from structured output
    (None when the tool has none); ``exit_code`` is the last step's (negative:
    killed by that signal; None: no process ran).  A dry run's ``changes``
    are the first ``CHANGES_KEPT`` lines of what it would change, out of
    ``change_count``; the summary carries the tool's own plan headline."""

    status: Status
    exit_code: int | None
    duration_s: float
    changed: int | None
    failed: int | None
    tail: tuple[str, ...]
    summary: str
    changes: tuple[str, ...] = ()
    change_count: int = 0


# CSI and OSC escape sequences, other two-character escapes, then any C0/C1
# control character left (tab becomes a space first).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """Drop terminal escapes and control characters (tabs become spaces)."""
    if text.isprintable():  # the common case, and ten times cheaper than the regex
        return text
    if "\x1b" in text:
        text = _ESCAPES.sub("", text)
    return _CONTROLS.sub("", text.replace("\t", " "))


def _cut(text: str, max_bytes: int) -> tuple[str, bool]:
    if len(text) * 4 <= max_bytes:  # fits whatever the encoding: skip encoding it
        return text, False
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", "ignore"), True


class _Emitter:
    """Cleans, redacts and cuts every line before ``on_output`` sees it."""

    def __init__(
        self,
        on_output: Callable[[OutputLine], None],
        redactors: Sequence[Redactor],
        max_bytes: int,
        tail_lines: int,
    ) -> None:
        self._on_output = on_output
        self._redactors = redactors
        self._max_bytes = max_bytes
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._failed = False

    def redact(self, text: str) -> str:
        for redactor in self._redactors:
            text = redactor.redact(text)
        return text

    def _redact_data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._mask_before_ellipses(self.redact(clean_text(value)))
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self._redact_data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_data(v) for v in value]
        return value

    def _mask_cut_tail(self, text: str) -> str:
        """A secret split by a cut left its first part at the end: mask it."""
        for value in sorted({v for r in self._redactors for v in r.values()}, key=len):
            for size in range(len(value) - 1, Redactor.MIN_LENGTH - 1, -1):
                if text.endswith(value[:size]):
                    return text[:-size] + MASK
        return text

    def _mask_before_ellipses(self, text: str) -> str:
        """Tools shorten long values to ``start...`` (our Ansible callback
        does, before we see the line): a secret cut there left its first
        part right before the ``...``: mask it like a cut tail."""
        if "..." not in text:
            return text
        parts = text.split("...")
        return "...".join([*(self._mask_cut_tail(p) for p in parts[:-1]), parts[-1]])

    def shown(self, text: str, *, raw_cut: bool = False) -> tuple[str, bool]:
        """``text`` as it may be shown: cleaned, redacted, cut (and whether it was)."""
        text = self._mask_before_ellipses(self.redact(clean_text(text)))
        if raw_cut:
            text = self._mask_cut_tail(text)
        return _cut(text, self._max_bytes)

    def emit(
        self,
        text: str,
        kind: LineKind = "line",
        data: Mapping[str, Any] | None = None,
        *,
        raw_cut: bool = False,
        keep: bool = True,
    ) -> str:
        """Hand the line to ``on_output``; returns it as shown."""
        text, cut = self.shown(text, raw_cut=raw_cut)
        line = OutputLine(
            text=text,
            kind=kind,
            data=self._redact_data(data) if data is not None else None,
            cut=cut or raw_cut,
        )
        if keep:
            self.tail.append(text)
        try:
            self._on_output(line)
        except Exception:
            if not self._failed:
                log.exception("on_output failed; later failures are not logged")
            self._failed = True
        return text


def _run_redactor(spec: RunSpec) -> Redactor:
    """A redactor for this run's secret values -- module config, parameters and
    the credentials in ``extra_env``, the only secrets a tool is given -- also
    JSON-escaped, and in the forms a template could turn them into (any case,
    reversed, characters separated).  Few values: those forms stay cheap."""
    redactor = Redactor(variants=True)
    values = [s.reveal() for s in (*secrets_in(spec.variables), *secrets_in(spec.params))]
    for value in (*values, *spec.extra_env.values()):
        redactor.register(value)
        redactor.register(json.dumps(value)[1:-1])
    return redactor


def _write_private(path: Path, text: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)  # the file may have existed with other modes
        fh.write(text)


def _prepare(spec: RunSpec) -> None:
    spec.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    spec.work_dir.chmod(0o700)
    (spec.work_dir / "tmp").mkdir(mode=0o700, exist_ok=True)
    target = vars_path(spec)
    if target is not None:
        _write_private(target, kind_of(spec).render_vars(merged_vars(spec)))


def _cleanup(spec: RunSpec) -> None:
    names = [name for k in KINDS.values() for name in (k.vars_file, *k.sensitive_files)]
    for name in dict.fromkeys(names):
        with contextlib.suppress(FileNotFoundError):
            (spec.work_dir / name).unlink()
    shutil.rmtree(spec.work_dir / "tmp", ignore_errors=True)


def _summary(status: Status, spec: RunSpec, result: _Tally) -> str:
    words = {
        "succeeded": "succeeded",
        "failed": "failed",
        "timed_out": "timed out",
        "cancelled": "cancelled",
    }
    text = f"{words[status]} in {result.duration_s:.1f}s"
    if status == "failed" and result.failed_step:
        code = f" (exit {result.exit_code})" if result.exit_code is not None else ""
        text += f" at {result.failed_step}{code}"
    if spec.mode == "plan" and result.headline:
        text += f": {result.headline}"
    elif result.changed is not None or result.failed is not None:
        text += f": changed {result.changed or 0}, failed {result.failed or 0}"
    return f"{text} (job {spec.job_id})"


@dataclass(slots=True)
class _Tally:
    duration_s: float = 0.0
    exit_code: int | None = None
    changed: int | None = None
    failed: int | None = None
    failed_step: str = ""
    headline: str | None = None
    changes: list[str] = field(default_factory=list)
    change_count: int = 0

    def add_change(self, line: str) -> None:
        self.change_count += 1
        if len(self.changes) < CHANGES_KEPT:
            self.changes.append(line)


async def _run_steps(
    spec: RunSpec,
    steps: Sequence[Step],
    emitter: _Emitter,
    tally: _Tally,
    cancel: asyncio.Event | None,
    deadline: float,
) -> Status:
    marker = f"{MARKER}={spec.job_id}"
    for step in steps:
        if cancel is not None and cancel.is_set():
            return "cancelled"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timed_out"
        if step.announce:
            emitter.emit(step.announce, "task")
        plan = spec.mode == "plan"
        parser = parser_for(step.output, step.label, plan=plan)

        def on_line(text: str, cut: bool, parser: Parser = parser, plan: bool = plan) -> None:
            items: list[Item] = [(text, "line", None)] if cut else parser.feed(text)
            for item in items:
                emitter.emit(*item, raw_cut=cut)
                change = parser.change(item) if plan else None
                if change is not None:
                    tally.add_change(emitter.shown(change, raw_cut=cut)[0])

        try:
            result = await run_process(
                step.argv,
                env=step.env,
                cwd=step.cwd,
                on_line=on_line,
                timeout_s=remaining,
                kill_grace_s=spec.kill_grace_s,
                max_line_bytes=max(RAW_LINE_BYTES, spec.max_line_bytes),
                marker=marker,
                cancel=cancel,
            )
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            emitter.emit(f"cannot run {Path(step.argv[0]).name}: {reason}", "error")
            tally.failed_step = step.label
            return "failed"
        if parser.changed is not None:
            tally.changed = parser.changed
        if parser.failed is not None:
            tally.failed = parser.failed
        if parser.headline is not None:
            tally.headline = emitter.shown(parser.headline)[0]
        tally.exit_code = result.exit_code
        if result.stragglers and result.outcome == "exited":
            emitter.emit(f"stopped {result.stragglers} leftover process(es) of {step.label}")
        if result.outcome != "exited":
            return result.outcome
        if result.exit_code not in step.ok_exit:
            tally.failed_step = step.label
            return "failed"
    return "succeeded"


async def run(
    spec: RunSpec,
    on_output: Callable[[OutputLine], None],
    *,
    cancel: asyncio.Event | None = None,
    redactor: Redactor = REDACTOR,
) -> RunResult:
    """Run ``spec`` to its end; every output line goes to ``on_output``.

    Never raises for a tool's failure (that is a ``failed`` result); raises
    ``ConfigError`` / ``UserError`` when the module or a value cannot be run
    at all, before anything starts.  The last line is the summary.
    """
    started = time.monotonic()
    deadline = started + spec.timeout_s
    emitter = _Emitter(
        on_output, (redactor, _run_redactor(spec)), spec.max_line_bytes, spec.tail_lines
    )
    tally = _Tally()
    build_steps(spec)  # configuration errors surface before anything is written
    try:
        await asyncio.to_thread(_prepare, spec)
        helm_diff = False
        if (
            spec.module.kind == "kubernetes"
            and spec.mode == "plan"
            and kubernetes.k8s_tool(spec) == "helm"
        ):
            helm_diff = await kubernetes.probe_helm_diff(spec, cancel)
        status = await _run_steps(
            spec, build_steps(spec, helm_diff=helm_diff), emitter, tally, cancel, deadline
        )
    finally:
        await asyncio.to_thread(_cleanup, spec)
    tally.duration_s = time.monotonic() - started
    summary = _summary(status, spec, tally)
    data = {
        "summary": True,
        "status": status,
        "changed": tally.changed,
        "failed": tally.failed,
        "job": spec.job_id,
    }
    emitter.emit(summary, "line", data, keep=False)
    return RunResult(
        status=status,
        exit_code=tally.exit_code,
        duration_s=tally.duration_s,
        changed=tally.changed,
        failed=tally.failed,
        tail=tuple(emitter.tail),
        summary=summary,
        changes=tuple(tally.changes),
        change_count=tally.change_count,
    )
