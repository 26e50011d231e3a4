"""No parameter or module config value is ever evaluated by a tool's template
language: Ansible's Jinja (the real ansible-playbook), Terraform's ``${ }`` /
``%{ }`` (the real terraform where installed, the exact var file always),
Helm's ``--set`` syntax (values file only), and the shell (scripts get
``MC_PARAM_*`` with no shell in between)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from masterchief.config.secrets import Secret
from masterchief.deploy.kinds import build_steps
from masterchief.deploy.kinds.ansible import ansible_vars_yaml
from masterchief.errors import ConfigError
from tests.deploy.test_runners import (
    ANSIBLE_PLAYBOOK,
    FakeModule,
    assert_secret_hidden,
    fake_calls,
    go,
    k8s_module,
    make_spec,
)

TOKEN = "tok-Zq81-api-secret"


def payloads(marker: Path) -> dict[str, str]:
    """Every template syntax we know, each of which would create ``marker``
    (or read a file) if something evaluated it."""
    return {
        "jinja": f"{{{{ lookup('pipe', 'touch {marker}') }}}}",
        "jinja_block": f"{{% set x = lookup('pipe', 'touch {marker}') %}}{{{{ 7 * 7 }}}}",
        "tf_interp": '${file("/etc/hostname")}',
        "tf_directive": "%{ if true }yes%{ endif }",
        "subshell": f"$(touch {marker})",
        "backticks": f"`touch {marker}`",
        "helm_set": "a,b=c",
        "helm_set2": "x[0].y=z,{a,b}",
    }


class _Tagged(str):
    """A string that carried the !unsafe tag."""


class _TagLoader(yaml.SafeLoader):
    pass


_TagLoader.add_constructor(
    "!unsafe",
    lambda loader, node: _Tagged(loader.construct_scalar(node)),  # type: ignore[arg-type]
)


def _every_string_tagged(value: Any) -> bool:
    if isinstance(value, str):
        return isinstance(value, _Tagged)
    if isinstance(value, dict):
        return all(_every_string_tagged(k) and _every_string_tagged(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_every_string_tagged(v) for v in value)
    return True


def test_ansible_vars_yaml_tags_every_string_and_round_trips(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        **payloads(tmp_path / "m"),
        "quotes": "say \"hi\" \\ 'there'",
        "lines": "one\ntwo\r\n\tthree",
        "unicode": "café ✓ 🚀 \u2028",
        "nested": {"list": ["{{ a }}", 1, 2.5, True, None], "{{ key }}": {"${k}": "%{ v }"}},
        "secret": Secret(TOKEN),
        "number": 3,
        "flag": False,
    }
    text = ansible_vars_yaml(data)
    loaded = yaml.load(text, Loader=_TagLoader)  # a SafeLoader subclass
    expected = {**data, "secret": TOKEN}
    assert loaded == expected
    assert _every_string_tagged(loaded)
    assert text.isascii()  # escapes only: no character can end the quoting


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed")
async def test_ansible_never_templates_parameters_or_module_config(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    out_file = tmp_path / "arrived.json"
    folder = tmp_path / "modules" / "tmpl"
    folder.mkdir(parents=True)
    (folder / "site.yml").write_text(
        textwrap.dedent(
            """\
            - hosts: all
              gather_facts: false
              tasks:
                - name: show what arrived
                  debug:
                    msg: "probe {{ probe }} upper {{ probe_upper }} join {{ probe_join }}"
                - name: record what arrived
                  copy:
                    dest: "{{ out_file }}"
                    content: "{{ {'payload': payload, 'nested': nested, 'probe': probe} | to_json }}"
            """
        )
    )
    module = FakeModule("tmpl", "ansible", folder, folder / "site.yml")
    nested = {
        "list": list(payloads(marker).values()),
        "{{ 6 * 6 }}": {"${path.cwd}": ["$(id)", "`id`", {"{% raw %}": "{{ api_token }}"}]},
    }
    params = {
        "probe": "{{ api_token | reverse }}",
        "probe_upper": "{{ api_token | upper }}",
        "probe_join": "{{ api_token | list | join('.') }}",
    }
    variables = {
        "payload": payloads(marker),
        "nested": nested,
        "api_token": Secret(TOKEN),
        "out_file": str(out_file),
    }
    spec = make_spec(tmp_path, module, params=params, variables=variables, tools={})
    result, out = await go(spec)
    assert result.status == "succeeded", out.texts()
    assert not marker.exists()
    arrived = json.loads(out_file.read_text())
    assert arrived == {"payload": payloads(marker), "nested": nested, "probe": params["probe"]}
    shown = out.texts("step")[0]
    assert shown == (
        "ok: [localhost] => probe {{ api_token | reverse }} upper {{ api_token | upper }} "
        "join {{ api_token | list | join('.') }}"
    )
    for form in (TOKEN, TOKEN[::-1], TOKEN.upper(), ".".join(TOKEN)):
        assert_secret_hidden(form, out, result)


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed")
async def test_a_parameter_naming_localhost_never_reaches_the_implicit_localhost(
    tmp_path: Path,
) -> None:
    # hosts: "{{ target }}" with target=localhost: Ansible adds an implicit
    # localhost (a local connection on the bot's host) that no inventory lists.
    marker = tmp_path / "LOCAL_RAN"
    folder = tmp_path / "modules" / "pick"
    folder.mkdir(parents=True)
    (folder / "hosts.ini").write_text("target-1 ansible_host=192.0.2.10\n")
    (folder / "site.yml").write_text(
        textwrap.dedent(
            f"""\
            - hosts: "{{{{ target }}}}"
              gather_facts: false
              tasks:
                - name: touch
                  file: {{path: "{marker}", state: touch}}
            """
        )
    )
    module = FakeModule(
        "pick", "ansible", folder, folder / "site.yml", {"inventory": {"dev": "hosts.ini"}}
    )
    for target in ("localhost", "127.0.0.1"):
        spec = make_spec(tmp_path, module, params={"target": target}, tools={})
        result, out = await go(spec)
        assert "skipping: no hosts matched" in out.texts(), out.texts()
        assert not marker.exists(), target
        assert result.status == "succeeded"


def test_terraform_gets_values_only_in_the_var_file(tmp_path: Path) -> None:
    folder = tmp_path / "modules" / "net"
    folder.mkdir(parents=True)
    module = FakeModule("net", "terraform", folder, folder)
    spec = make_spec(tmp_path, module, params=payloads(tmp_path / "m"))
    for step in build_steps(spec):
        joined = " ".join(step.argv)
        assert "-var=" not in joined and "-var " not in joined
        assert not any(v in joined for v in payloads(tmp_path / "m").values())


async def test_terraform_var_file_holds_the_values_exactly(tmp_path: Path) -> None:
    folder = tmp_path / "modules" / "net"
    folder.mkdir(parents=True)
    module = FakeModule("net", "terraform", folder, folder)
    values = payloads(tmp_path / "m")
    spec = make_spec(tmp_path, module, mode="plan", params=values, variables={"m": {"${k}": 1}})
    result, out = await go(spec)
    assert result.status == "succeeded", out.texts()
    plan = next(c for c in fake_calls(folder) if c["argv"][0] == "plan")
    var_file = str(spec.work_dir / "vars.tfvars.json")
    assert f"-var-file={var_file}" in plan["argv"]
    assert json.loads(plan["files"][var_file]["content"]) == {**values, "m": {"${k}": 1}}


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
async def test_real_terraform_does_not_interpolate_variable_values(tmp_path: Path) -> None:
    folder = tmp_path / "modules" / "lit"
    folder.mkdir(parents=True)
    values = payloads(tmp_path / "m")
    (folder / "main.tf").write_text(
        "".join(f'variable "{k}" {{ type = string }}\n' for k in values)
        + 'variable "m" { type = any }\n'
        + 'output "all" { value = { '
        + ", ".join(f"{k} = var.{k}" for k in values)
        + ", m = var.m } }\n"
    )
    module = FakeModule("lit", "terraform", folder, folder, {"workspace": False})
    nested = {"${path.cwd}": ['${file("/etc/hostname")}']}
    spec = make_spec(tmp_path, module, params=values, variables={"m": nested}, tools={})
    result, out = await go(spec)
    assert result.status == "succeeded", out.texts()
    state = json.loads((folder / "terraform.tfstate").read_text())
    assert state["outputs"]["all"]["value"] == {**values, "m": nested}


async def test_helm_gets_values_in_a_file_never_set(tmp_path: Path) -> None:
    module = k8s_module(tmp_path, "helm", release="web", namespace="apps")
    values = payloads(tmp_path / "m")
    spec = make_spec(tmp_path, module, params=values, variables={"list": ["a,b=c"]})
    result, out = await go(spec)
    assert result.status == "succeeded", out.texts()
    (call,) = fake_calls(module.dir)
    assert not any(a.startswith("--set") for a in call["argv"])
    values_file = str(spec.work_dir / "values.json")
    assert call["argv"][call["argv"].index("-f") + 1] == values_file
    arrived = json.loads(call["files"][values_file]["content"])
    assert arrived == {**values, "list": ["a,b=c"]}
    assert arrived["helm_set"] == "a,b=c"  # one string, not {a: ..., b: c}


def test_kubectl_takes_no_values_at_all(tmp_path: Path) -> None:
    module = k8s_module(tmp_path, "kubectl")
    with pytest.raises(ConfigError, match="parameters are not supported for kubectl"):
        build_steps(make_spec(tmp_path, module, params={"x": "a,b=c"}))


async def test_script_parameters_arrive_byte_for_byte_through_no_shell(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    values = payloads(marker)
    folder = tmp_path / "modules" / "sh"
    folder.mkdir(parents=True)
    entry = folder / "run.sh"
    entry.write_text(
        "#!/bin/sh\nset -eu\n"
        + "".join(f"printf '%s=%s\\n' {k} \"$MC_PARAM_{k.upper()}\"\n" for k in values)
        + "printf 'var=%s\\n' \"$MC_VAR_NOTE\"\n"
    )
    entry.chmod(0o755)
    module = FakeModule("sh", "script", folder, entry)
    spec = make_spec(tmp_path, module, params=values, variables={"note": "$(id) `id` ${HOME}"})
    result, out = await go(spec)
    assert result.status == "succeeded", out.texts()
    assert not marker.exists()
    texts = out.texts()
    for key, value in values.items():
        assert f"{key}={value}" in texts
    assert "var=$(id) `id` ${HOME}" in texts


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed")
async def test_a_module_printing_its_own_secret_transformed_is_masked(tmp_path: Path) -> None:
    # The playbook's author, not a parameter, transforms the secret: the
    # job's redactor masks the forms a template makes easy.
    folder = tmp_path / "modules" / "leak"
    folder.mkdir(parents=True)
    (folder / "site.yml").write_text(
        textwrap.dedent(
            """\
            - hosts: all
              gather_facts: false
              tasks:
                - debug: {msg: "r={{ api_token | reverse }}"}
                - debug: {msg: "u={{ api_token | upper }}"}
                - debug: {msg: "j={{ api_token | list | join('.') }}"}
                - debug: {msg: "b={{ api_token | b64encode }}"}
            """
        )
    )
    module = FakeModule("leak", "ansible", folder, folder / "site.yml")
    spec = make_spec(tmp_path, module, variables={"api_token": Secret(TOKEN)}, tools={})
    result, out = await go(spec)
    assert result.status == "succeeded", out.texts()
    assert [t.split(" => ")[1] for t in out.texts("step")] == ["r=***", "u=***", "j=***", "b=***"]
    for form in (TOKEN, TOKEN[::-1], TOKEN.upper(), ".".join(TOKEN)):
        assert_secret_hidden(form, out, result)


def test_allow_bot_host_never_reaches_the_tool(tmp_path: Path) -> None:
    from masterchief.deploy.kinds.base import merged_vars

    folder = tmp_path / "modules" / "sh"
    folder.mkdir(parents=True)
    module = FakeModule("sh", "script", folder, folder / "run.sh")
    spec = make_spec(tmp_path, module, variables={"allow_bot_host": True, "note": "x"})
    (step,) = build_steps(spec)
    assert step.env["MC_VAR_NOTE"] == "x" and "MC_VAR_ALLOW_BOT_HOST" not in step.env
    assert merged_vars(spec) == {"note": "x"}
    kubectl = k8s_module(tmp_path, "kubectl")  # takes no config, but the setting is not config
    assert build_steps(make_spec(tmp_path, kubectl, variables={"allow_bot_host": True}))
