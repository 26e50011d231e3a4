"""deploy.kinds: each kind's argv templates, tools and environment (pure: no process runs,
but for one that checks a tool found on PATH gets the scrubbed environment)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from masterchief.config.secrets import Secret
from masterchief.deploy.kinds import build_steps
from masterchief.deploy.kinds.ansible import PLUGIN_DIR
from masterchief.deploy.kinds.base import SAFE_PATH, VENV_BIN, tool_path
from masterchief.errors import ConfigError, UserError
from tests.deploy.test_runners import (
    ANSIBLE_PLAYBOOK,
    BASE_ENV_KEYS,
    FAKE_TOOLS,
    FAKEBIN,
    INJECTIONS,
    FakeModule,
    fake_calls,
    go,
    make_spec,
)


def _module(tmp_path: Path, kind: str, entry: str, **options: Any) -> FakeModule:
    folder = tmp_path / "modules" / "web-app"
    return FakeModule("web-app", kind, folder, folder / entry, options)


def test_build_steps_templates_per_kind(tmp_path: Path) -> None:
    tools = {**FAKE_TOOLS, "ansible-playbook": "/opt/ansible/bin/ansible-playbook"}
    params = {"version": INJECTIONS[0], "extra": INJECTIONS[1], "cmd": INJECTIONS[2]}
    work = tmp_path / "work" / "j1"
    mods = tmp_path / "modules" / "web-app"
    tf, helm, kubectl = FAKE_TOOLS["terraform"], FAKE_TOOLS["helm"], FAKE_TOOLS["kubectl"]
    ap = tools["ansible-playbook"]
    cases: list[tuple[FakeModule, str, bool, list[tuple[str, ...]]]] = [
        (
            _module(tmp_path, "ansible", "site.yml"),
            "deploy",
            False,
            [
                (
                    ap,
                    "-i",
                    "localhost,",
                    "-c",
                    "local",
                    "--limit",
                    "all",
                    f"{mods}/site.yml",
                    "-e",
                    f"@{work}/vars.yml",
                )
            ],
        ),
        (
            _module(tmp_path, "ansible", "site.yml", inventory={"dev": "../inv/dev.ini"}),
            "plan",
            False,
            [
                (
                    ap,
                    "-i",
                    f"{tmp_path}/modules/inv/dev.ini",
                    "--limit",
                    "all",
                    f"{mods}/site.yml",
                    "-e",
                    f"@{work}/vars.yml",
                    "--check",
                    "--diff",
                )
            ],
        ),
        (
            _module(tmp_path, "terraform", "."),
            "deploy",
            False,
            [
                (tf, "init", "-input=false", "-no-color"),
                (tf, "workspace", "select", "-or-create", "dev"),
                (
                    tf,
                    "plan",
                    "-input=false",
                    "-no-color",
                    "-json",
                    f"-var-file={work}/vars.tfvars.json",
                    f"-out={work}/plan.tfplan",
                ),
                (tf, "apply", "-input=false", "-no-color", "-json", f"{work}/plan.tfplan"),
            ],
        ),
        (
            _module(tmp_path, "terraform", ".", workspace=False),
            "plan",
            False,
            [
                (tf, "init", "-input=false", "-no-color"),
                (
                    tf,
                    "plan",
                    "-input=false",
                    "-no-color",
                    "-json",
                    f"-var-file={work}/vars.tfvars.json",
                    f"-out={work}/plan.tfplan",
                ),
            ],
        ),
        (
            _module(tmp_path, "kubernetes", "chart", release="web", namespace="apps"),
            "deploy",
            False,
            [
                (
                    helm,
                    "upgrade",
                    "--install",
                    "web",
                    f"{mods}/chart",
                    "--namespace",
                    "apps",
                    "--create-namespace",
                    "-f",
                    f"{work}/values.json",
                    "--wait",
                    "--timeout",
                    "20s",
                )
            ],
        ),
        (
            _module(tmp_path, "kubernetes", "chart"),
            "plan",
            False,
            [
                (
                    helm,
                    "template",
                    "web-app",
                    f"{mods}/chart",
                    "--namespace",
                    "default",
                    "-f",
                    f"{work}/values.json",
                )
            ],
        ),
        (
            _module(tmp_path, "kubernetes", "chart"),
            "plan",
            True,
            [
                (
                    helm,
                    "diff",
                    "upgrade",
                    "web-app",
                    f"{mods}/chart",
                    "--namespace",
                    "default",
                    "-f",
                    f"{work}/values.json",
                    "--allow-unreleased",
                )
            ],
        ),
        (
            _module(tmp_path, "kubernetes", "manifests", tool="kubectl", namespace="apps"),
            "deploy",
            False,
            [(kubectl, "apply", "-f", f"{mods}/manifests", "--namespace", "apps")],
        ),
        (
            _module(tmp_path, "kubernetes", "manifests", tool="kubectl", namespace="apps"),
            "plan",
            False,
            [(kubectl, "diff", "-f", f"{mods}/manifests", "--namespace", "apps")],
        ),
        (_module(tmp_path, "script", "run.sh"), "deploy", False, [(f"{mods}/run.sh",)]),
        (_module(tmp_path, "script", "run.sh"), "plan", False, [(f"{mods}/run.sh", "--dry-run")]),
    ]
    for module, mode, helm_diff, expected in cases:
        given = {} if module.options.get("tool") == "kubectl" else params  # kubectl takes none
        spec = make_spec(tmp_path, module, job_id="j1", mode=mode, params=given, tools=tools)
        steps = build_steps(spec, helm_diff=helm_diff)
        assert [s.argv for s in steps] == expected, (module.kind, mode, module.options)
        for step in steps:
            assert not any(bad in arg for arg in step.argv for bad in INJECTIONS)
            assert step.env["MASTERCHIEF_JOB"] == "j1"
            assert step.env["HOME"] == str(work)


def test_kubectl_diff_accepts_exit_1_and_terraform_announces_phases(tmp_path: Path) -> None:
    diff = build_steps(
        make_spec(tmp_path, _module(tmp_path, "kubernetes", "m", tool="kubectl"), mode="plan")
    )
    assert diff[0].ok_exit == frozenset({0, 1})
    tf = build_steps(make_spec(tmp_path, _module(tmp_path, "terraform", ".")))
    assert [s.announce for s in tf] == [
        "terraform init",
        "terraform workspace dev",
        "terraform plan",
        "terraform apply",
    ]
    assert [s.output for s in tf] == ["text", "text", "terraform", "terraform"]
    assert {s.cwd for s in tf} == {tmp_path / "modules" / "web-app"}
    # entry naming a .tf file: the tool still runs in its folder
    tf_file = build_steps(make_spec(tmp_path, _module(tmp_path, "terraform", "main.tf")))
    assert {s.cwd for s in tf_file} == {tmp_path / "modules" / "web-app"}


def _exe(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_tools_are_found_in_venv_then_the_bots_path_then_safe_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops_bin = tmp_path / "opt" / "bin"
    terraform = _exe(ops_bin, "terraform")
    _exe(ops_bin, "ansible-playbook")  # the venv's own comes first
    _exe(ops_bin, "sh")  # SAFE_PATH's /bin/sh comes after the bot's PATH
    monkeypatch.chdir(tmp_path)
    _exe(tmp_path, "helm")  # in the current folder: a relative PATH entry is not used
    monkeypatch.setenv("PATH", f"{ops_bin}:.:")
    spec = make_spec(tmp_path, _module(tmp_path, "terraform", "."), tools={})
    assert spec.search_path == f"{ops_bin}:.:"  # the bot's PATH when the job starts
    assert tool_path(spec).split(":")[:2] == [VENV_BIN, str(ops_bin)]
    assert "." not in tool_path(spec).split(":") and "" not in tool_path(spec).split(":")
    assert build_steps(spec)[0].argv[0] == str(terraform)
    if ANSIBLE_PLAYBOOK.exists():
        ansible = make_spec(tmp_path, _module(tmp_path, "ansible", "site.yml"), tools={})
        assert build_steps(ansible)[0].argv[0] == str(ANSIBLE_PLAYBOOK)
    helm = make_spec(tmp_path, _module(tmp_path, "kubernetes", "chart"), tools={})
    found = build_steps(helm)[0].argv[0]
    assert found != str(tmp_path / "helm") and found in (
        "helm",
        shutil.which("helm", path=SAFE_PATH),
    )
    monkeypatch.setenv("PATH", "/nonexistent")
    later = make_spec(tmp_path, _module(tmp_path, "terraform", "."), tools={})
    assert build_steps(later)[0].argv[0] != str(terraform)  # each job reads PATH anew
    assert build_steps(spec)[0].argv[0] == str(terraform)


async def test_a_tool_found_on_path_runs_with_the_scrubbed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{FAKEBIN}:{SAFE_PATH}")
    monkeypatch.setenv("MC_TEST_LEAK", "should-not-leak")
    folder = tmp_path / "modules" / "net"
    folder.mkdir(parents=True)
    module = FakeModule("net", "terraform", folder, folder)
    result, out = await go(make_spec(tmp_path, module, mode="plan", tools={}))
    assert result.status == "succeeded", out.texts()
    assert result.changed == 2  # the fake plans two resources
    calls = fake_calls(folder)
    assert [c["argv"][0] for c in calls] == ["init", "workspace", "plan"]
    assert all("MC_TEST_LEAK" not in c["env"] for c in calls)
    assert calls[0]["env"]["PATH"].split(":")[:2] == [str(FAKEBIN), VENV_BIN]


def test_kubectl_refuses_module_config_it_would_drop(tmp_path: Path) -> None:
    module = _module(tmp_path, "kubernetes", "manifests", tool="kubectl")
    with pytest.raises(ConfigError) as info:
        build_steps(make_spec(tmp_path, module, variables={"replicas": 3}))
    assert str(info.value) == (
        f"{module.dir / 'module.yaml'}: kubernetes.tool: module config "
        "(config/modules/web-app.yaml) is not supported for kubectl modules; use tool: helm"
    )
    with pytest.raises(ConfigError, match="parameters are not supported for kubectl"):
        build_steps(make_spec(tmp_path, module, params={"image": "x"}))


def test_kubernetes_options_left_out_of_the_manifest_take_their_defaults(
    tmp_path: Path,
) -> None:
    # A manifest's kubernetes section dumps release/namespace as None when not given.
    module = _module(tmp_path, "kubernetes", "chart", tool="helm", release=None, namespace=None)
    (step,) = build_steps(make_spec(tmp_path, module))
    assert step.argv[1:5] == ("upgrade", "--install", "web-app", str(module.entry))
    assert step.argv[5:7] == ("--namespace", "default")


def test_environment_is_built_from_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MC_TEST_LEAK", "should-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "should-not-leak")
    spec = make_spec(
        tmp_path,
        _module(tmp_path, "terraform", "."),
        job_id="j2",
        extra_env={"KUBECONFIG": "/etc/mc/kube", "PATH": "/evil", "MASTERCHIEF_JOB": "other"},
    )
    env = build_steps(spec)[0].env
    assert set(env) == BASE_ENV_KEYS | {
        "TF_IN_AUTOMATION",
        "TF_INPUT",
        "TF_DATA_DIR",
        "CHECKPOINT_DISABLE",
        "KUBECONFIG",
    }
    path = env["PATH"].split(":")
    assert path[:2] == [str(FAKEBIN), VENV_BIN]  # the tool's folder, then the venv
    assert "/evil" not in path and env["MASTERCHIEF_JOB"] == "j2"
    assert env["TF_DATA_DIR"].startswith(str(spec.work_dir) + "/")
    assert env["TMPDIR"] == str(spec.work_dir / "tmp")
    ansible = build_steps(make_spec(tmp_path, _module(tmp_path, "ansible", "site.yml")))[0].env
    assert ansible["ANSIBLE_STDOUT_CALLBACK"] == "masterchief_jsonl"
    assert ansible["ANSIBLE_CALLBACK_PLUGINS"] == str(PLUGIN_DIR)
    assert (PLUGIN_DIR / "masterchief_jsonl.py").is_file()


def test_script_values_travel_as_environment(tmp_path: Path) -> None:
    token = Secret("tok-abcdef-123456")
    spec = make_spec(
        tmp_path,
        _module(tmp_path, "script", "run.sh"),
        params={"version": INJECTIONS[0], "force": True, "replicas": 3},
        variables={"db-password": token, "nested": {"a": [1, token]}},
    )
    (step,) = build_steps(spec)
    env = step.env
    assert env["MC_PARAM_VERSION"] == INJECTIONS[0]
    assert env["MC_PARAM_FORCE"] == "true" and env["MC_PARAM_REPLICAS"] == "3"
    assert env["MC_VAR_DB_PASSWORD"] == "tok-abcdef-123456"
    assert json.loads(env["MC_VAR_NESTED"]) == {"a": [1, "tok-abcdef-123456"]}
    assert (env["MC_JOB_ID"], env["MC_MODULE"], env["MC_ENV"], env["MC_MODE"]) == (
        spec.job_id,
        "web-app",
        "dev",
        "deploy",
    )
    assert "tok-abcdef" not in repr(step)  # the environment is not in the repr


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"options": {"release": "--kubeconfig=/tmp/x"}}, ConfigError),
        ({"options": {"namespace": "Apps Space"}}, ConfigError),
        ({"options": {"tool": "kustomize"}}, ConfigError),
        ({"kind": "puppet"}, ConfigError),
    ],
)
def test_bad_module_options_are_config_errors(
    tmp_path: Path, overrides: dict[str, Any], error: type[Exception]
) -> None:
    fields = {"name": "web-app", "kind": "kubernetes", "dir": tmp_path, "entry": tmp_path}
    module = FakeModule(**{**fields, **overrides})
    with pytest.raises(error) as info:
        build_steps(make_spec(tmp_path, module))
    assert "module.yaml" in str(info.value)


def test_nul_in_a_script_parameter_is_a_user_error(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, _module(tmp_path, "script", "run.sh"), params={"v": "a\0b"})
    with pytest.raises(UserError, match="NUL"):
        build_steps(spec)


@pytest.mark.parametrize(
    "bad",
    [{"job_id": "-x"}, {"env": "--prod"}, {"mode": "destroy"}, {"timeout_s": 0}],
)
def test_runspec_validates(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_spec(tmp_path, _module(tmp_path, "script", "run.sh"), **bad)
