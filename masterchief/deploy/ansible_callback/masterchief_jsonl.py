"""Ansible stdout callback: one JSON object per line, read by the deploy runner.

How this works.  ``ansible-playbook`` loads this file when the runner sets
``ANSIBLE_STDOUT_CALLBACK=masterchief_jsonl`` and ``ANSIBLE_CALLBACK_PLUGINS``
to this folder.  Every event becomes one line ``{"mc": "<event>", ...}``:

- ``playbook_start`` {playbook, check}
- ``play_start`` {name}
- ``task_start`` {name, role, action, handler}
- ``result`` {status: ok|changed|failed|ignored|skipped|unreachable, host, task,
  msg, item}; items of a loop come as ``result`` with ``item`` set
- ``diff`` {host, task, text}: the unified diff of --diff, capped
- ``no_hosts`` {}
- ``stats`` {hosts, totals: {ok, changed, failures, unreachable, skipped, rescued,
  ignored}} then one ``host_stats`` {host, ok, changed, ...} per host

Lines are kept short (messages and diffs are capped) so the runner can parse
each one whole; anything else ansible prints (warnings on stderr) reaches the
runner as plain text.  Secrets are redacted by the runner, not here.  Works
with ansible-core 2.15 and later (2.19 renamed the result accessors).
"""

from __future__ import annotations

import json
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-untyped]

DOCUMENTATION = """
    name: masterchief_jsonl
    type: stdout
    short_description: one JSON object per line for the MasterChief deploy runner
    description:
        - Prints playbook, play and task starts, per-host results, diffs and
          the final stats as JSON lines.
"""

MSG_CHARS = 500
ITEM_CHARS = 120
DIFF_LINES = 200
DIFF_CHARS = 16000
STAT_KEYS = ("ok", "changed", "failures", "unreachable", "skipped", "rescued", "ignored")


def _attr(result: Any, name: str) -> Any:
    """``result.host`` on 2.19+, ``result._host`` before."""
    try:
        return getattr(result, name)
    except AttributeError:
        return getattr(result, "_" + name)


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(res: Any, failed: bool) -> str:
    msg = res.get("msg")
    if not msg and failed:
        msg = res.get("stderr") or res.get("module_stderr") or res.get("stdout")
    return _short(msg, MSG_CHARS) if msg else ""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "masterchief_jsonl"

    def _emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"mc": event, **fields}, default=str, ensure_ascii=False)
        self._display.display(line)

    # --- playbook structure -----------------------------------------------

    def v2_playbook_on_start(self, playbook: Any) -> None:
        name = getattr(playbook, "_file_name", "") or ""
        check = False
        try:
            from ansible import context  # type: ignore[import-untyped]

            check = bool(context.CLIARGS.get("check", False))
        except Exception:  # noqa: S110 -- only a label; never fail the run over it
            pass
        self._emit("playbook_start", playbook=str(name).rsplit("/", 1)[-1], check=check)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._emit("play_start", name=str(play.get_name()).strip())

    def v2_playbook_on_no_hosts_matched(self) -> None:
        self._emit("no_hosts")

    def _task(self, task: Any, handler: bool) -> None:
        role = getattr(task, "_role", None)
        self._emit(
            "task_start",
            name=str(task.get_name()).strip(),
            role=str(role.get_name()) if role is not None else "",
            action=str(getattr(task, "action", "")),
            handler=handler,
        )

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._task(task, handler=False)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._task(task, handler=True)

    # --- results ------------------------------------------------------------

    def _result(self, result: Any, status: str, *, item: bool = False) -> None:
        res = _attr(result, "result")
        label = ""
        if item:
            label = _short(self._get_item_label(res), ITEM_CHARS)
        elif res.get("results"):
            return  # a loop's aggregate: its items were reported one by one
        self._emit(
            "result",
            status=status,
            host=str(_attr(result, "host").get_name()),
            task=str(_attr(result, "task").get_name()).strip(),
            msg=_message(res, status in ("failed", "unreachable")),
            item=label,
        )

    def _ok_status(self, result: Any) -> str:
        return "changed" if _attr(result, "result").get("changed", False) else "ok"

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result(result, self._ok_status(result))

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result(result, "unreachable")

    def v2_runner_item_on_ok(self, result: Any) -> None:
        self._result(result, self._ok_status(result), item=True)

    def v2_runner_item_on_failed(self, result: Any) -> None:
        self._result(result, "failed", item=True)

    def v2_runner_item_on_skipped(self, result: Any) -> None:
        self._result(result, "skipped", item=True)

    def v2_on_file_diff(self, result: Any) -> None:
        res = _attr(result, "result")
        diff = res.get("diff")
        if not diff:
            return
        lines = self._get_diff(diff).splitlines()
        if len(lines) > DIFF_LINES:
            lines = [*lines[:DIFF_LINES], f"... {len(lines) - DIFF_LINES} more diff lines"]
        text = "\n".join(lines)
        if not text.strip():
            return
        self._emit(
            "diff",
            host=str(_attr(result, "host").get_name()),
            task=str(_attr(result, "task").get_name()).strip(),
            text=_short(text, DIFF_CHARS),
        )

    # --- the end ------------------------------------------------------------

    def v2_playbook_on_stats(self, stats: Any) -> None:
        hosts = sorted(stats.processed)
        per_host = {h: stats.summarize(h) for h in hosts}
        totals = {k: sum(int(s.get(k, 0)) for s in per_host.values()) for k in STAT_KEYS}
        self._emit("stats", hosts=len(hosts), totals=totals)
        for host in hosts:
            summary = per_host[host]
            self._emit("host_stats", host=host, **{k: int(summary.get(k, 0)) for k in STAT_KEYS})
