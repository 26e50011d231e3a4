"""``masterchief module ...`` through click's CliRunner on a temporary project."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from masterchief.cli import main


def write_module(folder: Path, name: str, **over: Any) -> Path:
    data: dict[str, Any] = {
        "name": name,
        "version": "1.2.0",
        "kind": "ansible",
        "description": f"Deploy {name}",
        "entry": "site.yml",
        "environments": ["dev", "prod"],
        "flags": "o|o",
    }
    data.update(over)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "module.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (folder / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    return folder


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    cfg = root / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "global" / "config.yaml").write_text(
        textwrap.dedent(
            """\
            irc: {host: 127.0.0.1, port: 6667, channels: ["#ops"]}
            store: {path: var/masterchief.db}
            deploy: {modules: [modules]}
            """
        )
    )
    write_module(root / "modules" / "network-baseline", "network-baseline")
    write_module(
        root / "modules" / "apps" / "web-app",
        "web-app",
        requires=["network-baseline"],
        approval={"prod": {"approvers": 1, "flags": "m|m", "ttl_s": 900}},
        parameters={
            "version": {"pattern": r"^[0-9]+\.[0-9]+\.[0-9]+$", "required": True},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 20, "default": 2},
            "api_key": {"secret": True, "default": "abcdef12"},
        },
    )
    mods = cfg / "modules"
    (mods / "prod").mkdir(parents=True)
    (mods / "web-app.yaml").write_text("db: {host: db.local, port: 5432}\n")
    (mods / "prod" / "web-app.yaml").write_text(
        "db: {host: db.prod, password: '${env:WEB_DB_PW}'}\n"
    )
    return root


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("MASTERCHIEF_CONFIG_DIR", "MASTERCHIEF_ENV", "WEB_DB_PW"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def cli(runner: CliRunner, proj: Path, *args: str, **kw: Any) -> Result:
    return runner.invoke(main, [*args, "--config-dir", str(proj / "config")], **kw)


SUBCOMMANDS = [["list"], ["show"], ["validate"], ["add"], ["remove"]]


def test_help_lists_module_commands(runner: CliRunner) -> None:
    top = runner.invoke(main, ["--help"])
    assert "module list | show | validate | add | remove" in top.output
    sub = runner.invoke(main, ["module", "--help"])
    for (command,) in SUBCOMMANDS:
        assert f"  {command} " in sub.output


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_module_subcommand_takes_config_dir_and_env(
    runner: CliRunner, command: list[str]
) -> None:
    result = runner.invoke(main, ["module", *command, "--help"])
    assert result.exit_code == 0
    assert "--config-dir" in result.output
    assert "--env" in result.output


def test_list(runner: CliRunner, proj: Path) -> None:
    result = cli(runner, proj, "module", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "VERSION", "KIND", "ENVIRONMENTS", "FLAGS", "APPROVAL", "REQUIRES",
    ]  # fmt: skip
    assert lines[1].split() == ["network-baseline", "1.2.0", "ansible", "dev,prod", "o|o", "-", "-"]
    assert lines[2].split() == [
        "web-app", "1.2.0", "ansible", "dev,prod", "o|o", "prod", "network-baseline",
    ]  # fmt: skip


def test_list_reports_broken_modules_and_exits_1(runner: CliRunner, proj: Path) -> None:
    write_module(proj / "modules" / "broken", "broken", kind="helm")
    result = cli(runner, proj, "module", "list")
    assert result.exit_code == 1
    assert "web-app" in result.stdout
    assert result.stderr.startswith("error: modules/broken/module.yaml: kind: ")


def test_list_empty(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "empty" / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "global" / "config.yaml").write_text("store: {path: var/x.db}\n")
    result = runner.invoke(main, ["module", "list", "--config-dir", str(cfg)])
    assert result.exit_code == 0
    assert "no modules" in result.output


def test_add_without_a_modules_folder_is_a_one_line_error(
    runner: CliRunner, tmp_path: Path
) -> None:
    cfg = tmp_path / "nomods" / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "global" / "config.yaml").write_text("store: {path: var/x.db}\ndeploy: {modules: []}\n")
    result = runner.invoke(main, ["module", "add", str(tmp_path), "--config-dir", str(cfg)])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "deploy.modules is empty" in result.output


def test_show_with_config_for_env_and_secrets_masked(runner: CliRunner, proj: Path) -> None:
    result = cli(
        runner,
        proj,
        "module",
        "show",
        "web-app",
        "--env",
        "prod",
        env={"WEB_DB_PW": "pw-sekrit-99"},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "pw-sekrit-99" not in out
    assert "abcdef12" not in out
    fields = dict(line.split(":", 1) for line in out.splitlines() if line and line[0] != " ")
    assert fields["name"].strip() == "web-app"
    assert fields["approval"].strip() == "prod: 1 approver(s) with m|m, valid 900s"
    assert fields["deploy order"].strip() == "network-baseline -> web-app"
    assert fields["entry"].strip() == str(
        (proj / "modules" / "apps" / "web-app" / "site.yml").resolve()
    )
    assert len(fields["digest"].strip()) == 64
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert rows["version"][:3] == ["version", "string", "yes"]
    assert rows["replicas"][:4] == ["replicas", "integer", "no", "2"]
    assert rows["api_key"][3] == "***"
    assert "  db:" in out and "host: db.prod" in out and "password: '***'" in out
    assert "port: 5432" in out


def test_show_unknown_and_config_error(runner: CliRunner, proj: Path) -> None:
    unknown = cli(runner, proj, "module", "show", "nope")
    assert unknown.exit_code == 1
    assert "unknown module 'nope'" in unknown.stderr
    missing_env = cli(runner, proj, "module", "show", "web-app", "--env", "prod")
    assert missing_env.exit_code == 2
    assert "config/modules/prod/web-app.yaml: db.password" in missing_env.stderr
    assert "WEB_DB_PW is not set" in missing_env.stderr


def test_validate(runner: CliRunner, proj: Path) -> None:
    ok = cli(runner, proj, "module", "validate")
    assert ok.exit_code == 0, ok.output
    assert "ok  network-baseline 1.2.0 (ansible)" in ok.stdout
    assert "2 module(s) valid" in ok.stdout

    bad_config = cli(runner, proj, "module", "validate", "--env", "prod")
    assert bad_config.exit_code == 1
    assert "db.password" in bad_config.stderr

    write_module(proj / "modules" / "loop-a", "loop-a", requires=["loop-b"])
    write_module(proj / "modules" / "loop-b", "loop-b", requires=["loop-a"])
    cycle = cli(runner, proj, "module", "validate")
    assert cycle.exit_code == 1
    assert "dependency cycle: loop-a -> loop-b -> loop-a" in cycle.stderr


class _FakeVault:
    """Stands for azure's SecretClient (what ``azure_client(url)`` returns)."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.calls: list[str] = []

    def get_secret(self, name: str) -> Any:
        self.calls.append(name)
        if name not in self.secrets:
            raise LookupError(name)
        return type("KeyVaultSecret", (), {"value": self.secrets[name]})()


def test_show_and_validate_resolve_vault_references_in_module_config(
    runner: CliRunner, proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``${vault:...}`` in config/modules uses the main config's vault.url."""
    global_file = proj / "config" / "global" / "config.yaml"
    global_file.write_text(global_file.read_text() + "vault: {url: 'https://kv.vault.azure.net'}\n")
    (proj / "config" / "modules" / "dev").mkdir()
    (proj / "config" / "modules" / "dev" / "web-app.yaml").write_text(
        "db: {password: '${vault:web-db-pw}'}\n"
    )
    (proj / "config" / "modules" / "network-baseline.yaml").write_text("key: ${vault:net-key}\n")
    made: list[str] = []
    vault = _FakeVault({"web-db-pw": "vault-cli-value-55", "net-key": "vault-cli-value-66"})

    def fake_client(url: str) -> _FakeVault:
        made.append(url)
        return vault

    monkeypatch.setattr("masterchief.config.engine.azure_client", fake_client)
    shown = cli(runner, proj, "module", "show", "web-app")
    assert shown.exit_code == 0, shown.output
    assert "password: '***'" in shown.stdout and "vault-cli-value-55" not in shown.output
    assert vault.calls == ["web-db-pw"]
    made.clear()
    valid = cli(runner, proj, "module", "validate")
    assert valid.exit_code == 0, valid.output
    assert "2 module(s) valid" in valid.stdout
    assert made == ["https://kv.vault.azure.net"]  # one client for every module
    del vault.secrets["net-key"]
    broken = cli(runner, proj, "module", "validate")
    assert broken.exit_code == 1
    assert "config/modules/network-baseline.yaml: key: vault: cannot read net-key" in broken.stderr


def test_add_then_remove(runner: CliRunner, proj: Path, tmp_path: Path) -> None:
    src = write_module(tmp_path / "incoming" / "cache", "cache")
    added = cli(runner, proj, "module", "add", str(src))
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith("added cache 1.2.0 (ansible) in ")
    assert (proj / "modules" / "cache" / "module.yaml").is_file()

    again = cli(runner, proj, "module", "add", str(src))
    assert again.exit_code == 1
    assert "a module named 'cache' already exists" in again.stderr

    refused = cli(runner, proj, "module", "remove", "network-baseline")
    assert refused.exit_code == 1
    assert "required by web-app" in refused.stderr

    removed = cli(runner, proj, "module", "remove", "cache")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.startswith("removed cache: moved to ")
    assert not (proj / "modules" / "cache").exists()
    trash = list((proj / "modules" / ".removed").iterdir())
    assert [p.name.startswith("cache-") for p in trash] == [True]
    listed = cli(runner, proj, "module", "list")
    assert "cache" not in listed.stdout


def test_add_refuses_a_folder_without_manifest(
    runner: CliRunner, proj: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    result = cli(runner, proj, "module", "add", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert "no module.yaml" in result.stderr
