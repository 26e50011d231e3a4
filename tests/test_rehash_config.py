"""A rehash re-reads the configuration; an invalid one is reported (file,
key, reason, to the asker) and the running one kept; a broken deploy module
is reported."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from masterchief.config.engine import load_config
from masterchief.runtime.compose import App
from tests.harness import client_mask, running_bot
from tests.servers import unique_name


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
        assert app.dispatcher.wants("event", "deploy.progress") is False
        app.table.bind("event", "-|-", "deploy.*", lambda ev: None, owner="script:x")
        assert app.dispatcher.wants("event", "deploy.progress") is True
        app.table.unbind_owner("script:x")
        assert app.dispatcher.wants("event", "deploy.progress") is False
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


# --- over IRC (issue 8, item 16) -------------------------------------------------------------


def _bot_config(tmp: Path, ircd: Any, *, deploy: str) -> str:
    """A config.yaml for a bot on the session server, with a secret in it."""
    return textwrap.dedent(
        f"""\
        irc:
          host: {ircd.host}
          port: {ircd.port}
          nick: {unique_name("mc")}
          channels: ["#ops"]
          output: {{burst: 200, rate: 1000.0, recvq: 1048576}}
        bot: {{scripts: [scripts], handler_timeout_s: 5}}
        users: {{hostmask_flags_on_account_networks: true}}
        store: {{path: var/mc.db}}
        web: {{port: 0}}
        webhooks: {{github: {{secret: "{SECRET}"}}}}
        deploy: {deploy}
        """
    )


SECRET = "gh-hook-SECRET-7f3a9c"
SVC_MANIFEST = """\
name: svc
version: 1.0.0
kind: script
entry: run.sh
environments: [dev]
"""


async def _master(app: App, irc_client: Any) -> Any:
    ident = unique_name("m")[:10]
    await app.users.add_user(ident, hostmasks=(client_mask(ident),), flags="m")
    client = await irc_client(username=ident)
    await client.join("#ops")
    return client


async def test_rehash_over_irc_says_why_the_config_is_invalid(
    tmp_path: Path, ircd: Any, irc_client: Any
) -> None:
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    (tmp_path / "modules").mkdir()
    good = "{modules: [modules], channels: ['#deploys'], progress_interval_s: 5}"
    (cfg / "global" / "config.yaml").write_text(_bot_config(tmp_path, ircd, deploy=good))
    async with running_bot(tmp_path, ircd.host, ircd.port, config=load_config(cfg)) as app:
        me = app.irc.nickname
        boss = await _master(app, irc_client)
        bad = "{modules: [modules], channels: ['#deploys'], progress_interval_s: soon}"
        (cfg / "global" / "config.yaml").write_text(_bot_config(tmp_path, ircd, deploy=bad))
        boss.drain()
        await boss.say("#ops", "!rehash")
        told = await boss.wait_for(
            rf"^:{me}!\S+ (PRIVMSG|NOTICE) {boss.nick} :rehash: .*progress_interval_s", 15
        )
        # file, key and reason, to the asker only
        assert "config/global/config.yaml: deploy.progress_interval_s: " in told.text
        assert "valid number" in told.text, told.text
        said = await boss.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :rehash: the configuration", 15)
        assert "still running the previous one" in said.text
        assert "config.yaml" not in said.text  # paths are not for the channel
        assert app.config.deploy.progress_interval_s == 5  # the old config keeps running
        # ... and the bot with it
        await boss.say("#ops", "!status")
        await boss.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :up ", 15)
        # a secret's field with a bad value: named, its value never echoed
        (cfg / "global" / "config.yaml").write_text(
            _bot_config(tmp_path, ircd, deploy=good).replace(
                f'secret: "{SECRET}"', f"secret: [{SECRET}]"
            )
        )
        boss.drain()
        await boss.say("#ops", "!rehash")
        told = await boss.wait_for(
            rf"^:{me}!\S+ (PRIVMSG|NOTICE) {boss.nick} :rehash: .*webhooks\.github\.secret", 15
        )
        await boss.say("#ops", "!status")
        await boss.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :up ", 15)
        assert not [ln.raw for ln in boss.lines if SECRET in ln.raw]


async def test_rehash_over_irc_reports_a_broken_module(
    tmp_path: Path, ircd: Any, irc_client: Any
) -> None:
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    modules = tmp_path / "modules"
    modules.mkdir()
    deploy = "{modules: [modules], channels: ['#deploys']}"
    (cfg / "global" / "config.yaml").write_text(_bot_config(tmp_path, ircd, deploy=deploy))
    (modules / "svc").mkdir()  # a good module whose config file will go bad
    (modules / "svc" / "module.yaml").write_text(SVC_MANIFEST)
    (modules / "svc" / "run.sh").write_text("#!/bin/sh\necho ok\n")
    (modules / "svc" / "run.sh").chmod(0o755)
    async with running_bot(tmp_path, ircd.host, ircd.port, config=load_config(cfg)) as app:
        me = app.irc.nickname
        boss = await _master(app, irc_client)
        (cfg / "modules").mkdir()
        (cfg / "modules" / "svc.yaml").write_text("token: ${env:MC_TEST_UNSET_SVC_TOKEN}\n")
        (modules / "broken").mkdir()
        (modules / "broken" / "module.yaml").write_text("name: broken\nkind: [\n")
        (modules / "halfdone").mkdir()
        (modules / "halfdone" / "module.yaml").write_text("name: halfdone\nkind: script\n")
        (modules / "named").mkdir()  # a manifest by another name: never read
        (modules / "named" / "module.yml").write_text("name: named\n")
        boss.drain()
        await boss.say("#ops", "!rehash")
        said = await boss.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :rehash: 3 modules ", 15)
        assert "not loaded" in said.text and "module.yaml" not in said.text
        told = await boss.collect(rf"^:{me}!\S+ (PRIVMSG|NOTICE) {boss.nick} :rehash: module", 3)
        text = "\n".join(ln.text for ln in told)
        assert re.search(r"modules/broken/module.yaml:\d+: YAML syntax error", text), text
        assert "modules/halfdone/module.yaml: version: Field required" in text, text
        assert "modules/named/module.yml: not read: a manifest is named module.yaml" in text
        assert app.modules.current.get("halfdone") is None
        # a module's config file is configuration too
        said = await boss.wait_for(
            rf"^:{me}!\S+ PRIVMSG #ops :rehash: the module config of svc", 15
        )
        assert "invalid" in said.text and "svc.yaml" not in said.text
        told = await boss.wait_for(
            rf"^:{me}!\S+ (PRIVMSG|NOTICE) {boss.nick} :rehash: .*config/modules/svc.yaml: token",
            15,
        )
        assert "MC_TEST_UNSET_SVC_TOKEN" in told.text


async def test_rehash_applies_pacing_flood_outbox_and_timeouts_live(tmp_path: Path) -> None:
    """Output settings, flood limits, outbox limits, the handler timeout and
    the command prefix change without a restart; a queue size does not."""
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    (tmp_path / "scripts").mkdir()
    base = 'irc: {host: 127.0.0.1, port: 6667, channels: ["#ops"]}\n'
    _write(cfg, base)
    app = await App.create(load_config(cfg))
    try:
        app.install_bindings()
        _write(
            cfg,
            """\
            irc: {host: 127.0.0.1, port: 6667, channels: ["#ops"],
                  output: {burst: 12, rate: 3.5, max_backlog_s: 20}}
            bot: {handler_timeout_s: 7, command_prefix: ".",
                  flood: {commands: 9, per_s: 30, ignore_s: 90, ctcp_replies: 1}}
            outbox: {expire_after_s: 600, delayed_after_s: 5}
            """,
        )
        report = app.rehash()
        assert report.config_error is None and report.restart_needed == ()
        assert (app.output.burst, app.output.rate) == (12, 3.5)
        assert app.irc.flood.policy.commands == 9 and app.irc.flood.policy.ignore_s == 90
        assert app.dispatcher.handler_timeout_s == 7
        assert app.outbox._expire_after_s == 600 and app.outbox._delayed_after_s == 5
        pub = {b.mask for b in app.table.binds("pub") if b.owner == "builtin:core"}
        assert ".help" in pub and "!help" not in pub  # the commands moved at once

        _write(cfg, base + "bot: {queue_size: 50}\n")
        assert app.rehash().restart_needed == ("dispatch",)
    finally:
        await app.store.close()
