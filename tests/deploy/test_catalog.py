"""Deploy modules: manifest validation, discovery, ordering, reload, module config, add/remove."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from masterchief.config.engine import build_config
from masterchief.config.secrets import REDACTOR, Secret
from masterchief.deploy.catalog import (
    Manifest,
    ModuleError,
    ModuleLoader,
    ReloadResult,
    add_module,
    discover,
    folder_digest,
    load_module,
    load_module_config,
    load_modules,
    module_config_envs,
    module_config_problems,
    module_resolvers,
    remove_module,
)
from masterchief.errors import ConfigError, UserError


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


# --- discovery ------------------------------------------------------------------------------


def test_discover_nested_sorted_and_skips_dot_folders(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    b = write_module(root / "team" / "b", manifest("b"))
    a = write_module(root / "a", manifest("a"))
    write_module(root / ".removed" / "old-20240101T000000Z", manifest("old"))
    write_module(root / "a" / "inner", manifest("inner"))  # inside a module: its files
    outside = write_module(tmp_path / "elsewhere" / "c", manifest("c")).parent
    (root / "linked").symlink_to(outside, target_is_directory=True)
    assert discover([root, tmp_path / "missing"]) == sorted([a, b])


def test_one_bad_module_does_not_hide_the_others(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "good", manifest("good"))
    write_module(root / "bad", manifest("bad", kind="helm"))
    found = load_modules([root])
    assert found.names == ("good",)
    assert [str(e).split(": ")[:2] for e in found.errors] == [["modules/bad/module.yaml", "kind"]]


def test_duplicate_names_name_both_files(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "one", manifest("web"))
    write_module(root / "two", manifest("web"))
    found = load_modules([root])
    assert "web" not in found
    assert len(found.errors) == 1
    assert "modules/one/module.yaml and modules/two/module.yaml" in str(found.errors[0])


# --- ordering ----------------------------------------------------------------------------------


def make_graph(root: Path, graph: dict[str, list[str]]) -> None:
    for name, requires in graph.items():
        write_module(root / name, manifest(name, requires=requires))


def test_order_and_closure(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    make_graph(root, {"app": ["db", "net"], "db": ["net"], "net": [], "other": []})
    found = load_modules([root])
    assert found.errors == ()
    order = [m.name for m in found.order]
    assert order.index("net") < order.index("db") < order.index("app")
    assert [m.name for m in found.closure("app")] == ["net", "db", "app"]
    assert [m.name for m in found.closure("net")] == ["net"]
    with pytest.raises(UserError, match="unknown module 'nope'; try !modules"):
        found.closure("nope")


def test_missing_dependency_named_and_dependents_excluded(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    make_graph(root, {"app": ["db"], "db": ["ghost"], "solo": []})
    found = load_modules([root])
    assert found.names == ("solo",)
    messages = sorted(str(e) for e in found.errors)
    assert messages == [
        "modules/app/module.yaml: requires: app requires db, which is not usable (see its error)",
        "modules/db/module.yaml: requires: db requires ghost, which is not a known module",
    ]


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": ["b"], "b": ["a"]}, "a -> b -> a"),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "a -> b -> c -> a"),
        ({"b": ["a"], "a": ["c"], "c": ["b"]}, "a -> c -> b -> a"),
        ({"a": ["a"]}, "a -> a"),
    ],
)
def test_cycle_is_reported_and_excluded(
    tmp_path: Path, graph: dict[str, list[str]], cycle: str
) -> None:
    root = tmp_path / "modules"
    make_graph(root, {**graph, "top": ["a"], "free": []})
    found = load_modules([root])
    assert found.names == ("free",)
    texts = [str(e) for e in found.errors]
    assert f"modules/a/module.yaml: requires: dependency cycle: {cycle}" in texts
    assert (
        "modules/top/module.yaml: requires: top requires a, which is not usable (see its error)"
        in texts
    )


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


# --- the loader ----------------------------------------------------------------------------------


def test_reload_keeps_old_version_on_broken_edit_and_takes_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web", version="1.0.0"))
    write_module(root / "db", manifest("db"))
    loader = ModuleLoader([root])
    seen: list[ReloadResult] = []
    loader.on_change.append(seen.append)

    first = loader.reload()
    assert first.added == ("db", "web") and first.ok
    assert loader.current.require("web").version == "1.0.0"

    write_module(root / "web", manifest("web", version="1.1.0", kind="helm"))
    broken = loader.reload()
    assert broken.kept == ("web",)
    assert broken.changed == () and broken.removed == ()
    assert [e.key for e in broken.errors] == ["kind"]
    assert loader.current.require("web").version == "1.0.0"
    assert "old version kept for web" in broken.summary()

    write_module(root / "web", manifest("web", version="1.1.0"))
    fixed = loader.reload()
    assert fixed.ok and fixed.changed == ("web",) and fixed.kept == ()
    assert loader.current.require("web").version == "1.1.0"

    (root / "db" / "module.yaml").unlink()
    gone = loader.reload()
    assert gone.removed == ("db",)
    assert "db" not in loader.current
    assert seen == [first, broken, fixed, gone]


def test_reload_notices_content_change_without_manifest_change(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])
    loader.reload()
    assert loader.reload().summary() == "modules: no change"
    (root / "web" / "site.yml").write_text("- hosts: other\n")
    assert loader.reload().changed == ("web",)


def test_reload_keeps_dependency_of_a_kept_module(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    make_graph(root, {"app": ["net"], "net": []})
    loader = ModuleLoader([root])
    loader.reload()
    write_module(root / "net", manifest("net", version="x"))
    result = loader.reload()
    assert result.kept == ("net",)
    assert [m.name for m in loader.current.closure("app")] == ["net", "app"]


def test_callback_failure_does_not_break_reload(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])

    def boom(_result: ReloadResult) -> None:
        raise RuntimeError("callback bug")

    got: list[ReloadResult] = []
    loader.on_change.extend([boom, got.append])
    assert loader.reload().added == ("web",)
    assert len(got) == 1


async def wait_for(
    predicate: Callable[[], bool], changed: asyncio.Event, timeout: float = 15.0
) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await changed.wait()
            changed.clear()


async def test_watch_notices_a_new_module_and_an_edit(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])
    loader.reload()
    changed = asyncio.Event()
    loader.on_change.append(lambda _r: changed.set())
    task = asyncio.create_task(loader.watch(interval=0.01))
    try:
        write_module(root / "db", manifest("db"))
        await wait_for(lambda: "db" in loader.current, changed)
        manifest_file = root / "web" / "module.yaml"
        manifest_file.write_text(yaml.safe_dump(manifest("web", version="2.0.0")))
        st = manifest_file.stat()
        os.utime(manifest_file, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        await wait_for(lambda: loader.current.require("web").version == "2.0.0", changed)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_does_not_reread_what_was_just_loaded(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])
    loader.reload()
    reloads: list[object] = []
    loader.on_change.append(reloads.append)
    polled = asyncio.Event()
    real_scan = loader._scan_roots

    def scan() -> object:
        polled.set()
        return real_scan()

    loader._scan_roots = scan  # type: ignore[method-assign]
    task = asyncio.create_task(loader.watch(interval=0.01))
    try:
        for _ in range(3):  # several polls, nothing changed
            polled.clear()
            await asyncio.wait_for(polled.wait(), 5)
        assert reloads == []
        # an edit of the entry alone is still noticed
        entry = root / "web" / "site.yml"
        st = entry.stat()
        os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        async with asyncio.timeout(5):
            while not reloads:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_areload_matches_reload(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])
    result = await loader.areload()
    assert result.added == ("web",)


# --- module config ------------------------------------------------------------------------------


def project(tmp_path: Path, env: str = "dev") -> Any:
    (tmp_path / "config" / "modules" / env).mkdir(parents=True)
    return build_config({}, project_dir=tmp_path, env=env)


def test_module_config_merges_env_over_base_with_secret_reference(tmp_path: Path) -> None:
    config = project(tmp_path, "prod")
    base = tmp_path / "config" / "modules"
    (base / "web.yaml").write_text("db: {host: db.local, port: 5432}\nworkers: 2\n")
    (base / "prod" / "web.yaml").write_text(
        "db: {host: db.prod, password: '${env:WEB_DB_PASSWORD}'}\nurl: 'https://u:${env:WEB_DB_PASSWORD}@x'\n"
    )
    got = load_module_config(config, "web", environ={"WEB_DB_PASSWORD": "hunter2-prod"})
    assert got["db"]["host"] == "db.prod"
    assert got["db"]["port"] == 5432
    assert got["workers"] == 2
    secret = got["db"]["password"]
    assert isinstance(secret, Secret) and secret.reveal() == "hunter2-prod"
    assert isinstance(got["url"], Secret)
    assert REDACTOR.redact("pw=hunter2-prod") == "pw=***"


def test_module_config_missing_files_are_empty(tmp_path: Path) -> None:
    assert load_module_config(project(tmp_path), "web", environ={}) == {}


def test_module_config_error_names_file_and_key(tmp_path: Path) -> None:
    config = project(tmp_path)
    env_file = tmp_path / "config" / "modules" / "dev" / "web.yaml"
    env_file.write_text("db:\n  password: ${env:NOT_SET_ANYWHERE}\n")
    with pytest.raises(ConfigError) as info:
        load_module_config(config, "web", environ={})
    assert f"{env_file}: db.password" in str(info.value)
    assert "NOT_SET_ANYWHERE is not set" in str(info.value)


def test_module_config_top_level_must_be_mapping(tmp_path: Path) -> None:
    config = project(tmp_path)
    file = tmp_path / "config" / "modules" / "web.yaml"
    file.write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as info:
        load_module_config(config, "web", environ={})
    assert info.value.file == str(file)


def test_module_config_refuses_path_like_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a module name"):
        load_module_config(project(tmp_path), "../global/config", environ={})


def test_module_config_overlay_is_the_named_environments_not_the_bots(tmp_path: Path) -> None:
    config = project(tmp_path, "dev")  # the bot runs with --env dev
    base = tmp_path / "config" / "modules"
    (base / "prod").mkdir()
    (base / "web.yaml").write_text("region: base\nworkers: 2\n")
    (base / "dev" / "web.yaml").write_text("region: dev\n")
    (base / "prod" / "web.yaml").write_text(
        "region: prod\ntoken: '${env:WEB_PROD_TOKEN}'\nallow_bot_host: true\n"
    )
    environ = {"WEB_PROD_TOKEN": "prod-only-token-4e1"}
    got = load_module_config(config, "web", env="prod", environ=environ)
    assert got["region"] == "prod" and got["workers"] == 2
    assert got["allow_bot_host"] is True
    assert got["token"].reveal() == "prod-only-token-4e1"
    assert REDACTOR.redact("t=prod-only-token-4e1") == "t=***"
    dev = load_module_config(config, "web", env="dev", environ=environ)
    assert dev == {"region": "dev", "workers": 2}
    assert load_module_config(config, "web", environ=environ) == dev  # None: config.env


@pytest.mark.parametrize("env", ["..", "../global", "prod/x", "Prod", "", "a" * 40])
def test_module_config_refuses_path_like_environments(tmp_path: Path, env: str) -> None:
    with pytest.raises(ConfigError, match="not an environment name"):
        load_module_config(project(tmp_path), "web", env=env, environ={})


def test_module_config_problems_cover_every_environments_overlay(tmp_path: Path) -> None:
    config = project(tmp_path, "dev")
    base = tmp_path / "config" / "modules"
    mod = load_module(write_module(tmp_path / "modules" / "web", manifest("web")))
    for env in ("prod", "retired", "Not-An-Env"):
        (base / env).mkdir()
    (base / "dev" / "web.yaml").write_text("region: dev\n")
    (base / "prod" / "web.yaml").write_text("token: ${env:MC_UNSET_PROD_TOKEN_9}\n")
    (base / "retired" / "web.yaml").write_text("allow_bot_host: yes-please\n")
    (base / "Not-An-Env" / "web.yaml").write_text("- not read\n")
    assert module_config_envs(config, mod) == ["dev", "prod", "retired", "staging"]
    resolvers = module_resolvers(config, environ={})
    problems = module_config_problems(config, mod, resolvers)
    assert len(problems) == 2, problems
    assert "prod/web.yaml: token" in problems[0] and "MC_UNSET_PROD_TOKEN_9" in problems[0]
    assert "retired/web.yaml: allow_bot_host" in problems[1]
    (base / "web.yaml").write_text("- a\n")  # a broken base file: said once, not per env
    problems = module_config_problems(config, mod, resolvers)
    assert sum("config/modules/web.yaml" in p for p in problems) == 1, problems


# --- add and remove ----------------------------------------------------------------------------


def test_add_copies_and_validates(tmp_path: Path) -> None:
    src = tmp_path / "incoming"
    write_module(src, manifest("tool", kind="script", entry="run.sh"), entry="run.sh")
    (src / "run.sh").chmod(0o755)
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref\n")
    root = tmp_path / "modules"
    added = add_module(src, root)
    assert added.dir == root / "tool"
    assert added.entry == (root / "tool" / "run.sh").resolve()
    assert os.access(added.entry, os.X_OK)
    assert not (root / "tool" / ".git").exists()
    assert (src / "module.yaml").is_file()  # the source stays
    assert load_modules([root]).names == ("tool",)

    with pytest.raises(ModuleError, match="a module named 'tool' already exists"):
        add_module(src, root)


def test_add_refuses_clash_in_another_root_symlinks_and_bad_manifests(tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_module(other / "deep" / "web", manifest("web"))
    root = tmp_path / "modules"
    src = tmp_path / "src"
    write_module(src, manifest("web"))
    with pytest.raises(ModuleError, match=r"already exists \(other/deep/web/module.yaml\)"):
        add_module(src, root, roots=[other])

    (src / "module.yaml").write_text(yaml.safe_dump(manifest("fresh")))
    (src / "link").symlink_to("/etc/hostname")
    with pytest.raises(ModuleError, match="symbolic link"):
        add_module(src, root)
    (src / "link").unlink()

    (src / "module.yaml").write_text(yaml.safe_dump(manifest("fresh", kind="helm")))
    with pytest.raises(ModuleError, match="kind"):
        add_module(src, root)
    with pytest.raises(ModuleError, match=r"no module\.yaml"):
        add_module(tmp_path / "other", root)
    assert not root.exists() or [p.name for p in root.iterdir()] == []


def test_add_leaves_nothing_behind_when_the_copy_fails_validation(tmp_path: Path) -> None:
    (tmp_path / "shared.yml").write_text("[]\n")
    src = tmp_path / "src"
    write_module(src, manifest("web", entry="../shared.yml"), entry=None)
    root = tmp_path / "modules"
    root.mkdir()
    with pytest.raises(ModuleError, match="entry: not found"):
        add_module(src, root)  # ../shared.yml does not exist next to the copy
    assert list(root.iterdir()) == []


def test_remove_moves_to_removed_and_refuses_required_modules(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    make_graph(root, {"app": ["net"], "net": [], "old": []})
    with pytest.raises(ModuleError, match="net is required by app; remove those first"):
        remove_module("net", [root])
    assert (root / "net" / "module.yaml").is_file()

    moved = remove_module("old", [root], now=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))
    assert moved == root / ".removed" / "old-20240506T070809Z"
    assert (moved / "module.yaml").is_file() and (moved / "site.yml").is_file()
    assert not (root / "old").exists()
    assert "old" not in load_modules([root])

    write_module(root / "old", manifest("old"))
    again = remove_module("old", [root], now=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))
    assert again.name == "old-20240506T070809Z-2"

    with pytest.raises(ModuleError, match="unknown module 'ghost'"):
        remove_module("ghost", [root])


def test_manifest_model_is_frozen_and_strict() -> None:
    m = Manifest.model_validate(manifest())
    with pytest.raises(Exception, match="frozen"):
        m.name = "other"  # type: ignore[misc]
    assert m.section() == {}


@pytest.mark.parametrize("value", ["'yes'", "1", "'${env:ALLOW}'"])
def test_allow_bot_host_is_a_literal_boolean(tmp_path: Path, value: str) -> None:
    config = project(tmp_path)
    file = tmp_path / "config" / "modules" / "web.yaml"
    file.write_text(f"allow_bot_host: {value}\nworkers: 2\n")
    with pytest.raises(ConfigError) as info:
        load_module_config(config, "web", environ={"ALLOW": "true"})
    assert f"{file}: allow_bot_host: should be true or false" in str(info.value)


def test_allow_bot_host_is_a_setting_not_a_variable(tmp_path: Path) -> None:
    from masterchief.deploy.catalog import allows_bot_host, tool_variables

    config = project(tmp_path)
    (tmp_path / "config" / "modules" / "web.yaml").write_text("allow_bot_host: true\nworkers: 2\n")
    got = load_module_config(config, "web", environ={})
    assert allows_bot_host(got) and tool_variables(got) == {"workers": 2}
    assert not allows_bot_host({"workers": 2}) and not allows_bot_host({"allow_bot_host": "true"})
