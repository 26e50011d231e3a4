"""Deploy modules: per-module config, its overlays, references and settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from masterchief.config.engine import build_config
from masterchief.config.secrets import REDACTOR, Secret
from masterchief.deploy.manifest import load_module
from masterchief.deploy.module_config import (
    load_module_config,
    module_config_envs,
    module_config_problems,
    module_resolvers,
)
from masterchief.errors import ConfigError
from tests.deploy.test_manifest import manifest, write_module

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


@pytest.mark.parametrize("value", ["'yes'", "1", "'${env:ALLOW}'"])
def test_allow_bot_host_is_a_literal_boolean(tmp_path: Path, value: str) -> None:
    config = project(tmp_path)
    file = tmp_path / "config" / "modules" / "web.yaml"
    file.write_text(f"allow_bot_host: {value}\nworkers: 2\n")
    with pytest.raises(ConfigError) as info:
        load_module_config(config, "web", environ={"ALLOW": "true"})
    assert f"{file}: allow_bot_host: should be true or false" in str(info.value)


def test_allow_bot_host_is_a_setting_not_a_variable(tmp_path: Path) -> None:
    from masterchief.deploy.module_config import allows_bot_host, tool_variables

    config = project(tmp_path)
    (tmp_path / "config" / "modules" / "web.yaml").write_text("allow_bot_host: true\nworkers: 2\n")
    got = load_module_config(config, "web", environ={})
    assert allows_bot_host(got) and tool_variables(got) == {"workers": 2}
    assert not allows_bot_host({"workers": 2}) and not allows_bot_host({"allow_bot_host": "true"})
