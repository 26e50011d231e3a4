"""How this works.

The deploy modules in ``modules/`` are content, not Python: an Ansible
playbook with roles, two Terraform root modules, a Helm chart and a shell
script, each described by a ``module.yaml``.  These tests check them without
IRC and without touching anything outside this machine:

- the playbook runs in check mode (``--check --diff``) against this machine
  (an inventory the test writes: the shipped ones never name it) and must
  finish with ``failed=0``; it also passes ``--syntax-check`` with every
  inventory, and ``limit`` narrows plays;
- every role variable a role uses is defined (defaults, register, set_fact);
- every ``module.yaml`` has the manifest fields, valid values and an entry
  that exists; parameter patterns accept and refuse what they should;
- ``run.sh`` prints its plan under ``--dry-run``, refuses bad names before it
  runs anything (stub ``systemctl``/``service`` on PATH record any call);
- Terraform files: balanced braces, ``azurerm`` required in versions.tf, every
  ``var.x`` declared and every variable used, module parameters/config keys
  are variables (``terraform fmt -check`` too where terraform is installed);
- the Helm chart: Chart.yaml fields, every ``.Values.a.b`` path a template
  reads exists in values.yaml, balanced template actions, and the chart's
  MasterChief configuration validates against the real ``Config`` model;
- ``config/modules`` files belong to a module and name only known variables;
  none lets a module run on the bot's own host (``allow_bot_host``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from masterchief.bindings.flags import FlagMask
from masterchief.config.engine import build_config

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "modules"
CONFIG_MODULES = ROOT / "config" / "modules"
ANSIBLE_DIR = MODULES / "ansible"
PLAYBOOK = ANSIBLE_DIR / "playbooks" / "site.yml"
INVENTORIES = ANSIBLE_DIR / "inventories"
ROLES = ANSIBLE_DIR / "roles"
CHART = MODULES / "kubernetes" / "masterchief"
RUN_SH = MODULES / "scripts" / "restart-service" / "run.sh"
TERRAFORM_DIRS = [
    MODULES / "terraform" / "azure" / "networking",
    MODULES / "terraform" / "azure" / "compute",
]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

EXPECTED_MODULES = {
    "baseline": ("ansible", ANSIBLE_DIR / "baseline"),
    "azure-networking": ("terraform", MODULES / "terraform" / "azure" / "networking"),
    "azure-aks": ("terraform", MODULES / "terraform" / "azure" / "compute"),
    "masterchief": ("kubernetes", CHART),
    "restart-service": ("script", MODULES / "scripts" / "restart-service"),
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def manifests() -> dict[str, tuple[Path, dict[str, Any]]]:
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(MODULES.rglob("module.yaml")):
        data = load_yaml(path)
        assert isinstance(data, dict), f"{path}: not a mapping"
        assert data.get("name") not in found, f"{path}: duplicate module name {data.get('name')!r}"
        found[data["name"]] = (path, data)
    return found


# --- Ansible -------------------------------------------------------------------------


def ansible_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ANSIBLE_CONFIG", None)
    env.update(
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    return env


def run_ansible(
    tmp_path: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip(f"{ANSIBLE_PLAYBOOK} is missing (install the dev extra: ansible-core)")
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), *args],
        cwd=ROOT,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


RECAP = re.compile(
    r"^localhost\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@pytest.mark.timeout(120)
def test_playbook_check_mode_against_this_machine(tmp_path: Path) -> None:
    # The test's own inventory: the shipped dev.ini is empty on purpose.
    inventory = tmp_path / "this-machine.ini"
    inventory.write_text(
        "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"
        "[docker]\n[kubernetes]\n"
    )
    proc = run_ansible(
        tmp_path,
        "-i",
        str(inventory),
        str(PLAYBOOK),
        "--check",
        "--diff",
        timeout=110,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    recap = RECAP.search(proc.stdout)
    assert recap is not None, output[-4000:]
    assert recap["failed"] == "0", output[-4000:]
    assert recap["unreachable"] == "0"
    # The baseline play really ran (not "no hosts matched"): all three roles.
    assert int(recap["ok"]) >= 15
    for role in ("common", "security-hardening", "monitoring-agent"):
        assert f"roles/{role} : " in proc.stdout, role
    # Check mode downloads nothing; it says what it would install.
    if not Path("/usr/local/bin/node_exporter").exists():
        assert "would download node_exporter-1.8.2.linux-" in proc.stdout


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_playbook_syntax_check(tmp_path: Path, env: str) -> None:
    proc = run_ansible(
        tmp_path, "--syntax-check", "-i", str(INVENTORIES / f"{env}.ini"), str(PLAYBOOK)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "playbook: " in proc.stdout


def test_limit_narrows_every_play(tmp_path: Path) -> None:
    proc = run_ansible(
        tmp_path,
        "--list-hosts",
        "-i",
        str(INVENTORIES / "prod.ini"),
        str(PLAYBOOK),
        "-e",
        "limit=app",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plays = proc.stdout.split("play #")[1:]
    assert len(plays) == 3
    baseline, docker, kubernetes = plays
    assert "hosts (3)" in baseline and "app-01.prod.example.com" in baseline
    assert "k8s-" not in baseline
    assert "hosts (3)" in docker
    assert "hosts (0)" in kubernetes


def test_roles_have_the_standard_layout() -> None:
    roles = sorted(p.name for p in ROLES.iterdir() if p.is_dir())
    assert roles == ["common", "docker", "kubernetes", "monitoring-agent", "security-hardening"]
    for role in roles:
        for part in ("defaults", "tasks", "handlers", "meta"):
            path = ROLES / role / part / "main.yml"
            assert path.is_file(), path
            load_yaml(path)  # parses
        assert load_yaml(ROLES / role / "meta" / "main.yml")["galaxy_info"]["description"]


ROLE_PREFIXES = {
    "common": "common_",
    "security-hardening": "hardening_",
    "monitoring-agent": "node_exporter_",
    "docker": "docker_",
    "kubernetes": "kubernetes_",
}


def _task_names(node: Any) -> Iterator[str]:
    """Variables a task file defines: register, set_fact keys, vars, loop_var."""
    if isinstance(node, list):
        for item in node:
            yield from _task_names(item)
    elif isinstance(node, dict):
        if isinstance(node.get("register"), str):
            yield node["register"]
        for key in ("ansible.builtin.set_fact", "vars"):
            if isinstance(node.get(key), dict):
                yield from node[key]
        loop_control = node.get("loop_control")
        if isinstance(loop_control, dict) and "loop_var" in loop_control:
            yield loop_control["loop_var"]
        for key in ("block", "rescue", "always"):
            yield from _task_names(node.get(key))


@pytest.mark.parametrize("role", sorted(ROLE_PREFIXES))
def test_role_variables_are_defined(role: str) -> None:
    prefix = ROLE_PREFIXES[role]
    base = ROLES / role
    defined = set(load_yaml(base / "defaults" / "main.yml"))
    assert all(name.startswith(prefix) for name in defined), defined
    texts = []
    for sub in ("tasks", "handlers", "templates"):
        for path in sorted((base / sub).glob("*")):
            texts.append(path.read_text(encoding="utf-8"))
            if path.suffix == ".yml":
                defined.update(_task_names(load_yaml(path)))
    name = re.compile(rf"\b{prefix}[a-z0-9_]+\b")
    used = set(name.findall("\n".join(texts)))
    assert used - defined == set()
    # Every default is read somewhere: by the role, or by another default.
    defaults_text = (base / "defaults" / "main.yml").read_text(encoding="utf-8")
    in_defaults = set(name.findall(" ".join(re.findall(r"\{\{.*?\}\}", defaults_text))))
    assert set(load_yaml(base / "defaults" / "main.yml")) - used - in_defaults == set()


# --- manifests -----------------------------------------------------------------------

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
VERSION = re.compile(r"\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?")
ENV_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
KINDS = {"ansible", "terraform", "kubernetes", "script"}
TOP_FIELDS = {
    "name", "version", "kind", "description", "entry", "requires", "environments",
    "flags", "approval", "timeout_s", "parameters",
}  # fmt: skip
PARAM_FIELDS = {
    "type", "description", "required", "default", "pattern", "enum",
    "minimum", "maximum", "max_length", "secret",
}  # fmt: skip
PARAM_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


def param_accepts(spec: dict[str, Any], value: Any) -> bool:
    """The manifest's ParamSpec rules for one value (full-match patterns)."""
    kind = spec.get("type", "string")
    if kind != "boolean" and isinstance(value, bool):
        return False
    if not isinstance(value, PARAM_TYPES[kind]):
        return False
    if kind == "string":
        if len(value) > spec.get("max_length", 256):
            return False
        if "pattern" in spec and re.fullmatch(spec["pattern"], value) is None:
            return False
    if kind in ("integer", "number"):
        if "minimum" in spec and value < spec["minimum"]:
            return False
        if "maximum" in spec and value > spec["maximum"]:
            return False
    return "enum" not in spec or value in spec["enum"]


def manifest_problems(path: Path, data: dict[str, Any], names: set[str]) -> list[str]:
    problems: list[str] = []
    where = path.relative_to(ROOT)

    def bad(message: str) -> None:
        problems.append(f"{where}: {message}")

    kind = data.get("kind")
    if set(data) - TOP_FIELDS - {kind}:
        bad(f"unknown keys {sorted(set(data) - TOP_FIELDS - {kind})}")
    if not NAME.fullmatch(str(data.get("name", ""))):
        bad(f"name {data.get('name')!r}")
    if not VERSION.fullmatch(str(data.get("version", ""))):
        bad(f"version {data.get('version')!r}")
    if kind not in KINDS:
        bad(f"kind {kind!r}")
    if not isinstance(data.get("description"), str) or not data["description"]:
        bad("description missing")
    entry = data.get("entry")
    if not isinstance(entry, str) or not (path.parent / entry).exists():
        bad(f"entry {entry!r} does not exist")
    for required in data.get("requires", []):
        if required not in names:
            bad(f"requires unknown module {required!r}")
    envs = data.get("environments")
    if not isinstance(envs, list) or not envs:
        bad("environments must be a non-empty list")
        envs = []
    for env in envs:
        if not ENV_NAME.fullmatch(str(env)):
            bad(f"environment {env!r}")
    try:
        FlagMask.parse(data.get("flags", ""))
    except ValueError as exc:
        bad(f"flags: {exc}")
    for env, rule in (data.get("approval") or {}).items():
        if env not in envs:
            bad(f"approval for unlisted environment {env!r}")
        if set(rule) - {"approvers", "flags", "ttl_s"}:
            bad(f"approval.{env}: unknown keys")
        if not isinstance(rule.get("approvers"), int) or rule["approvers"] < 1:
            bad(f"approval.{env}.approvers")
        FlagMask.parse(rule.get("flags", "-|-"))
        if not 0 < rule.get("ttl_s", 1) <= 86400:
            bad(f"approval.{env}.ttl_s")
    timeout = data.get("timeout_s", 1800)
    if not isinstance(timeout, int) or not 0 < timeout <= 86400:
        bad(f"timeout_s {timeout!r}")
    for pname, spec in (data.get("parameters") or {}).items():
        if not PARAM_NAME.fullmatch(pname):
            bad(f"parameter name {pname!r}")
        if set(spec) - PARAM_FIELDS:
            bad(f"parameter {pname}: unknown keys {sorted(set(spec) - PARAM_FIELDS)}")
        if spec.get("type", "string") not in PARAM_TYPES:
            bad(f"parameter {pname}: type {spec.get('type')!r}")
            continue
        if "pattern" in spec:
            re.compile(spec["pattern"])
        if "default" in spec and not param_accepts(spec, spec["default"]):
            bad(f"parameter {pname}: default {spec['default']!r} fails its own spec")
    section = data.get(kind) if isinstance(kind, str) else None
    if kind == "ansible" and section is not None:
        for env, inventory in section.get("inventory", {}).items():
            if env not in envs:
                bad(f"ansible.inventory for unlisted environment {env!r}")
            if not (path.parent / inventory).is_file():
                bad(f"ansible.inventory.{env}: {inventory} does not exist")
    if (
        kind == "terraform"
        and section is not None
        and (set(section) - {"workspace"} or not isinstance(section.get("workspace", False), bool))
    ):
        bad("terraform section")
    if kind == "kubernetes" and section is not None:
        if section.get("tool") not in ("helm", "kubectl"):
            bad("kubernetes.tool")
        for key in ("release", "namespace"):
            if not DNS_LABEL.fullmatch(str(section.get(key, ""))):
                bad(f"kubernetes.{key}")
    return problems


def test_every_manifest_is_valid() -> None:
    found = manifests()
    assert set(found) == set(EXPECTED_MODULES)
    for name, (path, data) in found.items():
        kind, folder = EXPECTED_MODULES[name]
        assert data["kind"] == kind
        assert path.parent == folder
        assert manifest_problems(path, data, set(found)) == []


def test_manifest_checks_catch_mistakes() -> None:
    path, data = manifests()["restart-service"]
    broken = {
        **data,
        "entry": "missing.sh",
        "approval": {"qa": {"approvers": 0}},
        "requires": ["nope"],
        "parameters": {"Bad": {"type": "text"}, "n": {"type": "integer", "default": "x"}},
    }
    problems = "\n".join(manifest_problems(path, broken, {"restart-service"}))
    for fragment in (
        "entry 'missing.sh'",
        "unlisted environment 'qa'",
        "approvers",
        "unknown module 'nope'",
        "parameter name 'Bad'",
        "type 'text'",
        "default 'x'",
    ):
        assert fragment in problems


def test_manifest_specifics() -> None:
    found = manifests()
    baseline = found["baseline"][1]
    assert baseline["entry"] == "../playbooks/site.yml"
    assert set(baseline["ansible"]["inventory"]) == {"dev", "staging", "prod"}
    assert "prod" in baseline["approval"]
    assert found["azure-aks"][1]["requires"] == ["azure-networking"]
    assert found["masterchief"][1]["kubernetes"] == {
        "release": "masterchief",
        "namespace": "masterchief",
        "tool": "helm",
    }
    service = found["restart-service"][1]["parameters"]["service"]
    assert service["required"] is True and service["type"] == "string"
    assert service["pattern"] == "^[a-z0-9-]+$"  # the contract's, exactly (issue 5)


PATTERN_CASES = [
    ("restart-service", "service", "nginx", True),
    ("restart-service", "service", "php8-fpm", True),
    ("restart-service", "service", "x; rm -rf /", False),
    ("restart-service", "service", "-h", True),  # the contract allows it; run.sh refuses it
    ("restart-service", "service", "--now", True),
    ("restart-service", "service", "Nginx", False),
    ("restart-service", "service", "", False),
    ("restart-service", "service", "a" * 65, False),
    ("masterchief", "image_tag", "0.1.0", True),
    ("masterchief", "image_tag", "3f9c2ab", True),
    ("masterchief", "image_tag", "v1.2.3-rc.1", True),
    ("masterchief", "image_tag", "latest$(id)", False),
    ("masterchief", "image_tag", ".hidden", False),
    ("baseline", "limit", "app-01.prod.example.com", True),
    ("baseline", "limit", "app-*", True),
    ("baseline", "limit", "docker", True),
    ("baseline", "limit", "all,!web", False),
    ("baseline", "limit", "docker:&web", False),
    ("azure-aks", "kubernetes_version", "1.30", True),
    ("azure-aks", "kubernetes_version", "1.30.4", True),
    ("azure-aks", "kubernetes_version", "2.0", False),
    ("azure-aks", "user_node_count", 3, True),
    ("azure-aks", "user_node_count", 0, False),
    ("azure-aks", "user_node_count", 101, False),
    ("azure-aks", "user_node_count", True, False),
    ("azure-networking", "location", "westeurope", True),
    ("azure-networking", "location", "West Europe", False),
]


@pytest.mark.parametrize(("module", "param", "value", "accepted"), PATTERN_CASES)
def test_parameter_specs(module: str, param: str, value: Any, accepted: bool) -> None:
    spec = manifests()[module][1]["parameters"][param]
    assert param_accepts(spec, value) is accepted


# --- run.sh ----------------------------------------------------------------------------

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
if [ "$1" = is-active ]; then echo active; fi
"""


@pytest.fixture
def stub_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose PATH finds recording stubs of systemctl and service."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("systemctl", "service"):
        stub = bin_dir / tool
        stub.write_text(STUB.format(log=log), encoding="utf-8")
        stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "LC_ALL": "C"}
    return env, log


def expected_command(service: str) -> str:
    if os.path.isdir("/run/systemd/system"):
        return f"systemctl restart -- {service}"
    return f"service {service} restart"


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUN_SH), *args], env=env, capture_output=True, text=True, timeout=10, check=False
    )


def test_run_sh_is_an_executable_strict_shell_script() -> None:
    assert os.access(RUN_SH, os.X_OK)
    text = RUN_SH.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/sh\n")
    assert "\nset -eu\n" in text
    assert "eval" not in text


def test_run_sh_dry_run_prints_the_plan(stub_path: tuple[dict[str, str], Path]) -> None:
    env, log = stub_path
    proc = run_script({**env, "MC_PARAM_SERVICE": "nginx"}, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"would run: {expected_command('nginx')}"
    assert lines[0].startswith("service: nginx")
    assert not log.exists()  # nothing ran


@pytest.mark.parametrize(
    "value", ["x; rm -rf /", "$(touch pwned)", "-h", "--now", "ng inx", "a\nb", ""]
)
def test_run_sh_refuses_bad_names_before_running_anything(
    stub_path: tuple[dict[str, str], Path], tmp_path: Path, value: str
) -> None:
    env, log = stub_path
    for args in ((), ("--dry-run",)):
        proc = subprocess.run(
            [str(RUN_SH), *args],
            env={**env, "MC_PARAM_SERVICE": value},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert proc.returncode == 2, proc.stdout
        assert proc.stderr.startswith("error: ")
        assert proc.stdout == ""
    assert not log.exists()
    assert not (tmp_path / "pwned").exists()


def test_run_sh_restarts_through_the_service_manager(
    stub_path: tuple[dict[str, str], Path],
) -> None:
    env, log = stub_path
    proc = run_script({**env, "MC_PARAM_SERVICE": "nginx"})
    assert proc.returncode == 0, proc.stderr
    assert f"running: {expected_command('nginx')}" in proc.stdout.splitlines()
    calls = log.read_text(encoding="utf-8").splitlines()
    assert calls[0] == expected_command("nginx")


def test_run_sh_honours_allowed_services(stub_path: tuple[dict[str, str], Path]) -> None:
    env, log = stub_path
    refused = run_script(
        {**env, "MC_PARAM_SERVICE": "nginx", "MC_VAR_ALLOWED_SERVICES": "postgresql, redis"}
    )
    assert refused.returncode == 2
    assert "not in allowed_services" in refused.stderr
    assert not log.exists()
    allowed = run_script(
        {**env, "MC_PARAM_SERVICE": "redis", "MC_VAR_ALLOWED_SERVICES": "postgresql,redis"},
        "--dry-run",
    )
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.splitlines()[-1] == f"would run: {expected_command('redis')}"


@pytest.mark.parametrize("value", ["-h", "--now", "--status-all", "-"])
def test_run_sh_refuses_a_leading_dash_the_pattern_allows(
    stub_path: tuple[dict[str, str], Path], value: str
) -> None:
    """``^[a-z0-9-]+$`` lets ``--now`` through; run.sh must not hand it to
    systemctl/service as an option."""
    spec = manifests()["restart-service"][1]["parameters"]["service"]
    assert param_accepts(spec, value)
    env, log = stub_path
    proc = run_script({**env, "MC_PARAM_SERVICE": value})
    assert proc.returncode == 2
    assert "must not start with '-'" in proc.stderr
    assert not log.exists()


def test_run_sh_puts_the_unit_after_double_dash_for_systemctl() -> None:
    # The systemd branch only runs where systemd does; the text is checked everywhere.
    text = RUN_SH.read_text(encoding="utf-8")
    assert 'set -- systemctl restart -- "$service"' in text
    assert 'systemctl is-active -- "$service"' in text


def test_run_sh_rejects_extra_arguments(stub_path: tuple[dict[str, str], Path]) -> None:
    env, log = stub_path
    proc = run_script({**env, "MC_PARAM_SERVICE": "nginx"}, "--dry-run", "now")
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
    assert not log.exists()


# --- Terraform ---------------------------------------------------------------------------

HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_]*)\n")
PAIRS = {"}": "{", "]": "[", ")": "("}


def scan_hcl(text: str) -> tuple[str, str]:
    """Split HCL into (code outside strings and comments, text without comments).

    Strings may hold ``${...}`` interpolations that hold strings again; heredocs
    are skipped whole.  Raises ValueError on an unterminated string or comment.
    """
    code: list[str] = []
    kept: list[str] = []
    stack: list[list[Any]] = []  # ["str"] or ["interp", depth]
    i, n = 0, len(text)
    while i < n:
        top = stack[-1] if stack else None
        ch = text[i]
        if top is not None and top[0] == "str":
            if text.startswith(("$${", "%%{"), i):
                kept.append(text[i : i + 3])
                i += 3
            elif ch == "\\":
                kept.append(text[i : i + 2])
                i += 2
            elif text.startswith(("${", "%{"), i):
                stack.append(["interp", 0])
                kept.append(text[i : i + 2])
                i += 2
            elif ch == '"':
                stack.pop()
                kept.append(ch)
                i += 1
            elif ch == "\n":
                raise ValueError("unterminated string")
            else:
                kept.append(ch)
                i += 1
            continue
        if ch == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i)
            if end < 0:
                raise ValueError("unterminated comment")
            i = end + 2
            continue
        heredoc = HEREDOC.match(text, i)
        if heredoc:
            end = re.compile(rf"^\s*{heredoc[1]}\s*$", re.MULTILINE).search(text, heredoc.end())
            if end is None:
                raise ValueError(f"unterminated heredoc {heredoc[1]}")
            kept.append(text[i : end.end()])
            i = end.end()
            continue
        if ch == '"':
            stack.append(["str"])
        elif top is not None and ch == "{":
            top[1] += 1
        elif top is not None and ch == "}":
            if top[1] == 0:
                stack.pop()
            else:
                top[1] -= 1
        elif top is None:
            code.append(ch)
        kept.append(ch)
        i += 1
    if stack:
        raise ValueError("unterminated string or interpolation")
    return "".join(code), "".join(kept)


def balanced(code: str) -> bool:
    opened: list[str] = []
    for ch in code:
        if ch in "{[(":
            opened.append(ch)
        elif ch in PAIRS and (not opened or opened.pop() != PAIRS[ch]):
            return False
    return not opened


def test_hcl_scanner_on_tricky_input() -> None:
    code, kept = scan_hcl(
        'a = "x${f("}")}y" # }\nb = <<-EOT\n  {{ not code\n  EOT\nc = { d = "$${" } /* ] */\n'
    )
    assert balanced(code)
    assert "not code" not in code and "not code" in kept
    assert "# }" not in kept
    assert not balanced(scan_hcl('x = { y = "}" \n')[0])
    with pytest.raises(ValueError):
        scan_hcl('x = "open\n')


def terraform_texts(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.tf"))}


@pytest.mark.parametrize("folder", TERRAFORM_DIRS, ids=lambda p: p.name)
def test_terraform_module_structure(folder: Path) -> None:
    texts = terraform_texts(folder)
    assert {"variables.tf", "outputs.tf", "versions.tf"} <= set(texts)
    assert ("vnet.tf" if folder.name == "networking" else "aks.tf") in texts
    scanned = {}
    for name, text in texts.items():
        code, kept = scan_hcl(text)
        assert balanced(code), f"{folder.name}/{name}: unbalanced braces"
        scanned[name] = kept
    versions = scanned["versions.tf"]
    assert re.search(r"required_providers\s*\{[^}]*azurerm\s*=\s*\{", versions, re.S)
    assert re.search(r'source\s*=\s*"hashicorp/azurerm"', versions)
    assert re.search(r'version\s*=\s*"~>\s*4\.\d+"', versions)
    declared = re.findall(r'^variable\s+"(\w+)"', scanned["variables.tf"], re.M)
    assert len(declared) == len(set(declared))
    used_everywhere = set(re.findall(r"\bvar\.(\w+)", "\n".join(scanned.values())))
    used_outside = set(
        re.findall(
            r"\bvar\.(\w+)",
            "\n".join(v for k, v in scanned.items() if k != "variables.tf"),
        )
    )
    assert used_everywhere - set(declared) == set()
    assert set(declared) - used_outside == set()
    defined_locals = set()
    for block in re.findall(r"^locals\s*\{(.*?)^\}", "\n".join(scanned.values()), re.S | re.M):
        defined_locals |= set(re.findall(r"^  (\w+)\s*=", block, re.M))
    used_locals = set(re.findall(r"\blocal\.(\w+)", "\n".join(scanned.values())))
    assert used_locals - defined_locals == set()
    for match in re.finditer(r'^output\s+"(\w+)"\s*\{(.*?)^\}', scanned["outputs.tf"], re.S | re.M):
        assert "description" in match[2], match[1]
    # Parameters and module config become Terraform variables.
    manifest = load_yaml(folder / "module.yaml")
    assert set(manifest.get("parameters") or {}) <= set(declared)
    for config in module_config_files(manifest["name"]):
        assert set(load_yaml(config)) <= set(declared), config


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
@pytest.mark.parametrize("folder", TERRAFORM_DIRS, ids=lambda p: p.name)
def test_terraform_fmt(folder: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["terraform", f"-chdir={folder}", "fmt", "-check", "-diff", "-no-color"],
        env={**os.environ, "TF_CLI_CONFIG_FILE": str(tmp_path / "none.tfrc")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Helm chart ------------------------------------------------------------------------------

VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
ACTION_OPEN = re.compile(r"\{\{-?\s*(if|range|with|define|block)\b")
ACTION_END = re.compile(r"\{\{-?\s*end\b")


def chart_templates() -> dict[str, str]:
    return {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted((CHART / "templates").iterdir())
        if p.is_file()
    }


def test_chart_metadata() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == CHART.name == "masterchief"
    assert chart["type"] == "application"
    assert VERSION.fullmatch(chart["version"])
    assert isinstance(chart["appVersion"], str) and chart["appVersion"]
    assert chart["description"]
    templates = chart_templates()
    for name in (
        "deployment.yaml",
        "service.yaml",
        "configmap.yaml",
        "pvc.yaml",
        "serviceaccount.yaml",
        "_helpers.tpl",
        "NOTES.txt",
    ):
        assert name in templates
    assert "module.yaml" in (CHART / ".helmignore").read_text(encoding="utf-8").split()


def value_path_exists(values: Any, path: list[str]) -> bool:
    node = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_chart_templates_read_only_existing_values() -> None:
    values = load_yaml(CHART / "values.yaml")
    templates = chart_templates()
    refs: set[str] = set()
    for name, text in templates.items():
        assert text.count("{{") == text.count("}}"), name
        assert len(ACTION_OPEN.findall(text)) == len(ACTION_END.findall(text)), name
        refs |= {m[1] for m in VALUES_REF.finditer(text)}
    missing = sorted(r for r in refs if not value_path_exists(values, r.lstrip(".").split(".")))
    assert missing == []
    # ... and every top-level value is read by some template.
    tops = {r.lstrip(".").split(".")[0] for r in refs}
    assert set(values) - tops == set()
    defined = set(re.findall(r'define\s+"([^"]+)"', templates["_helpers.tpl"]))
    included = set(re.findall(r'include\s+"([^"]+)"', "\n".join(templates.values())))
    assert included <= defined


def test_chart_values_path_check_catches_typos() -> None:
    values = load_yaml(CHART / "values.yaml")
    assert value_path_exists(values, ["image", "repository"])
    assert not value_path_exists(values, ["image", "repo"])
    assert not value_path_exists(values, ["image", "repository", "x"])


def test_chart_configuration_is_valid_masterchief_config(tmp_path: Path) -> None:
    values = load_yaml(CHART / "values.yaml")
    config = build_config(values["config"], project_dir=tmp_path, env=values["environment"])
    assert config.web.host == "0.0.0.0"  # reachable through the Service
    assert config.web.port == values["service"]["port"]
    assert config.store.path == tmp_path / "var" / "masterchief.db"
    manifest = load_yaml(CHART / "module.yaml")
    # The deploy parameters and module config are chart values.
    assert set(manifest["parameters"]) <= set(values)
    for path in module_config_files("masterchief"):
        assert set(load_yaml(path)) <= set(values), path


# --- module config -----------------------------------------------------------------------------


def module_config_files(module: str) -> list[Path]:
    return sorted(CONFIG_MODULES.glob(f"{module}.yaml")) + sorted(
        CONFIG_MODULES.glob(f"*/{module}.yaml")
    )


def test_module_config_files_belong_to_modules() -> None:
    found = manifests()
    files = sorted(CONFIG_MODULES.rglob("*.yaml"))
    assert CONFIG_MODULES / "baseline.yaml" in files
    for path in files:
        rel = path.relative_to(CONFIG_MODULES)
        assert path.stem in found, rel
        if len(rel.parts) == 2:
            assert rel.parts[0] in found[path.stem][1]["environments"], rel
        else:
            assert len(rel.parts) == 1, rel
        assert isinstance(load_yaml(path), dict), rel


def test_baseline_module_config_names_role_variables() -> None:
    known: set[str] = set()
    for role in ROLES.iterdir():
        known |= set(load_yaml(role / "defaults" / "main.yml"))
    for path in module_config_files("baseline"):
        assert set(load_yaml(path)) - known == set(), path
    params = set(manifests()["baseline"][1]["parameters"])
    assert all(re.search(rf"\b{p}\b", PLAYBOOK.read_text(encoding="utf-8")) for p in params)


def test_script_module_config_and_parameters_reach_run_sh() -> None:
    text = RUN_SH.read_text(encoding="utf-8")
    for path in module_config_files("restart-service"):
        for key in load_yaml(path):
            assert f"MC_VAR_{key.upper()}" in text, (path, key)
    for param in manifests()["restart-service"][1]["parameters"]:
        assert f"MC_PARAM_{param.upper()}" in text


def test_no_shipped_module_may_run_on_the_bot_host() -> None:
    for name in manifests():
        for path in module_config_files(name):
            assert "allow_bot_host" not in load_yaml(path), path
    # restart-service changes the bot's host: it must not claim otherwise
    assert "script" not in manifests()["restart-service"][1]


def test_chart_never_templates_values() -> None:
    # Values carry parameters (image_tag): `tpl` would render them as templates.
    for path in sorted((CHART / "templates").rglob("*")):
        if path.is_file():
            assert not re.search(r"\btpl\b", path.read_text(encoding="utf-8")), path
