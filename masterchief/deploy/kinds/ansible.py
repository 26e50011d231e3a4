"""Ansible modules: ``ansible-playbook`` with our JSON-lines callback.

How this works.  Parameters and module config reach the playbook as
``-e @vars.yml`` in which every string -- keys included, at any depth -- is
tagged ``!unsafe``, so Ansible never renders Jinja in them (``{{
lookup('pipe', 'id') }}`` stays a string).  The inventory is the module's
for the job's environment; without one the play runs with ``-i localhost,
-c local`` (the bot's host, which bothost.py guards), and ``--limit all``
keeps a play's pattern from reaching Ansible's implicit localhost.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .base import Kind, ModuleLike, RunSpec, Step, base_env, plain, resolve_tool

__all__ = ["KIND", "PLUGIN_DIR", "VARS_FILE", "ansible_inventory", "ansible_vars_yaml"]

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "ansible_callback"
VARS_FILE = "vars.yml"


class _Unsafe(str):
    """A string written with Ansible's ``!unsafe`` tag."""


class _UnsafeDumper(yaml.SafeDumper):
    """Writes every string -- values and keys, at any depth -- as ``!unsafe "..."``."""


def _represent_unsafe(dumper: yaml.SafeDumper, value: _Unsafe) -> yaml.Node:
    return dumper.represent_scalar("!unsafe", str(value), style='"')


_UnsafeDumper.add_representer(_Unsafe, _represent_unsafe)


def _mark_unsafe(value: Any) -> Any:
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, Mapping):
        return {_mark_unsafe(str(k)): _mark_unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mark_unsafe(v) for v in value]
    return value


def ansible_vars_yaml(data: Mapping[str, Any]) -> str:
    """Extra vars for ``-e @vars.yml`` that Ansible never templates.

    Ansible renders Jinja in extra vars (``{{ lookup('pipe', 'id') }}`` in
    a JSON vars file runs ``id``, ``{{ api_token | reverse }}`` reads another
    variable), except in values tagged ``!unsafe``.  Every string here is,
    keys included, so parameters and module config arrive as plain data.
    ASCII-only output with escapes: no character can end the quoting.
    """
    return yaml.dump(
        _mark_unsafe(plain(dict(data))),
        Dumper=_UnsafeDumper,
        allow_unicode=False,
        default_flow_style=False,
        sort_keys=True,
        width=1 << 20,
    )


def ansible_inventory(module: ModuleLike, env: str) -> Path | None:
    """The inventory an Ansible module uses in ``env`` (None: it has none and
    runs with ``-i localhost, -c local``, i.e. on the bot's host)."""
    inventories = module.options.get("inventory") or {}
    inventory = inventories.get(env) if isinstance(inventories, Mapping) else None
    return Path(os.path.normpath(module.dir / str(inventory))) if inventory else None


def _steps(spec: RunSpec, helm_diff: bool) -> list[Step]:
    playbook = resolve_tool(spec, "ansible-playbook")
    env = base_env(spec, [playbook])
    env.update(
        ANSIBLE_STDOUT_CALLBACK="masterchief_jsonl",
        ANSIBLE_CALLBACK_PLUGINS=str(PLUGIN_DIR),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCAL_TEMP=str(spec.work_dir / "tmp" / "ansible"),
        PYTHONUNBUFFERED="1",
    )
    inventory = ansible_inventory(spec.module, spec.env)
    target: tuple[str, ...]
    if inventory is not None:
        target = ("-i", str(inventory))
    else:
        target = ("-i", "localhost,", "-c", "local")
    check = ("--check", "--diff") if spec.mode == "plan" else ()
    vars_file = spec.work_dir / VARS_FILE
    # --limit all: only hosts the inventory lists.  Without it a play whose
    # pattern comes out as "localhost" (hosts: "{{ limit }}" with
    # limit=localhost) gets Ansible's implicit localhost -- the bot's host,
    # through a local connection -- whatever the inventory says.
    argv = (playbook, *target, "--limit", "all", str(spec.module.entry), "-e", f"@{vars_file}")
    argv = (*argv, *check)
    return [Step("ansible-playbook", argv, env, spec.module.dir, output="ansible")]


KIND = Kind(steps=_steps, vars_file=VARS_FILE, render_vars=ansible_vars_yaml)
