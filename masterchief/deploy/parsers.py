"""Tool output parsers: raw lines in, shown lines, counts and plan lines out.

Pure (no I/O): the runner feeds each raw output line of a step to the
step's parser and gets ``(text, kind, data)`` items to show.  A parser also
keeps the step's counts (``changed``/``failed``, None when the tool has no
structured output) and, for a dry run, what it says would change:

- ``change(item)`` names the item as a line of the plan (a changed Ansible
  task, a planned Terraform resource change, an object helm-diff or kubectl
  diff reports, a rendered object, a line of a script's ``--dry-run``), else
  None;
- ``headline`` is the tool's own one-line summary of the plan, when it has
  one (Terraform's ``Plan: 1 to add, 2 to change, 0 to destroy.``,
  ``helm diff: 1 added, 1 changed, 0 removed``).

Which parser a step gets: ``parser_for(output, label)`` -- by the step's
output format, and for plain-text dry runs by the step's label (a script's
dry run, helm diff/template, kubectl diff), since their plan is in text.
Our Ansible callback's JSON lines (``ansible_callback/masterchief_jsonl.py``)
and ``terraform -json`` become ``task`` lines (a task or phase starts),
``step`` lines (a host result, a resource change) and ``error`` lines.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

__all__ = ["Item", "LineKind", "OutputFormat", "Parser", "parser_for"]

LineKind = Literal["line", "task", "step", "error"]
OutputFormat = Literal["text", "ansible", "terraform", "kubectl"]
Item = tuple[str, LineKind, dict[str, Any] | None]


class Parser:
    """Plain output: every line is a ``line``; no counts, no plan."""

    def __init__(self) -> None:
        self.changed: int | None = None
        self.failed: int | None = None
        self.headline: str | None = None

    def feed(self, text: str) -> list[Item]:
        return [(text, "line", None)]

    def change(self, item: Item) -> str | None:
        """The plan line ``item`` stands for (what a dry run would change)."""
        return None


class _DryRunParser(Parser):
    """A script's ``--dry-run``: all it prints is what it would do."""

    def change(self, item: Item) -> str | None:
        return item[0] if item[0].strip() else None


def _json_event(text: str, key: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and key in obj else None


class _AnsibleParser(Parser):
    """The JSON lines of ``masterchief_jsonl``; counts from its stats; in a
    plan (``--check --diff``) each ``changed`` result is a line of it."""

    def __init__(self) -> None:
        super().__init__()
        self._task = ""

    def feed(self, text: str) -> list[Item]:
        ev = _json_event(text, "mc")
        if ev is None:
            return [(text, "line", None)]
        kind = ev.get("mc")
        if kind == "task_start":
            role = f"{ev.get('role')} : " if ev.get("role") else ""
            word = "RUNNING HANDLER" if ev.get("handler") else "TASK"
            self._task = f"{word} [{role}{ev.get('name', '')}]"
            return [(self._task, "task", ev)]
        if kind == "play_start":
            return [(f"PLAY [{ev.get('name', '')}]", "line", ev)]
        if kind == "result":
            return [self._result(ev)]
        if kind == "diff":
            return [(line, "line", None) for line in str(ev.get("text", "")).splitlines()]
        if kind == "stats":
            totals = ev.get("totals") or {}
            self.changed = int(totals.get("changed", 0))
            self.failed = int(totals.get("failures", 0)) + int(totals.get("unreachable", 0))
            return [("PLAY RECAP", "line", ev)]
        if kind == "host_stats":
            counts = " ".join(
                f"{k}={ev.get(k, 0)}"
                for k in ("ok", "changed", "unreachable", "failures", "skipped", "rescued")
            )
            return [(f"{ev.get('host', '')} : {counts}", "line", ev)]
        if kind == "no_hosts":
            return [("skipping: no hosts matched", "line", ev)]
        if kind == "playbook_start":
            check = " (check mode)" if ev.get("check") else ""
            return [(f"PLAYBOOK [{ev.get('playbook', '')}]{check}", "line", ev)]
        return [(text, "line", None)]

    def change(self, item: Item) -> str | None:
        text, _, ev = item
        if ev is None or ev.get("mc") != "result" or ev.get("status") != "changed":
            return None
        return f"{self._task} {text}" if self._task else text

    @staticmethod
    def _result(ev: dict[str, Any]) -> Item:
        status = str(ev.get("status", ""))
        word = {"skipped": "skipping", "ignored": "failed (ignored)"}.get(status, status)
        text = f"{word}: [{ev.get('host', '')}]"
        if ev.get("item"):
            text += f" => (item={ev['item']})"
        if ev.get("msg"):
            text += f" => {ev['msg']}"
        kind: LineKind = "error" if status in ("failed", "unreachable") else "step"
        return text, kind, ev


class _TerraformParser(Parser):
    """``terraform -json`` (machine-readable UI) lines.

    Counts: ``changed`` is add + change + remove of the step's change summary
    (the apply's, or in plan mode the plan's), or for an apply that stopped
    before its summary, the resources completed; ``failed`` counts
    ``apply_errored`` resources.  A plan's lines are its planned changes and
    drift; its headline is the plan's change summary.
    """

    _STEPS = frozenset(
        {"planned_change", "resource_drift", "apply_start", "apply_complete", "provision_complete"}
    )
    _PLANNED = frozenset({"planned_change", "resource_drift"})

    def __init__(self) -> None:
        super().__init__()
        self._planned = 0

    def feed(self, text: str) -> list[Item]:
        ev = _json_event(text, "@message")
        if ev is None:
            return [(text, "line", None)]
        if self.failed is None:  # structured output: counts start at zero
            self.changed, self.failed = 0, 0
        kind = ev.get("type")
        message = str(ev.get("@message", ""))
        if kind == "change_summary":
            changes = ev.get("changes") or {}
            self.changed = sum(int(changes.get(k, 0)) for k in ("add", "change", "remove"))
            if changes.get("operation") == "plan":
                self.headline = message
            return [(message, "line", ev)]
        if kind == "apply_complete":
            # Until the apply's own summary arrives (it does not after a
            # failure), changed counts the resources applied so far.
            self.changed = (self.changed or 0) + 1
            return [(message, "step", ev)]
        if kind == "apply_errored":
            self.failed += 1
            return [(message, "error", ev)]
        if kind == "diagnostic":
            diag = ev.get("diagnostic") or {}
            detail = str(diag.get("detail") or "").strip()
            text = f"{message}: {detail}" if detail else message
            error = ev.get("@level") == "error" or diag.get("severity") == "error"
            lines = [line for line in text.splitlines() if line.strip()]
            return [(line, "error" if error else "line", ev) for line in lines]
        return [(message, "step" if kind in self._STEPS else "line", ev)]

    def change(self, item: Item) -> str | None:
        ev = item[2]
        return item[0] if ev is not None and ev.get("type") in self._PLANNED else None


_KUBECTL_RESULT = re.compile(
    r"(\S+) (created|configured|unchanged|deleted|pruned|serverside-applied)"
)


class _KubectlParser(Parser):
    """``kubectl apply`` prints ``<kind>/<name> <verb>`` per object."""

    def feed(self, text: str) -> list[Item]:
        m = _KUBECTL_RESULT.fullmatch(text.strip())
        if m is None:
            return [(text, "line", None)]
        if self.changed is None:
            self.changed = 0
        if m.group(2) != "unchanged":
            self.changed += 1
        return [(text, "step", {"object": m.group(1), "result": m.group(2)})]


# helm-diff: "<namespace>, <name>, <Kind> (<group>) has been added:" and
# "has changed:" / "has been removed:", each followed by the object's diff.
_HELM_DIFF = re.compile(r"(\S+), (\S+), (\S+) \([^)]*\) has (been added|changed|been removed):")


class _HelmDiffParser(Parser):
    """``helm diff upgrade``: each object header is a plan line."""

    def __init__(self) -> None:
        super().__init__()
        self._counts = {"added": 0, "changed": 0, "removed": 0}

    def change(self, item: Item) -> str | None:
        m = _HELM_DIFF.fullmatch(item[0].strip())
        if m is None:
            return None
        what = m.group(4).removeprefix("been ")
        self._counts[what] += 1
        self.headline = "helm diff: " + ", ".join(f"{n} {w}" for w, n in self._counts.items())
        return f"{m.group(3)} {m.group(1)}/{m.group(2)} {what}"


class _HelmTemplateParser(Parser):
    """``helm template`` (no helm-diff plugin): the objects it renders are
    the plan's lines -- what would be applied, not what would change."""

    def __init__(self) -> None:
        super().__init__()
        self._kind = ""
        self._in_metadata = False
        self._objects = 0

    def change(self, item: Item) -> str | None:
        line = item[0].rstrip()
        if line == "---":
            self._kind, self._in_metadata = "", False
        elif line.startswith("kind: "):
            self._kind = line.removeprefix("kind: ").strip()
        elif line == "metadata:":
            self._in_metadata = True
        elif line.startswith("  name: ") and self._in_metadata and self._kind:
            self._in_metadata = False
            self._objects += 1
            self.headline = (
                f"helm template: {self._objects} objects rendered "
                "(no helm-diff plugin: what would change is not known)"
            )
            return f"{self._kind}/{line.removeprefix('  name: ').strip()}"
        elif line and not line.startswith(" "):
            self._in_metadata = False
        return None


# kubectl diff runs `diff -u -N LIVE/<object> MERGED/<object>` per object.
_KUBECTL_DIFF = re.compile(r"diff -u -N \S+/(\S+) \S+/(\S+)")


class _KubectlDiffParser(Parser):
    """``kubectl diff``: each object it compares is a plan line."""

    def __init__(self) -> None:
        super().__init__()
        self._objects = 0

    def change(self, item: Item) -> str | None:
        m = _KUBECTL_DIFF.fullmatch(item[0].strip())
        if m is None:
            return None
        self._objects += 1
        self.headline = f"kubectl diff: {self._objects} objects differ"
        return m.group(2)


_BY_FORMAT: dict[OutputFormat, type[Parser]] = {
    "text": Parser,
    "ansible": _AnsibleParser,
    "terraform": _TerraformParser,
    "kubectl": _KubectlParser,
}
# Plain-text dry runs, by the label the runner gives their step.
_DRY_RUNS: dict[str, type[Parser]] = {
    "script": _DryRunParser,
    "helm diff": _HelmDiffParser,
    "helm template": _HelmTemplateParser,
    "kubectl diff": _KubectlDiffParser,
}


def parser_for(output: OutputFormat, label: str, *, plan: bool) -> Parser:
    """A fresh parser for one step (``plan``: the run is a dry run)."""
    if plan and output == "text" and label in _DRY_RUNS:
        return _DRY_RUNS[label]()
    return _BY_FORMAT[output]()
