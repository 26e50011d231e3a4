"""What every module kind shares: the run's spec, its steps, the tools and
the environment they run with.

How this works.  A ``RunSpec`` is one run of one module; a ``Kind`` turns it
into ``Step``s (a fixed argv each) and names the file its variables travel
in.  Tools are found like an operator expects -- the venv's bin, then the
bot's own ``PATH`` as it was when the job started, then ``SAFE_PATH`` -- and
run by absolute path.  ``base_env`` builds a child environment from
nothing: a fixed PATH (the resolved tools' folders and the venv's bin
first), ``HOME`` and ``TMPDIR`` inside the job's folder, ``LANG``, the
caller's explicit ``extra_env`` and ``MASTERCHIEF_JOB=<job id>``, a marker
by which ``process.terminate`` also finds the job's processes.  Nothing
else of the bot's environment (tokens, passwords) reaches a tool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from masterchief.config.secrets import Secret
from masterchief.deploy.module_config import tool_variables
from masterchief.deploy.parsers import OutputFormat
from masterchief.errors import ConfigError

__all__ = [
    "MARKER",
    "SAFE_PATH",
    "VENV_BIN",
    "Kind",
    "Mode",
    "ModuleLike",
    "RunSpec",
    "Step",
    "base_env",
    "find_tool",
    "json_vars",
    "merged_vars",
    "option_error",
    "plain",
    "resolve_tool",
    "tool_path",
]

Mode = Literal["deploy", "plan"]
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VENV_BIN = str(Path(sys.executable).parent)
MARKER = "MASTERCHIEF_JOB"
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class ModuleLike(Protocol):
    """What a runner needs of a loaded module (``manifest.Module`` provides it)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...  # ansible | terraform | kubernetes | script

    @property
    def dir(self) -> Path: ...  # the folder holding module.yaml

    @property
    def entry(self) -> Path: ...  # absolute: playbook, tf dir, chart/manifests dir, script

    @property
    def options(self) -> Mapping[str, Any]: ...  # the kind's section, {} if absent


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run of one module.

    ``params`` are validated parameters; a value the module declares secret
    must be passed as a ``Secret``.  ``variables`` is the merged module config
    (values may be ``Secret``); params override same-named variables.
    ``tools`` maps an executable name to a path (overrides the search);
    otherwise a tool is looked up in the venv's bin, then ``search_path``
    (the bot's ``PATH`` when the spec is made, i.e. at job start), then
    ``SAFE_PATH``, and run by its absolute path.  ``extra_env`` is added to
    the tool's environment -- the one explicit way to give it credentials
    such as ``KUBECONFIG``, since the bot's own environment is not inherited
    (PATH, HOME, TMPDIR, LANG and the job marker stay ours).
    """

    job_id: str
    module: ModuleLike
    env: str
    mode: Mode
    params: Mapping[str, Any]
    variables: Mapping[str, Any]
    work_dir: Path
    timeout_s: float
    kill_grace_s: float = 10.0
    max_line_bytes: int = 4096
    tail_lines: int = 50
    tools: Mapping[str, str] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    search_path: str = field(default_factory=lambda: os.environ.get("PATH", ""))

    def __post_init__(self) -> None:
        if not _JOB_ID.fullmatch(self.job_id):
            raise ValueError(f"invalid job id {self.job_id!r}")
        if not _ENV_NAME.fullmatch(self.env):
            raise ValueError(f"invalid environment name {self.env!r}")
        if self.mode not in ("deploy", "plan"):
            raise ValueError(f"invalid mode {self.mode!r}")
        if not self.work_dir.is_absolute():
            raise ValueError("work_dir must be absolute")
        if self.timeout_s <= 0 or self.kill_grace_s < 0:
            raise ValueError("timeout_s must be positive and kill_grace_s not negative")
        if self.max_line_bytes < 16 or self.tail_lines < 0:
            raise ValueError("max_line_bytes must be at least 16 and tail_lines not negative")


@dataclass(frozen=True, slots=True)
class Step:
    """One command of a run.  ``env`` is its whole environment (it may hold a
    script's revealed secrets, hence no repr).  ``ok_exit``: the exit codes
    that mean success.  ``announce``: a ``task`` line shown when it starts."""

    label: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    cwd: Path
    output: OutputFormat = "text"
    ok_exit: frozenset[int] = frozenset({0})
    announce: str | None = None


def merged_vars(spec: RunSpec) -> dict[str, Any]:
    """Module config with the parameters on top (secrets still wrapped).
    The bot's own settings in module config (``allow_bot_host``) are not
    variables of the tool and are left out."""
    return {**tool_variables(spec.variables), **spec.params}


def plain(value: Any) -> Any:
    """JSON-ready copy of ``value`` with every ``Secret`` revealed."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def tool_path(spec: RunSpec) -> str:
    """Where tools are looked for: the venv's bin (ansible-playbook), the bot's
    PATH as an operator set it (terraform, helm, kubectl), then ``SAFE_PATH``.
    Relative entries (``.``, empty) are dropped: they would name whatever
    folder the bot was started in."""
    return _tool_dirs(spec.search_path)


def _tool_dirs(search_path: str) -> str:
    dirs = [VENV_BIN, *search_path.split(os.pathsep), *SAFE_PATH.split(":")]
    return os.pathsep.join(dict.fromkeys(d for d in dirs if os.path.isabs(d)))


def find_tool(name: str, search_path: str | None = None) -> str:
    """The absolute path of tool ``name`` as a run would find it (``search_path``:
    the bot's PATH, by default the current one); the bare name when it is
    nowhere (running it then fails with "cannot run NAME")."""
    path = os.environ.get("PATH", "") if search_path is None else search_path
    found = shutil.which(name, path=_tool_dirs(path))
    return os.path.abspath(found) if found else name


def resolve_tool(spec: RunSpec, name: str) -> str:
    return spec.tools.get(name) or find_tool(name, spec.search_path)


def base_env(spec: RunSpec, tools: Sequence[str]) -> dict[str, str]:
    dirs: list[str] = [str(Path(t).parent) for t in tools if os.path.isabs(t)]
    dirs += [VENV_BIN, *SAFE_PATH.split(":")]
    path = ":".join(dict.fromkeys(dirs))
    env = dict(spec.extra_env)
    env.update(
        PATH=path,
        HOME=str(spec.work_dir),
        TMPDIR=str(spec.work_dir / "tmp"),
        LANG="C.UTF-8",
    )
    env[MARKER] = spec.job_id
    return env


def option_error(spec: RunSpec, key: str, detail: str) -> ConfigError:
    return ConfigError(
        detail, file=spec.module.dir / "module.yaml", key=f"{spec.module.kind}.{key}"
    )


def json_vars(data: Mapping[str, Any]) -> str:
    """A JSON variables file (Terraform, Helm and scripts read these as data)."""
    return json.dumps(plain(data), indent=2, sort_keys=True)


def _always(_spec: RunSpec) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Kind:
    """One module kind, as the runner needs it.  ``steps(spec, helm_diff)``
    builds the run's commands; the variables go to ``vars_file`` in the job's
    folder, written by ``render_vars``, when ``uses_vars(spec)``;
    ``sensitive_files`` are other files of the job's folder that hold
    secrets in clear (removed after the run, like the variables file)."""

    steps: Callable[[RunSpec, bool], list[Step]]
    vars_file: str
    render_vars: Callable[[Mapping[str, Any]], str] = json_vars
    uses_vars: Callable[[RunSpec], bool] = _always
    sensitive_files: tuple[str, ...] = ()
