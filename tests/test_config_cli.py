"""``masterchief config show``: the effective configuration, secrets as ***."""

from __future__ import annotations

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


def test_config_show_reports_an_error_with_file_and_key(config_dir: Path) -> None:
    code, out, err = show(config_dir)  # MC_TEST_SASL unset
    assert code == 2
    assert out == ""
    assert "config.yaml: irc.sasl.password: environment variable MC_TEST_SASL is not set" in err
