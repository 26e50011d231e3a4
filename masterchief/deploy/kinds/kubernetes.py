"""Kubernetes modules: Helm charts (values as a file) or kubectl manifests.

How this works.  Helm gets parameters and module config as ``-f
values.json``, never ``--set``; a deploy is ``helm upgrade --install
--wait``, a dry run ``helm diff`` when the plugin is installed (probed with
``helm plugin list``), else ``helm template``.  ``kubectl`` applies (or
diffs) the manifests as they are: nothing could carry values, so a module
with parameters or module config is refused rather than silently dropping
them.
"""

from __future__ import annotations

import asyncio
import re

from masterchief.deploy.module_config import tool_variables
from masterchief.deploy.process import run_process

from .base import MARKER, Kind, RunSpec, Step, base_env, option_error, resolve_tool

__all__ = ["KIND", "VARS_FILE", "k8s_tool", "probe_helm_diff"]

VARS_FILE = "values.json"
PROBE_TIMEOUT_S = 30.0

_K8S_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?")


def k8s_tool(spec: RunSpec) -> str:
    """``helm`` or ``kubectl``: the tool the module names (helm by default)."""
    tool = str(spec.module.options.get("tool", "helm"))
    if tool not in ("helm", "kubectl"):
        raise option_error(spec, "tool", "must be helm or kubectl")
    return tool


def _k8s_name(spec: RunSpec, key: str, default: str) -> str:
    # A manifest's kubernetes section holds None for an option it leaves out.
    given = spec.module.options.get(key)
    value = default if given is None else str(given)
    if not _K8S_NAME.fullmatch(value):
        raise option_error(spec, key, f"invalid name {value!r} (lowercase letters, digits, -)")
    return value


def _steps(spec: RunSpec, helm_diff: bool) -> list[Step]:
    tool_name = k8s_tool(spec)
    namespace = _k8s_name(spec, "namespace", "default")
    target = str(spec.module.entry)
    tool = resolve_tool(spec, tool_name)
    env = base_env(spec, [tool])
    cwd = spec.module.dir
    argv: tuple[str, ...]
    if tool_name == "kubectl":
        # kubectl applies the manifests as they are: nothing could carry values
        # (the manifest loader refuses declared parameters; this catches config).
        if spec.params:
            raise option_error(
                spec, "tool", "parameters are not supported for kubectl modules; use tool: helm"
            )
        if tool_variables(spec.variables):
            raise option_error(
                spec,
                "tool",
                f"module config (config/modules/{spec.module.name}.yaml) is not supported "
                "for kubectl modules; use tool: helm",
            )
        if spec.mode == "deploy":
            argv = (tool, "apply", "-f", target, "--namespace", namespace)
            return [Step("kubectl apply", argv, env, cwd, output="kubectl")]
        argv = (tool, "diff", "-f", target, "--namespace", namespace)
        # kubectl diff: 0 no differences, 1 differences found, >1 an error.
        return [Step("kubectl diff", argv, env, cwd, ok_exit=frozenset({0, 1}))]
    release = _k8s_name(spec, "release", spec.module.name)
    values = ("-f", str(spec.work_dir / VARS_FILE))
    where = ("--namespace", namespace)
    if spec.mode == "deploy":
        wait = ("--wait", "--timeout", f"{max(int(spec.timeout_s), 1)}s")
        argv = (tool, "upgrade", "--install", release, target, *where, "--create-namespace")
        argv = (*argv, *values, *wait)
        return [Step("helm upgrade", argv, env, cwd)]
    if helm_diff:
        argv = (tool, "diff", "upgrade", release, target, *where, *values, "--allow-unreleased")
        return [Step("helm diff", argv, env, cwd)]
    argv = (tool, "template", release, target, *where, *values)
    return [Step("helm template", argv, env, cwd)]


async def probe_helm_diff(spec: RunSpec, cancel: asyncio.Event | None) -> bool:
    """Is the helm-diff plugin installed?  (``helm plugin list`` names it.)"""
    lines: list[str] = []
    tool = resolve_tool(spec, "helm")
    try:
        result = await run_process(
            (tool, "plugin", "list"),
            env=base_env(spec, [tool]),
            cwd=spec.module.dir,
            on_line=lambda text, cut: lines.append(text),
            timeout_s=min(PROBE_TIMEOUT_S, spec.timeout_s),
            kill_grace_s=min(spec.kill_grace_s, 2.0),
            marker=f"{MARKER}={spec.job_id}",
            cancel=cancel,
        )
    except OSError:
        return False
    if result.outcome != "exited" or result.exit_code != 0:
        return False
    return any(line.split()[:1] == ["diff"] for line in lines[:200])


def _uses_vars(spec: RunSpec) -> bool:
    return k8s_tool(spec) != "kubectl"


KIND = Kind(steps=_steps, vars_file=VARS_FILE, uses_vars=_uses_vars)
