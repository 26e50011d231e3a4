"""deploy.runners: real runs of scripts, fake terraform/helm/kubectl
(tests/deploy/fakebin) and the real ansible-playbook; the kinds' argv
templates are tests/deploy/test_kinds.py."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import sys
import textwrap
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from masterchief.config.secrets import Redactor, Secret
from masterchief.deploy.kinds.base import VENV_BIN, RunSpec
from masterchief.deploy.runners import OutputLine, RunResult, clean_text, run
from tests.procs import job_pids

FAKEBIN = Path(__file__).resolve().parent / "fakebin"
FAKE_TOOLS = {name: str(FAKEBIN / name) for name in ("terraform", "helm", "kubectl")}
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
INJECTIONS = ("1.0; rm -rf /", "--kubeconfig=/tmp/x", "$(touch /tmp/pwned)")
BASE_ENV_KEYS = {"PATH", "HOME", "TMPDIR", "LANG", "MASTERCHIEF_JOB"}


@dataclass(frozen=True)
class FakeModule:
    name: str
    kind: str
    dir: Path
    entry: Path
    options: Mapping[str, Any] = field(default_factory=dict)


def make_spec(tmp_path: Path, module: FakeModule, **overrides: Any) -> RunSpec:
    job_id = overrides.pop("job_id", uuid.uuid4().hex[:12])
    values: dict[str, Any] = {
        "job_id": job_id,
        "module": module,
        "env": "dev",
        "mode": "deploy",
        "params": {},
        "variables": {},
        "work_dir": tmp_path / "work" / job_id,
        "timeout_s": 20.0,
        "kill_grace_s": 1.0,
        "tools": FAKE_TOOLS,
    }
    values.update(overrides)
    return RunSpec(**values)


class Collector:
    def __init__(self, hook: Callable[[OutputLine], None] | None = None) -> None:
        self.lines: list[OutputLine] = []
        self.hook = hook

    def __call__(self, line: OutputLine) -> None:
        self.lines.append(line)
        if self.hook is not None:
            self.hook(line)

    def texts(self, kind: str | None = None) -> list[str]:
        return [ln.text for ln in self.lines if kind is None or ln.kind == kind]


async def go(spec: RunSpec, **kwargs: Any) -> tuple[RunResult, Collector]:
    out = kwargs.pop("collector", None) or Collector()
    result = await run(spec, out, redactor=kwargs.pop("redactor", Redactor()), **kwargs)
    return result, out


def fake_calls(folder: Path) -> list[dict[str, Any]]:
    path = folder / ".fake-calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_secret_hidden(secret: str, out: Collector, result: RunResult) -> None:
    for line in out.lines:
        assert secret not in line.text
        assert secret not in json.dumps(line.data, default=str)
    assert not any(secret in t for t in result.tail)
    assert secret not in result.summary


def script_module(tmp_path: Path, body: str, *, name: str = "job-script") -> FakeModule:
    folder = tmp_path / "modules" / name
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / "run.py"
    entry.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    entry.chmod(0o755)
    return FakeModule(name=name, kind="script", dir=folder, entry=entry)


CLEAN_CASES = [
    ("plain", "plain"),
    ("\x1b[0m\x1b[32mgreen\x1b[0m", "green"),
    ("tab\there", "tab here"),
    ("bell\x07 nul\x00 del\x7f", "bell nul del"),
    ("\x1b]0;title\x07after", "after"),
    ("c1\x9bx", "c1x"),
]


@pytest.mark.parametrize(("raw", "clean"), CLEAN_CASES)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


# --- scripts: real processes ------------------------------------------------------


async def test_script_succeeds_with_summary_and_tail(tmp_path: Path) -> None:
    module = script_module(
        tmp_path,
        """
        import os
        for i in range(60):
            print("line", i, flush=True)
        print("mode", os.environ["MC_MODE"], "param", os.environ["MC_PARAM_VERSION"])
        """,
    )
    spec = make_spec(tmp_path, module, params={"version": INJECTIONS[0]}, tail_lines=5)
    result, out = await go(spec)
    assert result.status == "succeeded"
    assert result.exit_code == 0
    assert result.changed is None and result.failed is None
    assert re.fullmatch(rf"succeeded in \d+\.\ds \(job {spec.job_id}\)", result.summary)
    assert out.lines[-1].text == result.summary and out.lines[-1].data["summary"] is True
    assert result.tail == (
        "line 56",
        "line 57",
        "line 58",
        "line 59",
        f"mode deploy param {INJECTIONS[0]}",
    )
    assert out.texts()[:2] == ["line 0", "line 1"]


async def test_script_dry_run_in_plan_mode(tmp_path: Path) -> None:
    module = script_module(tmp_path, "import sys\nprint('args', sys.argv[1:])\n")
    result, out = await go(make_spec(tmp_path, module, mode="plan"))
    assert result.status == "succeeded"
    assert "args ['--dry-run']" in out.texts()


async def test_script_exit_3_is_failed(tmp_path: Path) -> None:
    module = script_module(tmp_path, "import sys\nprint('boom')\nsys.exit(3)\n")
    spec = make_spec(tmp_path, module)
    result, _ = await go(spec)
    assert result.status == "failed"
    assert result.exit_code == 3
    assert result.summary.startswith("failed in ")
    assert result.summary.endswith(f"at script (exit 3) (job {spec.job_id})")
    assert result.tail == ("boom",)


async def test_script_timeout(tmp_path: Path) -> None:
    module = script_module(tmp_path, "import time\nprint('working', flush=True)\ntime.sleep(60)\n")
    spec = make_spec(tmp_path, module, timeout_s=0.5, kill_grace_s=0.5)
    result, _ = await go(spec)
    assert result.status == "timed_out"
    assert result.summary.startswith("timed out in ")
    assert 0.5 <= result.duration_s < 30  # the timeout, not the 60 s sleep
    assert result.tail == ("working",)
    assert job_pids(spec.job_id) == set()


async def test_cancel_kills_grandchildren_even_after_setsid(tmp_path: Path) -> None:
    module = script_module(
        tmp_path,
        """
        import subprocess, sys, time
        sleeper = "import time; time.sleep(60)"
        escaper = "import os, time; os.setsid(); time.sleep(60)"
        a = subprocess.Popen([sys.executable, "-c", sleeper])
        b = subprocess.Popen([sys.executable, "-c", escaper])
        print("children", a.pid, b.pid, flush=True)
        time.sleep(60)
        """,
    )
    cancel = asyncio.Event()
    pids: list[int] = []

    def hook(line: OutputLine) -> None:
        if line.text.startswith("children"):
            pids.extend(int(p) for p in line.text.split()[1:])
            cancel.set()

    spec = make_spec(tmp_path, module)
    result, _ = await go(spec, collector=Collector(hook), cancel=cancel)
    assert result.status == "cancelled"
    assert result.summary.startswith("cancelled in ")
    assert len(pids) == 2
    assert job_pids(spec.job_id) == set()
    assert result.duration_s < 10


async def test_cancel_before_start_runs_nothing(tmp_path: Path) -> None:
    module = script_module(tmp_path, "print('ran')\n")
    cancel = asyncio.Event()
    cancel.set()
    result, out = await go(make_spec(tmp_path, module), cancel=cancel)
    assert result.status == "cancelled"
    assert result.exit_code is None
    assert "ran" not in out.texts()


async def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    db = "db-Pa55word-zq81"
    token = 'tok"quoted\\back-77'
    config_secret = "global-config-secret-42"
    module = script_module(
        tmp_path,
        """
        import json, os
        print("password is", os.environ["MC_VAR_DB_PASSWORD"])
        print("token as json", json.dumps(os.environ["MC_PARAM_TOKEN"]))
        print(open(os.environ["MC_VARS_FILE"]).read())
        print("from config", os.environ["MC_VAR_URL"])
        print("x" * 69990 + os.environ["MC_VAR_DB_PASSWORD"])
        raise SystemExit("failed with " + os.environ["MC_VAR_DB_PASSWORD"])
        """,
    )
    redactor = Redactor()
    redactor.register(config_secret)
    spec = make_spec(
        tmp_path,
        module,
        variables={"db_password": Secret(db), "url": f"https://u:{config_secret}@host"},
        params={"token": Secret(token)},
        max_line_bytes=70000,
    )
    result, out = await go(spec, redactor=redactor)
    assert result.status == "failed"
    for secret in (db, token, json.dumps(token)[1:-1], config_secret, db[:10]):
        assert_secret_hidden(secret, out, result)
    texts = out.texts()
    assert "password is ***" in texts
    assert 'token as json "***"' in texts
    assert "from config https://u:***@host" in texts
    assert "failed with ***" in texts
    long = next(ln for ln in out.lines if ln.text.startswith("xxxx"))
    assert long.cut and long.text.endswith("***")  # the secret's head, cut off, is masked
    assert any('"db_password": "***"' in t for t in texts)


async def test_script_sees_only_the_scrubbed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MC_FAKE_BOT_TOKEN", "bot-token-must-not-leak")
    module = script_module(
        tmp_path,
        """
        import json, os
        print(json.dumps(sorted(os.environ)))
        print("cwd", os.getcwd())
        print("path", os.environ["PATH"])
        """,
    )
    spec = make_spec(tmp_path, module, params={"version": "1.0"}, variables={"region": "eu"})
    result, out = await go(spec)
    assert result.status == "succeeded"
    keys = set(json.loads(out.texts()[0]))
    assert keys == BASE_ENV_KEYS | {
        "MC_JOB_ID",
        "MC_MODULE",
        "MC_ENV",
        "MC_MODE",
        "MC_VARS_FILE",
        "MC_PARAM_VERSION",
        "MC_VAR_REGION",
    }
    assert out.texts()[1] == f"cwd {module.dir}"
    path = out.texts()[2].split(" ", 1)[1].split(":")
    assert path[0] == VENV_BIN and str(module.dir) not in path


async def test_vars_file_is_private_params_win_and_it_is_removed(tmp_path: Path) -> None:
    module = script_module(
        tmp_path,
        """
        import os, stat
        path = os.environ["MC_VARS_FILE"]
        print("mode", oct(stat.S_IMODE(os.stat(path).st_mode)))
        print("dir", oct(stat.S_IMODE(os.stat(os.environ["HOME"]).st_mode)))
        print(open(path).read().replace("\\n", " "))
        """,
    )
    spec = make_spec(
        tmp_path,
        module,
        variables={"version": "0.9", "region": "eu", "api_key": Secret("key-123456789")},
        params={"version": INJECTIONS[0]},
    )
    result, out = await go(spec)
    assert result.status == "succeeded"
    assert out.texts()[:2] == ["mode 0o600", "dir 0o700"]
    content = json.loads(out.texts()[2])
    assert content == {"version": INJECTIONS[0], "region": "eu", "api_key": "***"}
    assert not (spec.work_dir / "vars.json").exists()
    assert not (spec.work_dir / "tmp").exists()


async def test_not_executable_script_fails_cleanly(tmp_path: Path) -> None:
    module = script_module(tmp_path, "print('hi')\n")
    module.entry.chmod(0o644)
    result, out = await go(make_spec(tmp_path, module))
    assert result.status == "failed"
    assert result.exit_code is None
    assert out.lines[0].kind == "error"
    assert out.lines[0].text == "cannot run run.py: Permission denied"


async def test_a_raising_output_callback_does_not_break_the_run(tmp_path: Path) -> None:
    module = script_module(tmp_path, "for i in range(3):\n    print(i)\n")

    def explode(line: OutputLine) -> None:
        raise RuntimeError("callback bug")

    result = await run(make_spec(tmp_path, module), explode, redactor=Redactor())
    assert result.status == "succeeded"
    assert result.tail == ("0", "1", "2")


# --- terraform (fake CLI) -----------------------------------------------------------


def tf_module(tmp_path: Path, config: dict[str, Any] | None = None, **options: Any) -> FakeModule:
    folder = tmp_path / "modules" / "network"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.tf").write_text('variable "version" {}\n')
    if config is not None:
        (folder / ".fake-terraform.json").write_text(json.dumps(config))
    return FakeModule("network", "terraform", folder, folder, options)


async def test_terraform_deploy(tmp_path: Path) -> None:
    module = tf_module(
        tmp_path,
        {"resources": ["null_resource.web", "null_resource.db"], "change": ["null_resource.lb"]},
    )
    spec = make_spec(
        tmp_path,
        module,
        params={"version": INJECTIONS[0], "flag": INJECTIONS[1]},
        variables={"version": "0.9", "region": "eu"},
    )
    result, out = await go(spec)
    assert result.status == "succeeded", out.texts()
    assert (result.changed, result.failed, result.exit_code) == (3, 0, 0)
    assert re.fullmatch(
        rf"succeeded in \d+\.\ds: changed 3, failed 0 \(job {spec.job_id}\)", result.summary
    )

    calls = fake_calls(module.dir)
    assert [c["argv"][0] for c in calls] == ["init", "workspace", "plan", "apply"]
    assert calls[1]["argv"] == ["workspace", "select", "-or-create", "dev"]
    assert calls[3]["argv"][-1] == str(spec.work_dir / "plan.tfplan")
    for call in calls:
        assert not any(bad in arg for arg in call["argv"] for bad in INJECTIONS)
        assert call["env"]["TF_IN_AUTOMATION"] == "1"
        assert call["env"]["TF_DATA_DIR"] == str(spec.work_dir / "terraform.d")
        assert call["cwd"] == str(module.dir)
    (var_file,) = calls[2]["files"].values()
    assert var_file["mode"] == 0o600
    assert json.loads(var_file["content"]) == {
        "version": INJECTIONS[0],
        "flag": INJECTIONS[1],
        "region": "eu",
    }
    assert not (spec.work_dir / "vars.tfvars.json").exists()
    assert not (spec.work_dir / "plan.tfplan").exists()

    assert out.texts("task") == [
        "terraform init",
        "terraform workspace dev",
        "terraform plan",
        "terraform apply",
    ]
    texts = out.texts()
    assert "Terraform has been successfully initialized!" in texts  # ANSI colours stripped
    assert 'Switched to workspace "dev".' in texts
    steps = out.texts("step")
    assert "null_resource.web: Plan to create" in steps
    assert "null_resource.lb: Plan to update in-place" in steps
    assert "null_resource.db: Creation complete after 0s [id=42]" in steps
    assert "Plan: 2 to add, 1 to change, 0 to destroy." in texts
    assert "Apply complete! Resources: 2 added, 1 changed, 0 destroyed." in texts
    summary_line = next(ln for ln in out.lines if ln.text.startswith("Apply complete"))
    assert summary_line.data is not None and summary_line.data["changes"]["add"] == 2


async def test_terraform_plan_mode_stops_after_plan(tmp_path: Path) -> None:
    module = tf_module(tmp_path, {"resources": ["null_resource.web"]}, workspace=False)
    result, out = await go(make_spec(tmp_path, module, mode="plan"))
    assert result.status == "succeeded"
    assert [c["argv"][0] for c in fake_calls(module.dir)] == ["init", "plan"]
    assert (result.changed, result.failed) == (1, 0)
    assert out.texts("task") == ["terraform init", "terraform plan"]


async def test_terraform_apply_failure_with_diagnostic(tmp_path: Path) -> None:
    module = tf_module(tmp_path, {"fail_at": "apply"})
    spec = make_spec(tmp_path, module)
    result, out = await go(spec)
    assert result.status == "failed"
    assert result.exit_code == 1
    assert (result.changed, result.failed) == (1, 1)  # web applied, db errored
    assert "at apply (exit 1): changed 1, failed 1" in result.summary
    errors = out.texts("error")
    assert errors == [
        "null_resource.db: Creation errored after 0s",
        "Error: creating resource: null_resource.db: quota exceeded",
    ]
    assert not (spec.work_dir / "plan.tfplan").exists()


async def test_terraform_init_failure_stops_the_run(tmp_path: Path) -> None:
    module = tf_module(tmp_path, {"fail_at": "init"})
    result, out = await go(make_spec(tmp_path, module))
    assert result.status == "failed"
    assert [c["argv"][0] for c in fake_calls(module.dir)] == ["init"]
    assert "Error: Failed to query available provider packages" in out.texts()
    assert "at init (exit 1)" in result.summary


async def test_terraform_slow_output_streams_and_can_be_cancelled(tmp_path: Path) -> None:
    module = tf_module(tmp_path, {"resources": ["null_resource.web"], "slow_lines": 200})
    cancel = asyncio.Event()
    progress: list[str] = []

    def hook(line: OutputLine) -> None:
        if "Still creating" in line.text:
            progress.append(line.text)
            if len(progress) == 3:
                cancel.set()

    spec = make_spec(tmp_path, module)
    result, _ = await go(spec, collector=Collector(hook), cancel=cancel)
    assert result.status == "cancelled"
    assert 3 <= len(progress) < 50  # lines arrived while the tool was still running
    assert progress[0] == "null_resource.web: Still creating... [0s elapsed]"
    assert job_pids(spec.job_id) == set()


async def test_terraform_hang_is_killed_by_the_timeout(tmp_path: Path) -> None:
    module = tf_module(tmp_path, {"hang_at": "plan"})
    spec = make_spec(tmp_path, module, timeout_s=1.0, kill_grace_s=0.5)
    result, out = await go(spec)
    assert result.status == "timed_out"
    assert result.duration_s >= 1.0  # not before the timeout
    assert result.duration_s < 30  # and the hang did not outlive it
    assert "plan: waiting for a lock that never comes" in out.texts()
    assert job_pids(spec.job_id) == set()
    assert not (spec.work_dir / "vars.tfvars.json").exists()


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
async def test_real_terraform_with_builtin_provider(tmp_path: Path) -> None:
    folder = tmp_path / "modules" / "data"
    folder.mkdir(parents=True)
    (folder / "main.tf").write_text(
        'variable "greeting" {}\nresource "terraform_data" "x" { input = var.greeting }\n'
    )
    module = FakeModule("data", "terraform", folder, folder)
    spec = make_spec(tmp_path, module, env="staging", params={"greeting": INJECTIONS[0]}, tools={})
    result, out = await go(spec)
    assert result.status == "succeeded", out.texts()
    assert (result.changed, result.failed) == (1, 0)
    assert "terraform_data.x: Plan to create" in out.texts("step")
    assert any(t.startswith("terraform_data.x: Creation complete") for t in out.texts("step"))
    assert (folder / "terraform.tfstate.d" / "staging" / "terraform.tfstate").exists()


# --- kubernetes (fake helm / kubectl) ---------------------------------------------


def k8s_module(
    tmp_path: Path, tool: str, config: dict[str, Any] | None = None, **options: Any
) -> FakeModule:
    folder = tmp_path / "modules" / "web"
    entry = folder / ("chart" if tool == "helm" else "manifests")
    entry.mkdir(parents=True, exist_ok=True)
    if tool == "kubectl":
        for name in ("a", "b", "c"):
            (entry / f"{name}.yaml").write_text(f"kind: ConfigMap\nmetadata: {{name: {name}}}\n")
    if config is not None:
        (folder / f".fake-{tool}.json").write_text(json.dumps(config))
    return FakeModule("web", "kubernetes", folder, entry, {"tool": tool, **options})


async def test_helm_deploy(tmp_path: Path) -> None:
    module = k8s_module(tmp_path, "helm", release="web", namespace="apps")
    spec = make_spec(tmp_path, module, params={"image": INJECTIONS[1]}, variables={"replicas": 2})
    result, out = await go(spec)
    assert result.status == "succeeded", out.texts()
    (call,) = fake_calls(module.dir)  # deploy mode does not probe for plugins
    values = str(spec.work_dir / "values.json")
    assert call["argv"] == [
        "upgrade", "--install", "web", str(module.entry), "--namespace", "apps",
        "--create-namespace", "-f", values, "--wait", "--timeout", "20s",
    ]  # fmt: skip
    assert call["files"][values]["mode"] == 0o600
    assert json.loads(call["files"][values]["content"]) == {"image": INJECTIONS[1], "replicas": 2}
    assert "STATUS: deployed" in out.texts()
    assert result.changed is None and result.failed is None
    assert not (spec.work_dir / "values.json").exists()


async def test_helm_plan_without_diff_plugin_templates(tmp_path: Path) -> None:
    module = k8s_module(tmp_path, "helm")
    spec = make_spec(tmp_path, module, mode="plan", params={"tag": INJECTIONS[0]})
    result, out = await go(spec)
    assert result.status == "succeeded"
    assert [c["argv"][:2] for c in fake_calls(module.dir)] == [
        ["plugin", "list"],
        ["template", "web"],
    ]
    assert f'  tag: "{INJECTIONS[0]}"' in out.texts()  # the value, rendered as data
    assert "NAME VERSION DESCRIPTION" not in out.texts()  # the probe is silent


async def test_helm_template_never_shows_a_secret_base64_encoded(tmp_path: Path) -> None:
    module = k8s_module(tmp_path, "helm")
    secret = "db-Pa55word-zq81"
    spec = make_spec(tmp_path, module, mode="plan", variables={"db_password": Secret(secret)})
    result, out = await go(spec)
    assert result.status == "succeeded"
    encoded = base64.b64encode(secret.encode()).decode()
    shown = "\n".join([*out.texts(), *result.tail])
    assert "kind: Secret" in shown
    assert secret not in shown and encoded not in shown
    assert "  db_password: ***" in out.texts()


async def test_helm_plan_with_diff_plugin_diffs(tmp_path: Path) -> None:
    module = k8s_module(tmp_path, "helm", {"diff_plugin": True})
    result, out = await go(make_spec(tmp_path, module, mode="plan", params={"tag": "v2"}))
    assert result.status == "succeeded", out.texts()
    calls = fake_calls(module.dir)
    assert [c["argv"][:2] for c in calls] == [["plugin", "list"], ["diff", "upgrade"]]
    assert calls[1]["argv"][-1] == "--allow-unreleased"
    assert "default, web-config, ConfigMap (v1) has been added:" in out.texts()
    assert '+   tag: "v2"' in out.texts()


async def test_helm_failure(tmp_path: Path) -> None:
    module = k8s_module(tmp_path, "helm", {"fail": True})
    result, out = await go(make_spec(tmp_path, module))
    assert result.status == "failed"
    assert result.exit_code == 1
    assert "Error: UPGRADE FAILED: context deadline exceeded" in out.texts()


async def test_kubectl_apply_counts_changes(tmp_path: Path) -> None:
    module = k8s_module(
        tmp_path, "kubectl", {"unchanged": ["a"], "configured": ["b"]}, namespace="apps"
    )
    result, out = await go(make_spec(tmp_path, module))
    assert result.status == "succeeded"
    assert (result.changed, result.failed) == (2, None)
    assert out.texts("step") == [
        "configmap/a unchanged",
        "configmap/b configured",
        "configmap/c created",
    ]
    (call,) = fake_calls(module.dir)
    assert call["argv"] == ["apply", "-f", str(module.entry), "--namespace", "apps"]


@pytest.mark.parametrize(
    ("config", "status", "code"),
    [
        ({"differences": True}, "succeeded", 1),
        ({"differences": False}, "succeeded", 0),
        ({"error": True}, "failed", 2),
    ],
)
async def test_kubectl_diff_exit_codes(
    tmp_path: Path, config: dict[str, Any], status: str, code: int
) -> None:
    module = k8s_module(tmp_path, "kubectl", config)
    result, out = await go(make_spec(tmp_path, module, mode="plan"))
    assert (result.status, result.exit_code) == (status, code)
    if config.get("differences"):
        assert "+  name: a" in out.texts()


# --- ansible (the real ansible-playbook, our callback) -----------------------------

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: say hi
      command: echo hi
    - name: show version
      debug:
        msg: "version {{ version }} token {{ token }}"
"""

FAILING_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: break
      fail:
        msg: "broken on purpose"
    - name: never reached
      debug: {msg: unreachable}
"""


def ansible_module(tmp_path: Path, name: str, playbook: str) -> FakeModule:
    folder = tmp_path / "modules" / name
    folder.mkdir(parents=True)
    (folder / "site.yml").write_text(playbook)
    return FakeModule(name, "ansible", folder, folder / "site.yml")


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed")
async def test_ansible_callback_with_real_ansible_playbook(tmp_path: Path) -> None:
    token = "tok-ansible-secret-9"
    params = {"version": INJECTIONS[0], "token": Secret(token)}
    good = ansible_module(tmp_path, "good", PLAYBOOK)
    bad = ansible_module(tmp_path, "bad", FAILING_PLAYBOOK)
    specs = [
        make_spec(tmp_path, good, params=params, tools={}),
        make_spec(tmp_path, good, params=params, tools={}, mode="plan"),
        make_spec(tmp_path, bad, tools={}),
    ]
    (deploy, deploy_out), (check, check_out), (failed, failed_out) = await asyncio.gather(
        *(go(spec) for spec in specs)
    )

    assert deploy.status == "succeeded", deploy_out.texts()
    assert (deploy.changed, deploy.failed) == (1, 0)
    assert deploy_out.texts("task") == ["TASK [say hi]", "TASK [show version]"]
    assert deploy_out.texts("step") == [
        "changed: [localhost]",
        f"ok: [localhost] => version {INJECTIONS[0]} token ***",
    ]
    assert "PLAY [localhost]" in deploy_out.texts()
    assert any(
        t.startswith("localhost : ok=2 changed=1 unreachable=0 failures=0")
        for t in deploy_out.texts()
    )
    assert_secret_hidden(token, deploy_out, deploy)
    assert deploy.summary.endswith(f"changed 1, failed 0 (job {specs[0].job_id})")

    assert check.status == "succeeded", check_out.texts()
    assert (check.changed, check.failed) == (0, 0)
    assert "PLAYBOOK [site.yml] (check mode)" in check_out.texts()
    assert (
        check_out.texts("step")[0]
        == "skipping: [localhost] => Command would have run if not in check mode"
    )
    assert_secret_hidden(token, check_out, check)

    assert failed.status == "failed"
    assert failed.exit_code == 2
    assert (failed.changed, failed.failed) == (0, 1)
    assert failed_out.texts("error") == ["failed: [localhost] => broken on purpose"]
    assert "TASK [never reached]" not in failed_out.texts()


def test_a_secret_cut_before_an_ellipsis_is_masked() -> None:
    # our Ansible callback shortens msg to 500 characters + "..." before the
    # runner sees the line: a secret straddling the cut left its first part
    from masterchief.deploy.runners import _Emitter

    secret = "ghp_Zz9AbCdEfGhIjKlMnOpQrStUvWxYz0123456"
    redactor = Redactor()
    redactor.register(secret)
    got: list[OutputLine] = []
    emitter = _Emitter(got.append, [redactor], max_bytes=65536, tail_lines=10)
    cut = ("x" * 470 + " token=" + secret)[:497] + "..."
    emitter.emit(f"fatal: [h]: FAILED! => {cut}", data={"msg": cut})
    shown = got[0].text + repr(got[0].data)
    assert "ghp_Zz9" not in shown and "***..." in got[0].text
    emitter.emit("loading... done")  # an ordinary ellipsis is left alone
    assert got[1].text == "loading... done"
