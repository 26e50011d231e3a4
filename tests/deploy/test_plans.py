"""What a dry run would change: the parsers (pure, tables) and real dry runs of a
script, the terraform/helm/kubectl stand-ins and the real ansible-playbook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from masterchief.config.secrets import Secret
from masterchief.deploy.parsers import parser_for
from tests.deploy.test_runners import (
    ANSIBLE_PLAYBOOK,
    ansible_module,
    go,
    k8s_module,
    make_spec,
    script_module,
    tf_module,
)

# --- parsers: raw lines in, plan lines and headline out -----------------------------


def _tf(kind: str, message: str, **extra: Any) -> str:
    return json.dumps({"@level": "info", "@message": message, "type": kind, **extra})


PLAN_CASES: list[tuple[str, str, str, list[str], list[str], str | None]] = [
    # (output format, step label, plan?, raw lines, plan lines, headline)
    (
        "terraform",
        "plan",
        "plan",
        [
            _tf("version", "Terraform 1.11.4"),
            _tf("planned_change", "a.b: Plan to create"),
            _tf("resource_drift", "c.d: Drift detected (update)"),
            _tf(
                "change_summary",
                "Plan: 1 to add, 0 to change, 0 to destroy.",
                changes={"add": 1, "change": 0, "remove": 0, "operation": "plan"},
            ),
        ],
        ["a.b: Plan to create", "c.d: Drift detected (update)"],
        "Plan: 1 to add, 0 to change, 0 to destroy.",
    ),
    (
        "terraform",
        "apply",
        "plan",
        [
            _tf(
                "change_summary",
                "Apply complete! Resources: 1 added, 0 changed, 0 destroyed.",
                changes={"add": 1, "change": 0, "remove": 0, "operation": "apply"},
            ),
        ],
        [],
        None,  # an apply's summary is not a plan's headline
    ),
    (
        "ansible",
        "ansible-playbook",
        "plan",
        [
            json.dumps({"mc": "task_start", "name": "install", "role": "common"}),
            json.dumps({"mc": "result", "status": "changed", "host": "web1"}),
            json.dumps({"mc": "result", "status": "ok", "host": "web2"}),
            json.dumps({"mc": "task_start", "name": "restart", "handler": True}),
            json.dumps({"mc": "result", "status": "changed", "host": "web1", "item": "a"}),
        ],
        [
            "TASK [common : install] changed: [web1]",
            "RUNNING HANDLER [restart] changed: [web1] => (item=a)",
        ],
        None,
    ),
    (
        "text",
        "helm diff",
        "plan",
        [
            "apps, web-config, ConfigMap (v1) has been added:",
            '+   tag: "v2"',
            "apps, web, Deployment (apps) has changed:",
            "apps, old, Service (v1) has been removed:",
        ],
        [
            "ConfigMap apps/web-config added",
            "Deployment apps/web changed",
            "Service apps/old removed",
        ],
        "helm diff: 1 added, 1 changed, 1 removed",
    ),
    (
        "text",
        "helm template",
        "plan",
        [
            "---",
            "# Source: app/templates/cm.yaml",
            "apiVersion: v1",
            "kind: ConfigMap",
            "metadata:",
            "  name: web-config",
            "  namespace: apps",
            "data:",
            "  name: not-this",
            "---",
            "kind: Secret",
            "metadata:",
            "  name: web-secret",
        ],
        ["ConfigMap/web-config", "Secret/web-secret"],
        "helm template: 2 objects rendered (no helm-diff plugin: what would change is not known)",
    ),
    (
        "text",
        "kubectl diff",
        "plan",
        [
            "diff -u -N /tmp/LIVE-1/v1.ConfigMap.apps.a /tmp/MERGED-2/v1.ConfigMap.apps.a",
            "@@ -0,0 +1,3 @@",
            "+  name: a",
        ],
        ["v1.ConfigMap.apps.a"],
        "kubectl diff: 1 objects differ",
    ),
    (
        "text",
        "script",
        "plan",
        ["would restart nginx", "", "then reload"],
        ["would restart nginx", "then reload"],
        None,
    ),
    ("text", "script", "deploy", ["restarting nginx"], [], None),  # a real run has no plan
    ("text", "init", "plan", ["Initializing the backend..."], [], None),  # not the plan
]


@pytest.mark.parametrize(("output", "label", "mode", "raw", "plan", "headline"), PLAN_CASES)
def test_parsers_find_the_plan(
    output: Any, label: str, mode: str, raw: list[str], plan: list[str], headline: str | None
) -> None:
    parser = parser_for(output, label, plan=mode == "plan")
    found = [c for line in raw for item in parser.feed(line) if (c := parser.change(item))]
    assert found == plan
    assert parser.headline == headline


# --- real dry runs -------------------------------------------------------------------


async def test_a_script_dry_run_is_its_plan_and_secrets_stay_masked(tmp_path: Path) -> None:
    token = "tok-plan-secret-77"
    module = script_module(
        tmp_path,
        """
        import os, sys
        assert sys.argv[1:] == ["--dry-run"]
        for n in range(30):
            print(f"would restart svc{n} with {os.environ['MC_PARAM_TOKEN']}")
        """,
    )
    spec = make_spec(tmp_path, module, mode="plan", params={"token": Secret(token)})
    result, _ = await go(spec)
    assert result.status == "succeeded"
    assert result.change_count == 30
    assert result.changes[:2] == ("would restart svc0 with ***", "would restart svc1 with ***")
    assert token not in "".join(result.changes)


async def test_terraform_plan_says_plan_counts_and_lists_changes(tmp_path: Path) -> None:
    module = tf_module(
        tmp_path, {"resources": ["null_resource.web"], "change": ["null_resource.lb"]}
    )
    spec = make_spec(tmp_path, module, mode="plan")
    result, _ = await go(spec)
    assert result.summary.endswith(
        f": Plan: 1 to add, 1 to change, 0 to destroy. (job {spec.job_id})"
    )
    assert result.changes == (
        "null_resource.web: Plan to create",
        "null_resource.lb: Plan to update in-place",
    )
    deploy, _ = await go(make_spec(tmp_path, module))  # a real run keeps its counts
    assert "changed 2, failed 0" in deploy.summary and deploy.changes == ()


async def test_helm_plans_with_and_without_the_diff_plugin(tmp_path: Path) -> None:
    with_diff = k8s_module(tmp_path / "a", "helm", {"diff_plugin": True})
    result, _ = await go(make_spec(tmp_path, with_diff, mode="plan", params={"tag": "v2"}))
    assert result.changes == ("ConfigMap default/web-config added",)
    assert "helm diff: 1 added, 0 changed, 0 removed (job " in result.summary
    template = k8s_module(tmp_path / "b", "helm")
    result, _ = await go(make_spec(tmp_path, template, mode="plan", params={"tag": "v2"}))
    assert result.changes == ("ConfigMap/web-config", "Secret/web-secret")
    assert "helm template: 2 objects rendered" in result.summary


async def test_kubectl_diff_plan_names_the_objects(tmp_path: Path) -> None:
    module = k8s_module(tmp_path, "kubectl", {"differences": True})
    result, _ = await go(make_spec(tmp_path, module, mode="plan"))
    assert result.changes == tuple(f"v1.ConfigMap.default.{n}" for n in "abc")
    assert "kubectl diff: 3 objects differ" in result.summary


CHANGING_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: write the motd
      copy: {{content: "hello", dest: "{dest}"}}
    - name: look around
      debug: {{msg: fine}}
"""


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed")
async def test_ansible_check_mode_lists_the_changed_tasks(tmp_path: Path) -> None:
    dest = tmp_path / "motd"
    module = ansible_module(tmp_path, "motd", CHANGING_PLAYBOOK.format(dest=dest))
    result, out = await go(make_spec(tmp_path, module, mode="plan", tools={}))
    assert result.status == "succeeded", out.texts()
    assert result.changes == ("TASK [write the motd] changed: [localhost]",)
    assert result.summary.split(" (job ")[0].endswith("changed 1, failed 0")
    assert not dest.exists()  # check mode: nothing was written
