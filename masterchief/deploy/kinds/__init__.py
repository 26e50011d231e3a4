"""The module kinds: one module per kind, and this, the one list of them.

How this works.  Each kind builds a run's commands as fixed argv templates of the tool
path, flags, the module's own paths and names checked against strict
patterns, and the paths of files we write; parameters and module config
never appear in an argv.  They travel as data (a vars file, or a script's
environment), so ``1.0; rm -rf /``, ``--kubeconfig=/tmp/x``, ``{{
lookup('pipe', 'id') }}``, ``${file("/etc/passwd")}`` or ``a,b=c`` as a
parameter value is just a string in a file.  Adding a kind is a module here
and one line in ``KINDS``.
"""

from __future__ import annotations

from pathlib import Path

from masterchief.errors import ConfigError

from . import ansible, kubernetes, script, terraform
from .base import Kind, RunSpec, Step

__all__ = ["KINDS", "build_steps", "kind_of", "vars_path"]

KINDS: dict[str, Kind] = {
    "ansible": ansible.KIND,
    "terraform": terraform.KIND,
    "kubernetes": kubernetes.KIND,
    "script": script.KIND,
}


def kind_of(spec: RunSpec) -> Kind:
    """``spec``'s module kind; ``ConfigError`` naming the manifest when unknown."""
    kind = KINDS.get(spec.module.kind)
    if kind is None:
        raise ConfigError(
            f"unknown module kind {spec.module.kind!r}",
            file=spec.module.dir / "module.yaml",
            key="kind",
        )
    return kind


def build_steps(spec: RunSpec, *, helm_diff: bool = False) -> list[Step]:
    """The commands of ``spec``'s run, in order.  Pure (it only looks tools up
    on PATH).  ``helm_diff``: the helm-diff plugin is installed (plan mode)."""
    return kind_of(spec).steps(spec, helm_diff)


def vars_path(spec: RunSpec) -> Path | None:
    """Where the run's variables file goes (None: this run has none)."""
    kind = kind_of(spec)
    return spec.work_dir / kind.vars_file if kind.uses_vars(spec) else None
