"""Deploy modules: the manifest, its validation errors and the folder digest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from masterchief.deploy.manifest import Manifest, ModuleError, folder_digest, load_module


def manifest(name: str = "web-app", **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "version": "1.2.0",
        "kind": "ansible",
        "description": "Deploy the web app",
        "entry": "site.yml",
        "environments": ["dev", "staging", "prod"],
        "flags": "o|o",
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def write_module(
    folder: Path, data: dict[str, Any] | str, *, entry: str | None = "site.yml"
) -> Path:
    """A module folder with its manifest and (by default) its playbook."""
    folder.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    (folder / "module.yaml").write_text(text)
    if entry is not None:
        (folder / entry).parent.mkdir(parents=True, exist_ok=True)
        (folder / entry).write_text("- hosts: all\n  tasks: []\n")
    return folder / "module.yaml"


def load_error(tmp_path: Path, data: dict[str, Any] | str) -> ModuleError:
    file = write_module(tmp_path / "modules" / "x", data)
    with pytest.raises(ModuleError) as info:
        load_module(file, display="modules/x/module.yaml")
    return info.value


# --- a valid module -------------------------------------------------------------------------


def test_valid_module_loads_with_its_properties(tmp_path: Path) -> None:
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "prod.ini").write_text("[web]\nweb1\n")
    file = write_module(
        tmp_path / "web",
        manifest(
            entry="playbooks/site.yml",
            approval={"prod": {"approvers": 2, "flags": "m|m", "ttl_s": 600}},
            parameters={
                "version": {
                    "type": "string",
                    "pattern": r"^[0-9]+\.[0-9]+\.[0-9]+$",
                    "required": True,
                },
                "replicas": {"type": "integer", "minimum": 1, "maximum": 20, "default": 2},
            },
            ansible={"inventory": {"prod": "../inventories/prod.ini"}},
        ),
        entry="playbooks/site.yml",
    )
    mod = load_module(file)
    assert mod.name == "web-app"
    assert mod.kind == "ansible"
    assert mod.entry == (tmp_path / "web" / "playbooks" / "site.yml").resolve()
    assert mod.entry.is_absolute()
    assert mod.options == {"inventory": {"prod": "../inventories/prod.ini"}}
    assert mod.manifest.approval["prod"].approvers == 2
    assert mod.manifest.parameters["replicas"].default == 2
    assert mod.manifest.mask.allows("o")
    assert len(mod.digest) == 64 and int(mod.digest, 16) >= 0


def test_options_empty_when_section_absent_and_defaults_when_present(tmp_path: Path) -> None:
    plain = load_module(write_module(tmp_path / "a", manifest()))
    assert plain.options == {}
    chart = tmp_path / "b" / "chart"
    chart.mkdir(parents=True)
    kube = load_module(
        write_module(
            tmp_path / "b",
            manifest(kind="kubernetes", entry="chart", kubernetes={"release": "masterchief"}),
            entry=None,
        )
    )
    assert kube.options == {"release": "masterchief", "namespace": None, "tool": "helm"}


def test_kubectl_module_with_parameters_is_refused_naming_file_and_field(tmp_path: Path) -> None:
    """kubectl applies manifests as they are: declared parameters would be dropped."""
    (tmp_path / "modules" / "x" / "manifests").mkdir(parents=True)
    err = load_error(
        tmp_path,
        manifest(
            "x",
            kind="kubernetes",
            entry="manifests",
            kubernetes={"tool": "kubectl"},
            parameters={"image": {"type": "string"}},
        ),
    )
    assert err.file == "modules/x/module.yaml" and err.key == "parameters"
    assert str(err) == (
        "modules/x/module.yaml: parameters: parameters are not supported for kubectl "
        "modules (kubectl applies the manifests as they are); use tool: helm"
    )
    # the same module without parameters, or with helm, is fine
    for over in ({"parameters": None}, {"kubernetes": {"tool": "helm"}}):
        data = manifest(
            "x",
            kind="kubernetes",
            entry="manifests",
            kubernetes={"tool": "kubectl"},
            parameters={"image": {"type": "string"}},
        )
        data.update(over)
        file = write_module(tmp_path / "modules" / "x", manifest(**data), entry=None)
        assert load_module(file).kind == "kubernetes"


# --- manifest errors name the file and the field ----------------------------------------------


@pytest.mark.parametrize(
    ("over", "key", "detail"),
    [
        (
            {"kind": "helm"},
            "kind",
            "Input should be 'ansible', 'terraform', 'kubernetes' or 'script'",
        ),
        (
            {"parameters": {"version": {"pattern": "([0-9]"}}},
            "parameters.version.pattern",
            "does not compile (missing ), unterminated subpattern",
        ),
        (
            {"approval": {"qa": {"approvers": 1}}},
            "approval",
            "'qa' is not a listed environment (environments: dev, staging, prod)",
        ),
        ({"entrypoint": "x.yml"}, "entrypoint", "unknown key (did you mean 'entry'?)"),
        (
            {"parameters": {"version": {"patern": "x"}}},
            "parameters.version.patern",
            "unknown key (did you mean 'pattern'?)",
        ),
        (
            {"approval": {"prod": {"flags": "m|m|m"}}},
            "approval.prod.flags",
            "invalid flag mask 'm|m|m'",
        ),
        ({"name": "Web_App"}, "name", "String should match pattern"),
        ({"version": "1.2"}, "version", "String should match pattern"),
        ({"environments": []}, "environments", "at least 1 item"),
        ({"environments": ["dev", "Prod!"]}, "environments", "'Prod!' is not an environment name"),
        ({"flags": "o|o|o"}, "flags", "invalid flag mask"),
        ({"flags": ""}, "flags", "flags are required"),
        ({"timeout_s": 0}, "timeout_s", "greater than 0"),
        ({"timeout_s": 90000}, "timeout_s", "less than or equal to 86400"),
        ({"requires": ["Not A Name"]}, "requires", "is not a module name"),
        ({"entry": "/etc/passwd"}, "entry", "relative to the module folder"),
        ({"terraform": {"workspace": True}}, "terraform", "this section is for kind terraform"),
        (
            {"ansible": {"inventory": {"qa": "x.ini"}}},
            "ansible",
            "inventory: 'qa' is not a listed environment",
        ),
        ({"parameters": {"Bad-Name": {}}}, "parameters", "'Bad-Name' is not a parameter name"),
        (
            {"parameters": {"n": {"type": "integer", "default": "two"}}},
            "parameters.n.default",
            "should be of type integer",
        ),
        (
            {"parameters": {"n": {"type": "integer", "default": True}}},
            "parameters.n.default",
            "should be of type integer",
        ),
        (
            {"parameters": {"v": {"required": True, "default": "1.0.0"}}},
            "parameters.v.default",
            "a required parameter takes no default",
        ),
        (
            {"parameters": {"v": {"pattern": "^[0-9]+$", "default": "abc"}}},
            "parameters.v.default",
            "does not match the pattern",
        ),
        (
            {"parameters": {"n": {"type": "integer", "minimum": 1, "maximum": 5, "default": 9}}},
            "parameters.n.default",
            "is more than the maximum 5",
        ),
        (
            {"parameters": {"n": {"type": "integer", "minimum": 5, "maximum": 1}}},
            "parameters.n.maximum",
            "maximum is less than minimum",
        ),
        (
            {"parameters": {"n": {"type": "integer", "pattern": "^1$"}}},
            "parameters.n.pattern",
            "pattern is only for string parameters",
        ),
        (
            {"parameters": {"s": {"minimum": 1}}},
            "parameters.s.minimum",
            "only for integer and number parameters",
        ),
        (
            {"parameters": {"n": {"type": "integer", "enum": [1, "two"]}}},
            "parameters.n.enum",
            "enum value 'two' should be of type integer",
        ),
        ({"parameters": {"s": {"enum": []}}}, "parameters.s.enum", "at least one value"),
        ({"parameters": {"s": {"type": "text"}}}, "parameters.s.type", "Input should be"),
        ({"description": "evil\x02bold"}, "description", "control characters are not allowed"),
    ],
)
def test_manifest_errors_name_file_and_field(
    tmp_path: Path, over: dict[str, Any], key: str, detail: str
) -> None:
    err = load_error(tmp_path, manifest(**over))
    assert err.file == "modules/x/module.yaml"
    assert err.key == key
    assert detail in err.detail
    assert str(err).startswith(f"modules/x/module.yaml: {key}: ")


def test_missing_required_field_named(tmp_path: Path) -> None:
    err = load_error(tmp_path, manifest(kind=None))
    assert str(err) == "modules/x/module.yaml: kind: Field required"


def test_every_field_error_is_listed(tmp_path: Path) -> None:
    err = load_error(tmp_path, manifest(kind="helm", version="one"))
    lines = str(err).splitlines()
    assert len(lines) == 2
    assert all(line.startswith("modules/x/module.yaml: ") for line in lines)
    assert {line.split(": ")[1] for line in lines} == {"kind", "version"}


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, "name: web\nversion: [1.2.0\n")
    assert str(err).startswith("modules/x/module.yaml:3: YAML syntax error")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    err = load_error(tmp_path, "- just\n- a list\n")
    assert "modules/x/module.yaml" in str(err)
    assert "mapping" in str(err)


def test_missing_entry(tmp_path: Path) -> None:
    file = write_module(tmp_path / "x", manifest(entry="nope.yml"))
    with pytest.raises(ModuleError) as info:
        load_module(file, display="modules/x/module.yaml")
    assert str(info.value) == (
        "modules/x/module.yaml: entry: not found (nope.yml relative to the module folder)"
    )


def test_missing_inventory(tmp_path: Path) -> None:
    file = write_module(tmp_path / "x", manifest(ansible={"inventory": {"prod": "prod.ini"}}))
    with pytest.raises(ModuleError) as info:
        load_module(file)
    assert info.value.key == "ansible.inventory.prod"


def test_script_entry_must_be_executable_regular_file(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    file = write_module(folder, manifest(kind="script", entry="run.sh"), entry="run.sh")
    with pytest.raises(ModuleError) as info:
        load_module(file, display="modules/x/module.yaml")
    assert info.value.key == "entry"
    assert "not executable" in str(info.value)

    (folder / "run.sh").chmod(0o755)
    assert load_module(file).entry == (folder / "run.sh").resolve()

    (folder / "bin").mkdir()
    (folder / "module.yaml").write_text(yaml.safe_dump(manifest(kind="script", entry="bin")))
    with pytest.raises(ModuleError) as info:
        load_module(file)
    assert "regular file" in str(info.value)


def test_entry_may_leave_the_module_folder(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "site.yml").write_text("[]\n")
    file = write_module(
        tmp_path / "mods" / "x", manifest(entry="../../shared/site.yml"), entry=None
    )
    assert load_module(file).entry == (tmp_path / "shared" / "site.yml").resolve()


# --- digest -------------------------------------------------------------------------------------


def test_digest_follows_contents_and_skips_dot_folders(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_module(folder, manifest())
    first = folder_digest(folder)
    (folder / ".terraform").mkdir()
    (folder / ".terraform" / "cache").write_text("noise")
    assert folder_digest(folder) == first
    (folder / "site.yml").write_text("- hosts: web\n")
    second = folder_digest(folder)
    assert second != first
    (folder / "vars.yml").write_text("x: 1\n")
    assert folder_digest(folder) != second
    (folder / "vars.yml").unlink()
    assert folder_digest(folder) == second
    assert folder_digest(folder, max_bytes=0) != second  # over the cap: sizes and mtimes


def test_manifest_model_is_frozen_and_strict() -> None:
    m = Manifest.model_validate(manifest())
    with pytest.raises(Exception, match="frozen"):
        m.name = "other"  # type: ignore[misc]
    assert m.section() == {}
