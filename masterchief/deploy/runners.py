"""Deploy runners: a fixed argv template per module kind, run as one process group.

How this works.  ``build_steps(spec)`` is pure: from the module's kind it
builds the commands of a run (terraform: init, workspace, plan, apply; the
other kinds: one command).  Each argv is a fixed template of the tool path,
flags, the module's own paths and names checked against strict patterns, and
the paths of files we write; parameters and module config never appear in an
argv.  They travel as data: a vars file (``-e @vars.yml`` with every string
tagged ``!unsafe`` so Ansible never renders Jinja in it, ``-var-file`` JSON,
which Terraform does not interpolate, ``-f values.json``, never ``--set``)
or, for scripts, ``MC_PARAM_*`` / ``MC_VAR_*`` environment variables (no
shell).  So ``1.0; rm -rf /``, ``--kubeconfig=/tmp/x``, ``{{ lookup('pipe',
'id') }}``, ``${file("/etc/passwd")}`` or ``a,b=c`` as a parameter value is
just a string in a file.

Tools are found like an operator expects -- the venv's bin, then the bot's
own ``PATH`` as it was when the job started, then ``SAFE_PATH`` -- and run by
absolute path.  The child environment is built from nothing: a fixed PATH
(the resolved tools' folders and the venv's bin first), ``HOME`` and ``TMPDIR`` inside the
job's folder, ``LANG``, the kind's variables, the caller's explicit
``extra_env`` and ``MASTERCHIEF_JOB=<job id>``, a marker by which
``process.terminate`` also finds the job's processes (every one of them is
found anyway: the launcher ``process`` runs a tool under is a subreaper, so
even one that left the group and dropped the marker stays its descendant).
Nothing else of the bot's environment (tokens, passwords)
reaches a tool.

``run(spec, on_output)`` writes the vars file (mode 0600, the only place where
secret values are revealed besides a script's environment), runs the steps
through ``process.run_process`` under one deadline for the whole run,
stops at the first step whose exit code is not accepted, removes the files
holding secrets, and returns a ``RunResult``.  Every output line is cleaned
(ANSI sequences and control characters removed), redacted by the global
redactor and by one that knows this run's secret values, cut to
``max_line_bytes`` and handed to ``on_output`` as an ``OutputLine``.

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
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from masterchief.config.secrets import MASK, REDACTOR, Redactor, Secret
from masterchief.deploy.module_config import tool_variables
from masterchief.deploy.parsers import Item, LineKind, OutputFormat, Parser, parser_for
from masterchief.deploy.process import run_process
from masterchief.errors import ConfigError, UserError

__all__ = [
    "PLUGIN_DIR",
    "SAFE_PATH",
    "LineKind",
    "Mode",
    "ModuleLike",
    "OutputLine",
    "RunResult",
    "RunSpec",
    "Status",
    "Step",
    "ansible_inventory",
    "ansible_vars_yaml",
    "build_steps",
    "clean_text",
    "find_tool",
    "run",
    "tool_path",
    "vars_path",
]

log = logging.getLogger(__name__)

Mode = Literal["deploy", "plan"]
Status = Literal["succeeded", "failed", "timed_out", "cancelled"]

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VENV_BIN = str(Path(sys.executable).parent)
PLUGIN_DIR = Path(__file__).resolve().parent / "ansible_callback"
MARKER = "MASTERCHIEF_JOB"
RAW_LINE_BYTES = 65536
CHANGES_KEPT = 200  # plan lines a result keeps (all are counted)
PROBE_TIMEOUT_S = 30.0

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_K8S_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?")


class ModuleLike(Protocol):
    """What a runner needs of a loaded module (``core.modules`` provides it)."""

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


# --- pure: files, environment, argv -------------------------------------------

_VARS_FILE = {
    "ansible": "vars.yml",
    "terraform": "vars.tfvars.json",
    "kubernetes": "values.json",
    "script": "vars.json",
}
_SENSITIVE_FILES = ("plan.tfplan",)  # terraform plans hold variable values in clear


def vars_path(spec: RunSpec) -> Path | None:
    """Where the run's variables file goes (None: this run has none)."""
    if spec.module.kind == "kubernetes" and _k8s_tool(spec) == "kubectl":
        return None
    name = _VARS_FILE.get(spec.module.kind)
    return spec.work_dir / name if name else None


def merged_vars(spec: RunSpec) -> dict[str, Any]:
    """Module config with the parameters on top (secrets still wrapped).
    The bot's own settings in module config (``allow_bot_host``) are not
    variables of the tool and are left out."""
    return {**tool_variables(spec.variables), **spec.params}


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
        _mark_unsafe(_plain(dict(data))),
        Dumper=_UnsafeDumper,
        allow_unicode=False,
        default_flow_style=False,
        sort_keys=True,
        width=1 << 20,
    )


def _plain(value: Any) -> Any:
    """JSON-ready copy of ``value`` with every ``Secret`` revealed."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _secret_values(value: Any) -> Iterator[str]:
    if isinstance(value, Secret):
        yield value.reveal()
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _secret_values(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _secret_values(v)


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


def _tool(spec: RunSpec, name: str) -> str:
    return spec.tools.get(name) or find_tool(name, spec.search_path)


def _base_env(spec: RunSpec, tools: Sequence[str]) -> dict[str, str]:
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


def _k8s_tool(spec: RunSpec) -> str:
    tool = str(spec.module.options.get("tool", "helm"))
    if tool not in ("helm", "kubectl"):
        raise _option_error(spec, "tool", "must be helm or kubectl")
    return tool


def _k8s_name(spec: RunSpec, key: str, default: str) -> str:
    # A manifest's kubernetes section holds None for an option it leaves out.
    given = spec.module.options.get(key)
    value = default if given is None else str(given)
    if not _K8S_NAME.fullmatch(value):
        raise _option_error(spec, key, f"invalid name {value!r} (lowercase letters, digits, -)")
    return value


def _option_error(spec: RunSpec, key: str, detail: str) -> ConfigError:
    return ConfigError(
        detail, file=spec.module.dir / "module.yaml", key=f"{spec.module.kind}.{key}"
    )


def ansible_inventory(module: ModuleLike, env: str) -> Path | None:
    """The inventory an Ansible module uses in ``env`` (None: it has none and
    runs with ``-i localhost, -c local``, i.e. on the bot's host)."""
    inventories = module.options.get("inventory") or {}
    inventory = inventories.get(env) if isinstance(inventories, Mapping) else None
    return Path(os.path.normpath(module.dir / str(inventory))) if inventory else None


def _ansible(spec: RunSpec, helm_diff: bool) -> list[Step]:
    playbook = _tool(spec, "ansible-playbook")
    env = _base_env(spec, [playbook])
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
    vars_file = spec.work_dir / _VARS_FILE["ansible"]
    # --limit all: only hosts the inventory lists.  Without it a play whose
    # pattern comes out as "localhost" (hosts: "{{ limit }}" with
    # limit=localhost) gets Ansible's implicit localhost -- the bot's host,
    # through a local connection -- whatever the inventory says.
    argv = (playbook, *target, "--limit", "all", str(spec.module.entry), "-e", f"@{vars_file}")
    argv = (*argv, *check)
    return [Step("ansible-playbook", argv, env, spec.module.dir, output="ansible")]


def _terraform(spec: RunSpec, helm_diff: bool) -> list[Step]:
    tf = _tool(spec, "terraform")
    env = _base_env(spec, [tf])
    env.update(
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",  # no version check calls to hashicorp.com
        TF_DATA_DIR=str(spec.work_dir / "terraform.d"),
    )
    entry = spec.module.entry
    cwd = entry.parent if entry.suffix == ".tf" else entry  # the folder of .tf files
    plan_file = str(spec.work_dir / "plan.tfplan")
    vars_file = str(spec.work_dir / _VARS_FILE["terraform"])
    steps = [
        Step("init", (tf, "init", "-input=false", "-no-color"), env, cwd, announce="terraform init")
    ]
    if spec.module.options.get("workspace", True):
        argv = (tf, "workspace", "select", "-or-create", spec.env)
        steps.append(Step("workspace", argv, env, cwd, announce=f"terraform workspace {spec.env}"))
    plan: tuple[str, ...] = (tf, "plan", "-input=false", "-no-color", "-json")
    plan = (*plan, f"-var-file={vars_file}", f"-out={plan_file}")
    steps.append(Step("plan", plan, env, cwd, output="terraform", announce="terraform plan"))
    if spec.mode == "deploy":
        apply = (tf, "apply", "-input=false", "-no-color", "-json", plan_file)
        steps.append(Step("apply", apply, env, cwd, output="terraform", announce="terraform apply"))
    return steps


def _kubernetes(spec: RunSpec, helm_diff: bool) -> list[Step]:
    tool_name = _k8s_tool(spec)
    namespace = _k8s_name(spec, "namespace", "default")
    target = str(spec.module.entry)
    tool = _tool(spec, tool_name)
    env = _base_env(spec, [tool])
    cwd = spec.module.dir
    argv: tuple[str, ...]
    if tool_name == "kubectl":
        # kubectl applies the manifests as they are: nothing could carry values
        # (the manifest loader refuses declared parameters; this catches config).
        if spec.params:
            raise _option_error(
                spec, "tool", "parameters are not supported for kubectl modules; use tool: helm"
            )
        if tool_variables(spec.variables):
            raise _option_error(
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
    values = ("-f", str(spec.work_dir / _VARS_FILE["kubernetes"]))
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


def _env_value(value: Any) -> str:
    plain = _plain(value)
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if plain is None:
        return ""
    if isinstance(plain, str | int | float):
        return str(plain)
    return json.dumps(plain, separators=(",", ":"), sort_keys=True)


def _env_key(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


def _script(spec: RunSpec, helm_diff: bool) -> list[Step]:
    entry = str(spec.module.entry)
    env = _base_env(spec, [])  # the script is not a tool: its folder stays off PATH
    env.update(
        MC_JOB_ID=spec.job_id,
        MC_MODULE=spec.module.name,
        MC_ENV=spec.env,
        MC_MODE=spec.mode,
        MC_VARS_FILE=str(spec.work_dir / _VARS_FILE["script"]),
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


_BUILDERS: dict[str, Callable[[RunSpec, bool], list[Step]]] = {
    "ansible": _ansible,
    "terraform": _terraform,
    "kubernetes": _kubernetes,
    "script": _script,
}


def build_steps(spec: RunSpec, *, helm_diff: bool = False) -> list[Step]:
    """The commands of ``spec``'s run, in order.  Pure (it only looks tools up
    on PATH).  ``helm_diff``: the helm-diff plugin is installed (plan mode)."""
    builder = _BUILDERS.get(spec.module.kind)
    if builder is None:
        raise ConfigError(
            f"unknown module kind {spec.module.kind!r}",
            file=spec.module.dir / "module.yaml",
            key="kind",
        )
    return builder(spec, helm_diff)


# --- pure: cleaning and parsing output -----------------------------------------

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


# --- running --------------------------------------------------------------------


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
    values = (*_secret_values(spec.variables), *_secret_values(spec.params))
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
    if target is None:
        return
    data = merged_vars(spec)
    if spec.module.kind == "ansible":
        _write_private(target, ansible_vars_yaml(data))
    else:
        _write_private(target, json.dumps(_plain(data), indent=2, sort_keys=True))


def _cleanup(spec: RunSpec) -> None:
    names = [*_VARS_FILE.values(), *_SENSITIVE_FILES]
    for name in dict.fromkeys(names):
        with contextlib.suppress(FileNotFoundError):
            (spec.work_dir / name).unlink()
    shutil.rmtree(spec.work_dir / "tmp", ignore_errors=True)


async def _probe_helm_diff(spec: RunSpec, cancel: asyncio.Event | None) -> bool:
    """Is the helm-diff plugin installed?  (``helm plugin list`` names it.)"""
    lines: list[str] = []
    tool = _tool(spec, "helm")
    try:
        result = await run_process(
            (tool, "plugin", "list"),
            env=_base_env(spec, [tool]),
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
        if spec.module.kind == "kubernetes" and spec.mode == "plan" and _k8s_tool(spec) == "helm":
            helm_diff = await _probe_helm_diff(spec, cancel)
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
