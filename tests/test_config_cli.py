"""``masterchief config show`` (the effective configuration, secrets as ***),
offline commands without the bot's secrets, and ``--env`` naming an
environment that does not exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from masterchief.cli import main


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    cfg = tmp_path / "proj" / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "environments").mkdir()
    (cfg / "global" / "config.yaml").write_text(
        textwrap.dedent(
            """\
            irc:
              host: 127.0.0.1
              channels: ["#ops"]
              sasl: {username: bot, password: "${env:MC_TEST_SASL}"}
            webhooks:
              github: {secret: "${file:secrets/gh}", channels: ["#dev"]}
            deploy: {channels: ["#deploys"]}
            """
        )
    )
    (cfg / "environments" / "prod.yaml").write_text("irc: {nick: chief-prod}\n")
    (tmp_path / "proj" / "secrets").mkdir()
    (tmp_path / "proj" / "secrets" / "gh").write_text("github-file-secret-value\n")
    return cfg


def show(config_dir: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(
        main, ["config", "show", "--config-dir", str(config_dir), *extra], env=env or {}
    )
    return result.exit_code, result.stdout, result.stderr


def test_config_show_prints_the_merged_config_with_secrets_masked(config_dir: Path) -> None:
    code, out, _ = show(config_dir, "--env", "prod", env={"MC_TEST_SASL": "sasl-env-secret-value"})
    assert code == 0
    assert "sasl-env-secret-value" not in out and "github-file-secret-value" not in out
    data = yaml.safe_load(out)
    assert data["irc"]["nick"] == "chief-prod"  # the environment file won
    assert data["irc"]["sasl"] == {"username": "bot", "password": "***"}
    assert data["webhooks"]["github"]["secret"] == "***"
    assert data["deploy"]["channels"] == ["#deploys"]
    assert data["env"] == "prod"
    assert out.startswith("# effective configuration:")


def test_config_show_prints_an_unset_reference_as_written(config_dir: Path) -> None:
    code, out, err = show(config_dir)  # MC_TEST_SASL unset
    assert code == 0, err
    data = yaml.safe_load(out)
    assert data["irc"]["sasl"] == {"username": "bot", "password": "${env:MC_TEST_SASL} (not set)"}
    assert data["webhooks"]["github"]["secret"] == "***"  # set: masked
    assert "github-file-secret-value" not in out
    assert "unresolved" not in data


def test_config_show_reports_an_invalid_value_with_file_and_key(config_dir: Path) -> None:
    (config_dir / "global" / "config.yaml").write_text("irc: {port: 99999}\n")
    code, out, err = show(config_dir)
    assert code == 2
    assert out == ""
    assert "config.yaml: irc.port: Input should be less than or equal to 65535" in err


# --- offline commands without the bot's secrets (issue 8, item 11) ---------------------------

HOSTILE = textwrap.dedent(
    """    irc:
      host: 127.0.0.1
      port: "${env:MC_TEST_IRC_PORT}"
      channels: ["#ops"]
      sasl: {username: bot, password: "${env:MC_TEST_SASL}"}
    webhooks:
      github: {secret: "${env:MC_TEST_GH}", channels: ["#dev"]}
      generic: [{name: release, secret: "${file:secrets/missing}"}]
    web: {admin: {token: "${env:MC_TEST_ADMIN}"}}
    store: {path: "${env:MC_TEST_VAR}/mc.db"}
    """
)


@pytest.fixture
def offline(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project whose IRC, webhook and admin secrets are references nobody
    set here; only the store's folder is in the environment."""
    cfg = tmp_path / "proj" / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "global" / "config.yaml").write_text(HOSTILE)
    return cfg, {"MC_TEST_VAR": str(tmp_path / "var")}


def run_cli(cfg: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``masterchief`` command, in a real process, with only ``env``."""
    exe = Path(sys.executable).with_name("masterchief")
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(cfg.parent), **env}
    return subprocess.run(
        [str(exe), *args, "--config-dir", str(cfg)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_store_commands_work_without_the_bots_secrets(
    offline: tuple[Path, dict[str, str]],
) -> None:
    cfg, env = offline
    added = run_cli(cfg, env, "user", "add", "alice", "--account", "alice", "--flags", "n")
    assert added.returncode == 0, added.stderr
    listed = run_cli(cfg, env, "user", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^alice\s+\+n\s+alice\s", listed.stdout, re.M), listed.stdout
    for args, expected in (
        (("jobs", "list"), "no jobs"),
        (("events", "list"), "no events"),
        (("user", "chattr", "alice", "+o", "--channel", "#ops"), "alice on #ops: +o"),
    ):
        done = run_cli(cfg, env, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert expected in done.stdout, (args, done.stdout)
    assert (Path(env["MC_TEST_VAR"]) / "mc.db").is_file()  # the store the bot would use

    shown = run_cli(cfg, env, "config", "show")
    assert shown.returncode == 0, shown.stderr
    data = yaml.safe_load(shown.stdout)
    assert data["irc"]["sasl"]["password"] == "${env:MC_TEST_SASL} (not set)"
    assert data["irc"]["port"] == "${env:MC_TEST_IRC_PORT} (not set)"
    assert data["webhooks"]["github"]["secret"] == "${env:MC_TEST_GH} (not set)"
    assert data["web"]["admin"]["token"] == "${env:MC_TEST_ADMIN} (not set)"
    secret = data["webhooks"]["generic"][0]["secret"]
    assert secret.startswith("${file:secrets/missing} (cannot read secret file ")
    assert "unresolved-" not in shown.stdout  # the stand-ins never show

    # the bot itself still refuses to start without them, saying which one
    started = run_cli(cfg, env, "run")
    assert started.returncode == 2
    assert started.stdout == ""
    assert "environment variable MC_TEST_IRC_PORT is not set" in started.stderr
    assert "irc.port" in started.stderr


def test_a_store_command_still_needs_what_it_uses(offline: tuple[Path, dict[str, str]]) -> None:
    cfg, _ = offline
    done = run_cli(cfg, {}, "user", "list")  # MC_TEST_VAR unset: no store path
    assert done.returncode == 2
    assert "store.path: environment variable MC_TEST_VAR is not set" in done.stderr


def test_config_show_masks_a_set_reference_and_leaves_the_others(
    offline: tuple[Path, dict[str, str]],
) -> None:
    cfg, env = offline
    env = {**env, "MC_TEST_GH": "gh-secret-set-here", "MC_TEST_IRC_PORT": "6697"}
    shown = run_cli(cfg, env, "config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "gh-secret-set-here" not in shown.stdout
    data = yaml.safe_load(shown.stdout)
    assert data["webhooks"]["github"]["secret"] == "***"
    assert data["irc"]["port"] == 6697
    assert data["irc"]["sasl"]["password"] == "${env:MC_TEST_SASL} (not set)"


# --- --env naming an environment that has no file (issue 8, item 18) -------------------------


def test_env_naming_a_missing_environment_lists_the_known_ones(config_dir: Path) -> None:
    (config_dir / "environments" / "staging.yaml").write_text("{}\n")
    env = {"MC_TEST_SASL": "x" * 8}
    for args, extra_env in (
        (["--env", "prodd"], {}),
        ([], {"MASTERCHIEF_ENV": "prodd"}),
    ):
        for command in (["config", "show"], ["user", "list"], ["run"]):
            result = CliRunner().invoke(
                main, [*command, "--config-dir", str(config_dir), *args], env={**env, **extra_env}
            )
            assert result.exit_code == 2, (command, args, result.output)
            assert result.stdout == ""
            assert "unknown environment 'prodd'" in result.stderr
            assert "known environments: prod, staging" in result.stderr
            assert str(config_dir / "environments" / "prodd.yaml") in result.stderr
    # a named environment that exists works; the default (dev) may have no file
    code, out, err = show(config_dir, "--env", "staging", env=env)
    assert code == 0 and yaml.safe_load(out)["env"] == "staging", err
    code, out, err = show(config_dir, env=env)
    assert code == 0 and yaml.safe_load(out)["env"] == "dev", err
