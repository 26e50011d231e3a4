"""Script modules: the module's own executable, no shell.

How this works.  Parameters and module config reach the script as
``MC_PARAM_<NAME>`` / ``MC_VAR_<NAME>`` environment variables (lists and
mappings as JSON) and in the JSON file ``MC_VARS_FILE`` names; ``--dry-run``
is its plan mode.  The script's folder stays off PATH: it is not a tool.
"""

from __future__ import annotations

import json
import re
from typing import Any

from masterchief.deploy.module_config import tool_variables
from masterchief.errors import ConfigError, UserError

from .base import Kind, RunSpec, Step, base_env, plain

__all__ = ["KIND", "VARS_FILE"]

VARS_FILE = "vars.json"


def _env_value(value: Any) -> str:
    flat = plain(value)
    if isinstance(flat, bool):
        return "true" if flat else "false"
    if flat is None:
        return ""
    if isinstance(flat, str | int | float):
        return str(flat)
    return json.dumps(flat, separators=(",", ":"), sort_keys=True)


def _env_key(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


def _steps(spec: RunSpec, helm_diff: bool) -> list[Step]:
    entry = str(spec.module.entry)
    env = base_env(spec, [])  # the script is not a tool: its folder stays off PATH
    env.update(
        MC_JOB_ID=spec.job_id,
        MC_MODULE=spec.module.name,
        MC_ENV=spec.env,
        MC_MODE=spec.mode,
        MC_VARS_FILE=str(spec.work_dir / VARS_FILE),
    )
    for prefix, values, error in (
        ("MC_VAR_", tool_variables(spec.variables), ConfigError),
        ("MC_PARAM_", spec.params, UserError),
    ):
        for name, value in values.items():
            text = _env_value(value)
            if "\0" in text:
                raise error(f"{name} contains a NUL character, which an environment cannot hold")
            env[prefix + _env_key(str(name))] = text
    argv = (entry, "--dry-run") if spec.mode == "plan" else (entry,)
    return [Step("script", argv, env, spec.module.dir)]


KIND = Kind(steps=_steps, vars_file=VARS_FILE)
