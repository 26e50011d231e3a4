"""A rehash re-reads the configuration; an invalid one is reported and the
running one kept."""

from __future__ import annotations

import textwrap
from pathlib import Path

from masterchief.app import App
from masterchief.core.config import load_config


def _write(cfg: Path, text: str) -> None:
    (cfg / "global" / "config.yaml").write_text(textwrap.dedent(text))


async def test_invalid_config_on_rehash_keeps_the_running_one(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    (tmp_path / "scripts").mkdir()
    _write(
        cfg,
        """\
        irc: {host: 127.0.0.1, port: 6667, channels: ["#ops"]}
        deploy: {channels: ["#deploys"], progress_interval_s: 5}
        """,
    )
    app = await App.create(load_config(cfg))
    try:
        _write(
            cfg,
            """\
            irc: {host: 127.0.0.1, port: 6667, channels: ["#ops"]}
            deploy: {channels: ["#deploys"], progress_intervall_s: 2}
            """,
        )
        report = app.rehash()
        assert report.config_error is not None
        assert "config.yaml" in report.config_error
        assert "deploy.progress_intervall_s" in report.config_error
        assert app.config.deploy.progress_interval_s == 5  # the running config stays

        _write(
            cfg,
            """\
            irc: {host: 127.0.0.1, port: 6668, channels: ["#ops"]}
            deploy: {channels: ["#deploys", "#ops"], progress_interval_s: 2}
            """,
        )
        report = app.rehash()
        assert report.config_error is None
        assert app.config.deploy.progress_interval_s == 2
        assert app.config.deploy.channels == ("#deploys", "#ops")
        assert report.restart_needed == ("irc",)  # the port: only a restart moves it
    finally:
        await app.store.close()


async def test_the_wanted_event_answer_follows_the_bindings(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    _write(cfg, 'irc: {host: 127.0.0.1, channels: ["#ops"]}\n')
    app = await App.create(load_config(cfg))
    try:
        assert app._wants_event("deploy.progress") is False
        app.table.bind("event", "-|-", "deploy.*", lambda ev: None, owner="script:x")
        assert app._wants_event("deploy.progress") is True
        app.table.unbind_owner("script:x")
        assert app._wants_event("deploy.progress") is False
    finally:
        await app.store.close()


async def test_rehash_resolves_vault_references_with_the_apps_client(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    _write(
        cfg,
        """\
        irc: {host: 127.0.0.1, channels: ["#ops"]}
        vault: {url: "https://kv.vault.azure.net"}
        webhooks: {github: {secret: "${vault:hook-secret}"}}
        """,
    )
    calls: list[str] = []

    class Vault:
        def get_secret(self, name: str) -> object:
            calls.append(name)
            return type("S", (), {"value": f"rehash-vault-{len(calls)}"})()

    vault = Vault()
    app = await App.create(load_config(cfg, vault_client=vault), vault_client=vault)
    try:
        report = app.rehash()
        assert report.config_error is None  # not "needs the azure extra"
        assert calls == ["hook-secret", "hook-secret"]  # read again on rehash
        assert app.config.webhooks.github is not None
        secret = app.config.webhooks.github.secret
        assert secret is not None and secret.reveal() == "rehash-vault-2"
    finally:
        await app.store.close()
