"""``${vault:name}`` references through an injected Key Vault client, in the
main configuration and in module config."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

from masterchief.config.engine import build_config
from masterchief.config.schema import Config
from masterchief.config.secrets import REDACTOR, Secret
from masterchief.deploy.module_config import load_module_config, module_resolvers
from masterchief.errors import ConfigError
from masterchief.runtime.compose import App


@dataclass
class _Secret:
    value: str | None


class ResourceNotFoundError(Exception):
    """Named like azure.core.exceptions.ResourceNotFoundError."""


class FakeVault:
    def __init__(self, secrets: dict[str, str | None]) -> None:
        self.secrets = secrets
        self.calls: list[str] = []

    def get_secret(self, name: str) -> _Secret:
        self.calls.append(name)
        if name == "boom":
            raise RuntimeError("https://kv.vault.azure.net/secrets/boom?token=LEAKED-TOKEN")
        if name not in self.secrets:
            raise ResourceNotFoundError(f"secret {name} not found in https://kv.vault.azure.net")
        return _Secret(self.secrets[name])


def _config(data: dict[str, object], client: FakeVault | None, tmp_path: Path) -> object:
    return build_config(data, project_dir=tmp_path, source="global.yaml", vault_client=client)


def test_vault_reference_resolves_to_a_registered_secret(tmp_path: Path) -> None:
    vault = FakeVault({"sasl-pass": "vault-sasl-value-123", "hook": "vault-hook-value-456"})
    cfg = build_config(
        {
            "irc": {"sasl": {"username": "bot", "password": "${vault:sasl-pass}"}},
            "webhooks": {"github": {"secret": "${vault:hook}"}},
            "vault": {"url": "https://kv.vault.azure.net"},
        },
        project_dir=tmp_path,
        vault_client=vault,
    )
    assert cfg.irc.sasl is not None
    assert isinstance(cfg.irc.sasl.password, Secret)
    assert cfg.irc.sasl.password.reveal() == "vault-sasl-value-123"
    assert REDACTOR.redact("pw vault-sasl-value-123 hook vault-hook-value-456") == "pw *** hook ***"
    assert "vault-sasl-value-123" not in str(cfg.redacted_dump())


def test_each_name_is_fetched_once_per_load(tmp_path: Path) -> None:
    vault = FakeVault({"shared": "shared-value-789"})
    build_config(
        {
            "webhooks": {
                "github": {"secret": "${vault:shared}"},
                "gitlab": {"token": "${vault:shared}"},
            },
        },
        project_dir=tmp_path,
        vault_client=vault,
    )
    assert vault.calls == ["shared"]


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("${vault:missing}", "vault secret missing not found"),
        ("${vault:empty}", "vault secret empty is empty"),
        ("${vault:bad_name!}", "invalid vault secret name"),
        ("${vault:boom}", "vault: cannot read boom (RuntimeError)"),
    ],
)
def test_vault_errors_name_file_key_and_secret_but_no_value(
    tmp_path: Path, ref: str, fragment: str
) -> None:
    vault = FakeVault({"empty": None})
    with pytest.raises(ConfigError) as info:
        _config({"webhooks": {"github": {"secret": ref}}}, vault, tmp_path)
    text = str(info.value)
    assert fragment in text
    assert "global.yaml: webhooks.github.secret" in text
    assert "LEAKED-TOKEN" not in text and "https://" not in text


def test_vault_without_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vault references need vault\.url"):
        _config({"webhooks": {"github": {"secret": "${vault:x}"}}}, None, tmp_path)


def _azure_installed() -> bool:
    try:
        return importlib.util.find_spec("azure.keyvault.secrets") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(_azure_installed(), reason="the azure extra is installed")
def test_vault_url_without_the_azure_extra_says_what_to_install(tmp_path: Path) -> None:
    data = {"vault": {"url": "${env:KV_URL}"}, "webhooks": {"github": {"secret": "${vault:x}"}}}
    with pytest.raises(ConfigError, match=r"pip install 'masterchief\[azure\]'"):
        build_config(data, project_dir=tmp_path, environ={"KV_URL": "https://kv.vault.azure.net"})


def test_no_vault_reference_never_creates_a_client(tmp_path: Path) -> None:
    vault = FakeVault({})
    _config({"webhooks": {"github": {"secret": "plain-secret-value"}}}, vault, tmp_path)
    assert vault.calls == []


# --- ${vault:...} in module config (config/modules/<name>.yaml) ----------------------


def _module_project(tmp_path: Path, text: str, **data: object) -> Config:
    (tmp_path / "config" / "modules" / "dev").mkdir(parents=True)
    (tmp_path / "config" / "modules" / "web.yaml").write_text(text)
    return build_config(data, project_dir=tmp_path)


def test_module_config_vault_reference_uses_the_injected_client(tmp_path: Path) -> None:
    config = _module_project(
        tmp_path,
        "db:\n  password: ${vault:db-pass}\n  dsn: 'postgres://app:${vault:db-pass}@db/app'\n",
        vault={"url": "https://kv.vault.azure.net"},
    )
    vault = FakeVault({"db-pass": "module-vault-value-314"})
    got = load_module_config(
        config, "web", environ={}, resolvers=module_resolvers(config, vault_client=vault)
    )
    password = got["db"]["password"]
    assert isinstance(password, Secret) and password.reveal() == "module-vault-value-314"
    assert isinstance(got["db"]["dsn"], Secret)
    assert vault.calls == ["db-pass"]  # fetched once for the whole file
    assert REDACTOR.redact("dsn module-vault-value-314") == "dsn ***"


def test_module_config_vault_errors_name_the_module_file_and_key(tmp_path: Path) -> None:
    config = _module_project(tmp_path, "token: ${vault:boom}\n")
    resolvers = module_resolvers(config, vault_client=FakeVault({}))
    with pytest.raises(ConfigError) as info:
        load_module_config(config, "web", environ={}, resolvers=resolvers)
    text = str(info.value)
    assert f"{tmp_path / 'config' / 'modules' / 'web.yaml'}: token" in text
    assert "vault: cannot read boom (RuntimeError)" in text
    assert "LEAKED-TOKEN" not in text


def test_module_config_vault_without_url_or_client_says_so(tmp_path: Path) -> None:
    config = _module_project(tmp_path, "token: ${vault:x}\n")
    with pytest.raises(ConfigError, match=r"web\.yaml: token: vault references need vault\.url"):
        load_module_config(config, "web", environ={})


def test_module_config_vault_follows_the_main_vault_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No injected client: the client is made for the main config's vault.url
    (what ``masterchief module show`` and the bot do in production)."""
    config = _module_project(
        tmp_path, "token: ${vault:api-token}\n", vault={"url": "https://kv.vault.azure.net"}
    )
    made: list[str] = []
    vault = FakeVault({"api-token": "from-main-url-2718"})

    def fake_azure_client(url: str) -> FakeVault:
        made.append(url)
        return vault

    monkeypatch.setattr("masterchief.config.engine.azure_client", fake_azure_client)
    got = load_module_config(config, "web", environ={})
    assert got["token"].reveal() == "from-main-url-2718"
    assert made == ["https://kv.vault.azure.net"]


async def test_the_app_resolves_module_config_with_its_vault_client(tmp_path: Path) -> None:
    config = _module_project(
        tmp_path,
        "token: ${vault:deploy-token}\n",
        store={"path": str(tmp_path / "mc.db")},
        web={"enabled": False},
    )
    vault = FakeVault({"deploy-token": "app-vault-value-161"})
    app = await App.create(config, vault_client=vault)
    try:
        got = app.module_config("web", "dev")
        assert got["token"].reveal() == "app-vault-value-161"
        app.module_config("web", "dev")
        assert vault.calls == ["deploy-token", "deploy-token"]  # read again per job
    finally:
        await app.store.close()


async def test_rehash_checks_module_config_without_fetching_vault_secrets(tmp_path: Path) -> None:
    # A Key Vault call blocks; !rehash runs on the event loop, once per module
    # and environment. It checks the files' shape and the secret names only.
    mod = tmp_path / "modules" / "web"
    mod.mkdir(parents=True)
    (mod / "run.sh").write_text("#!/bin/sh\n")
    (mod / "run.sh").chmod(0o755)
    (mod / "module.yaml").write_text(
        "name: web\nversion: 1.0.0\nkind: script\nentry: run.sh\n"
        "environments: [dev, prod]\nscript: {changes_bot_host: false}\n"
    )
    config = _module_project(
        tmp_path,
        "token: ${vault:deploy-token}\n",
        store={"path": str(tmp_path / "mc.db")},
        web={"enabled": False},
        deploy={"modules": [str(tmp_path / "modules")]},
    )
    (tmp_path / "config" / "modules" / "prod").mkdir()
    (tmp_path / "config" / "modules" / "prod" / "web.yaml").write_text("token: ${vault:bad_name}\n")
    vault = FakeVault({"deploy-token": "app-vault-value-162"})
    app = await App.create(config, vault_client=vault)
    try:
        report = app.rehash()
        assert vault.calls == []
        assert "invalid vault secret name 'bad_name'" in report.module_config_errors["web"]
        assert app.module_config("web", "dev")["token"].reveal() == "app-vault-value-162"
        assert vault.calls == ["deploy-token"]  # a job still reads its secret
    finally:
        await app.store.close()
