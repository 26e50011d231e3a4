"""Config loading: merge rules, references, validation messages, paths."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pydantic
import pytest

from masterchief.config.engine import (
    ConfigError,
    build_config,
    environments,
    load_config,
    require_environment,
)
from masterchief.config.schema import ChannelConfig, Config
from masterchief.config.secrets import REDACTOR, Secret

REPO = Path(__file__).resolve().parents[2]


def make_config(
    root: Path, global_yaml: str, env_yaml: str | None = None, env: str = "dev"
) -> Path:
    cfg = root / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "global" / "config.yaml").write_text(textwrap.dedent(global_yaml))
    if env_yaml is not None:
        (cfg / "environments").mkdir()
        (cfg / "environments" / f"{env}.yaml").write_text(textwrap.dedent(env_yaml))
    return cfg


def get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


# --- the repository's own config ----------------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_repository_config_is_valid(env: str) -> None:
    config = load_config(REPO / "config", env, environ={})
    assert config.irc.host == "127.0.0.1"
    assert config.irc.port == 6667
    assert config.irc.nick == "masterchief"
    assert [c.name for c in config.irc.channels] == ["#ops"]
    assert config.irc.sasl is None
    assert config.bot.scripts == (REPO / "scripts",)
    assert config.store.path == REPO / "var" / "masterchief.db"


# --- defaults and paths -------------------------------------------------------------------


def test_empty_global_file_gives_defaults(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "")
    config = load_config(cfg, environ={})
    assert config.irc == Config().irc
    assert config.irc.alt_nicks == ("masterchief_",)
    assert config.irc.output.burst == 7
    assert config.bot.command_prefix == "!"
    assert config.bot.handler_timeout_s == 30
    assert config.bot.queue_size == 10000
    assert config.bot.tzinfo.key == "UTC"
    assert config.project_dir == tmp_path.resolve()
    assert config.config_dir == cfg.resolve()
    assert config.env == "dev"


@pytest.mark.parametrize(
    ("yaml_text", "key", "expected"),
    [
        ("store: {path: var/x.db}", "store.path", "var/x.db"),
        ("store: {path: ../shared/x.db}", "store.path", "../shared/x.db"),
        ("store: {path: /abs/x.db}", "store.path", "/abs/x.db"),
        ("bot: {scripts: [scripts, more/scripts]}", "bot.scripts.1", "more/scripts"),
        ("bot: {scripts: [/opt/scripts]}", "bot.scripts.0", "/opt/scripts"),
        ("irc: {tls_ca_file: certs/ca.pem}", "irc.tls_ca_file", "certs/ca.pem"),
    ],
)
def test_relative_paths_resolve_against_project_dir(
    tmp_path: Path, yaml_text: str, key: str, expected: str
) -> None:
    cfg = make_config(tmp_path / "proj", yaml_text)
    value = get(load_config(cfg, environ={}), key)
    assert isinstance(value, Path)
    assert value.is_absolute()
    project = tmp_path.resolve() / "proj"
    assert value == Path(os.path.normpath(project / expected))


def test_relative_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_config(tmp_path, "store: {path: var/db.sqlite}")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("config"), environ={})
    assert config.store.path == tmp_path.resolve() / "var" / "db.sqlite"


def test_missing_global_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "config", environ={})
    assert str(tmp_path / "config" / "global" / "config.yaml") in str(info.value)


# --- merge rules --------------------------------------------------------------------------

MERGE_CASES = [
    # (global, env, key, expected)
    ("irc: {host: a.example, port: 6667}", "irc: {port: 7000}", "irc.port", 7000),
    ("irc: {host: a.example, port: 6667}", "irc: {port: 7000}", "irc.host", "a.example"),
    ("irc: {output: {burst: 3, rate: 2.0}}", "irc: {output: {rate: 0.5}}", "irc.output.burst", 3),
    ("irc: {output: {burst: 3, rate: 2.0}}", "irc: {output: {rate: 0.5}}", "irc.output.rate", 0.5),
    # lists replace, they do not append
    ("irc: {alt_nicks: [a_, b_]}", "irc: {alt_nicks: [c_]}", "irc.alt_nicks", ("c_",)),
    ('irc: {channels: ["#a", "#b"]}', 'irc: {channels: ["#c"]}', "irc.channels.0.name", "#c"),
    # scalars replace; keys only in global survive
    (
        "bot: {timezone: UTC, command_prefix: '.'}",
        "bot: {timezone: Europe/Paris}",
        "bot.command_prefix",
        ".",
    ),
    ("bot: {timezone: UTC}", "bot: {timezone: Europe/Paris}", "bot.timezone", "Europe/Paris"),
    # a section only in the environment file
    ("", "store: {path: /tmp/env.db}", "store.path", Path("/tmp/env.db")),
    # an empty environment file changes nothing
    ("irc: {port: 6697}", "", "irc.port", 6697),
    # null replaces: sasl configured globally, switched off for this environment
    ("irc: {sasl: {username: u, password: p4ssw0rd-x}}", "irc: {sasl: null}", "irc.sasl", None),
]


@pytest.mark.parametrize(("global_yaml", "env_yaml", "key", "expected"), MERGE_CASES)
def test_merge_rules(
    tmp_path: Path, global_yaml: str, env_yaml: str, key: str, expected: object
) -> None:
    cfg = make_config(tmp_path, global_yaml, env_yaml)
    assert get(load_config(cfg, "dev", environ={}), key) == expected


def test_environment_file_is_optional_and_chosen_by_env(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "irc: {port: 6667}", "irc: {port: 7000}", env="staging")
    assert load_config(cfg, "staging", environ={}).irc.port == 7000
    # load_config itself takes a missing file (a rehash of the default env);
    # an environment someone named is checked with require_environment
    assert load_config(cfg, "dev", environ={}).irc.port == 6667


def test_require_environment_lists_the_known_ones(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "", "{}", env="staging")
    (cfg / "environments" / "prod.yaml").write_text("{}")
    (cfg / "environments" / "notes.txt").write_text("not an environment")
    assert environments(cfg) == ["prod", "staging"]
    require_environment(cfg, "staging")
    for name in ("prodd", "dev", "../global/config"):
        with pytest.raises(ConfigError) as info:
            require_environment(cfg, name)
        assert f"unknown environment {name!r}" in str(info.value)
        assert "(known environments: prod, staging)" in str(info.value)
    bare = make_config(tmp_path / "bare", "")
    with pytest.raises(ConfigError, match=r"known environments: none"):
        require_environment(bare, "prod")
    # a folder of deploy module settings names an environment too
    (bare / "modules" / "qa").mkdir(parents=True)
    (bare / "modules" / "web.yaml").write_text("{}")
    assert environments(bare) == ["qa"]
    require_environment(bare, "qa")


# --- partial loads: what an offline command needs (issue 8, item 11) --------------------------

PARTIAL = """\
irc:
  port: "${env:IRC_PORT}"
  sasl: {username: bot, password: "${env:SASL_PW}"}
webhooks:
  github: {secret: "${env:GH_SECRET}"}
  generic: [{name: rel, secret: "${env:REL_SECRET}"}]
store: {path: "${env:VAR_DIR}/mc.db"}
"""


def test_sections_resolve_only_their_references(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, PARTIAL)
    environ = {"VAR_DIR": "/srv/mc", "GH_SECRET": "never-read-here"}
    config = load_config(cfg, environ=environ, sections=["store"])
    assert config.store.path == Path("/srv/mc/mc.db")
    left = dict(config.unresolved)
    assert left == {
        ("irc", "port"): "${env:IRC_PORT} (not resolved)",
        ("irc", "sasl", "password"): "${env:SASL_PW} (not resolved)",
        ("webhooks", "github", "secret"): "${env:GH_SECRET} (not resolved)",
        ("webhooks", "generic", 0, "secret"): "${env:REL_SECRET} (not resolved)",
    }
    assert config.irc.port == 6667  # the stand-in is no port: the default
    # the stand-ins are unguessable values, never the reference text, empty,
    # or what the environment holds (GH_SECRET was there, and was not read)
    assert config.irc.sasl is not None
    stand_ins = [config.irc.sasl.password.reveal()]
    assert config.webhooks.github is not None and config.webhooks.github.secret is not None
    stand_ins.append(config.webhooks.github.secret.reveal())
    again = load_config(cfg, environ=environ, sections=["store"])
    assert again.irc.sasl is not None
    stand_ins.append(again.irc.sasl.password.reveal())
    assert len(set(stand_ins)) == 3
    for value in stand_ins:
        assert len(value) >= 32 and "${" not in value and value != "never-read-here"


def test_a_section_that_is_wanted_must_resolve(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, PARTIAL)
    with pytest.raises(ConfigError, match=r"store\.path: environment variable VAR_DIR is not set"):
        load_config(cfg, environ={}, sections=["store"])
    with pytest.raises(ConfigError, match="environment variable IRC_PORT is not set"):
        load_config(cfg, environ={"VAR_DIR": "/srv"})  # the whole config: strict


def test_lenient_load_shows_unset_references_as_written(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, PARTIAL)
    environ = {"VAR_DIR": "/srv/mc", "GH_SECRET": "gh-secret-for-lenient", "SASL_PW": ""}
    config = load_config(cfg, environ=environ, lenient=True)
    dump = config.redacted_dump()
    assert dump["irc"]["port"] == "${env:IRC_PORT} (not set)"
    assert dump["irc"]["sasl"]["password"] == "${env:SASL_PW} (empty)"
    assert dump["webhooks"]["github"]["secret"] == "***"
    assert dump["webhooks"]["generic"][0]["secret"] == "${env:REL_SECRET} (not set)"
    assert dump["store"]["path"] == "/srv/mc/mc.db"
    assert "unresolved" not in dump
    assert "gh-secret-for-lenient" not in repr(dump)


def test_stand_ins_a_field_refuses_fall_back_to_the_default(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        """\
        irc: {channels: ["#ops", "${env:CHAN}"], port: "${env:PORT}"}
        vault: {url: "${env:VAULT_URL}"}
        """,
    )
    config = load_config(cfg, environ={}, sections=["store"])
    assert [c.name for c in config.irc.channels] == ["#ops"]  # the default list
    assert config.irc.port == 6667 and config.vault.url is None
    shown = load_config(cfg, environ={}, lenient=True).redacted_dump()
    assert shown["irc"]["port"] == "${env:PORT} (not set)"
    assert shown["vault"]["url"] == "${env:VAULT_URL} (not set)"
    # a plain error elsewhere is still reported
    bad = make_config(tmp_path / "bad", 'irc: {port: 99999, nick: "${env:NICK}"}')
    with pytest.raises(ConfigError, match="less than or equal to 65535"):
        load_config(bad, environ={}, sections=["store"])


async def test_the_app_refuses_a_partial_config(tmp_path: Path) -> None:
    from masterchief.identity.users import UserTable
    from masterchief.runtime.compose import App
    from masterchief.store.sqlite import open_store

    cfg = make_config(tmp_path, PARTIAL)
    config = load_config(cfg, environ={"VAR_DIR": str(tmp_path)}, sections=["store"])
    store = await open_store(config.store.path)
    try:
        with pytest.raises(ConfigError, match="every reference resolved"):
            App(config, store, await UserTable.load(store))
    finally:
        await store.close()


@pytest.mark.parametrize("env", ["../global/config", "a/b", "", ".hidden"])
def test_bad_environment_names_are_refused(tmp_path: Path, env: str) -> None:
    cfg = make_config(tmp_path, "")
    with pytest.raises(ConfigError, match="invalid environment name"):
        load_config(cfg, env, environ={})


# --- secrets ------------------------------------------------------------------------------


def test_env_reference_becomes_a_secret(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 'irc: {sasl: {username: bot, password: "${env:MC_SASL_PASSWORD}"}}')
    config = load_config(cfg, environ={"MC_SASL_PASSWORD": "sasl-pw-31337"})
    assert config.irc.sasl is not None
    password = config.irc.sasl.password
    assert isinstance(password, Secret)
    assert password.reveal() == "sasl-pw-31337"
    assert "sasl-pw-31337" not in repr(config)
    assert "sasl-pw-31337" not in str(config.redacted_dump())
    assert config.redacted_dump()["irc"]["sasl"] == {"username": "bot", "password": "***"}
    assert REDACTOR.redact("AUTH sasl-pw-31337") == "AUTH ***"


def test_literal_secret_field_is_still_a_secret(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "irc: {sasl: {username: bot, password: literal-pw-4242}}")
    config = load_config(cfg, environ={})
    assert config.irc.sasl is not None
    assert isinstance(config.irc.sasl.password, Secret)
    assert REDACTOR.redact("literal-pw-4242") == "***"


def test_file_reference_relative_to_project(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 'irc: {sasl: {username: bot, password: "${file:secrets/pw}"}}')
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pw").write_text("file-pw-2718\n")
    config = load_config(cfg, environ={})
    assert config.irc.sasl is not None
    assert config.irc.sasl.password.reveal() == "file-pw-2718"


def test_reference_in_a_plain_field_is_a_plain_value(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 'irc: {host: "${env:IRC_HOST}", port: "${env:IRC_PORT}"}')
    config = load_config(cfg, environ={"IRC_HOST": "irc.example.net", "IRC_PORT": "6697"})
    assert config.irc.host == "irc.example.net"
    assert config.irc.port == 6697
    # plain values are not registered for redaction (logs stay readable)
    assert REDACTOR.redact("irc.example.net") == "irc.example.net"


@pytest.mark.parametrize(
    ("global_yaml", "env_yaml", "fragments"),
    [
        (  # missing variable referenced in the global file
            'irc: {sasl: {username: bot, password: "${env:MC_SASL_PASSWORD}"}}',
            None,
            ["config/global/config.yaml: irc.sasl.password", "MC_SASL_PASSWORD is not set"],
        ),
        (  # ...and in the environment file: that file is named
            "",
            'irc: {sasl: {username: bot, password: "${env:MC_SASL_PASSWORD}"}}',
            ["config/environments/dev.yaml: irc.sasl.password", "MC_SASL_PASSWORD is not set"],
        ),
        (
            'irc: {sasl: {username: bot, password: "${file:/nonexistent/pw}"}}',
            None,
            ["config/global/config.yaml: irc.sasl.password", "cannot read secret file"],
        ),
        (
            'irc: {sasl: {username: bot, password: "${vault:sasl}"}}',
            None,
            ["irc.sasl.password", "vault references need vault.url"],
        ),
        (
            'irc: {channels: ["#ops ${env:NOPE}"]}',
            None,
            ["config/global/config.yaml: irc.channels[0]", "NOPE is not set"],
        ),
    ],
)
def test_reference_errors_name_file_and_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    global_yaml: str,
    env_yaml: str | None,
    fragments: list[str],
) -> None:
    make_config(tmp_path, global_yaml, env_yaml)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(Path("config"), environ={"OTHER": "other-secret-value"})
    for fragment in fragments:
        assert fragment in str(info.value)


def test_secret_values_never_appear_in_validation_errors(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        """
        irc:
          port: "${env:PW}"
          sasl: {username: bot, password: 12345678, extra_key: "${env:PW}"}
          hots: "${env:PW}"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg, environ={"PW": "leaky-secret-99"})
    message = str(info.value)
    assert "irc.port" in message
    assert "irc.sasl.password" in message
    assert "irc.sasl.extra_key" in message
    assert "leaky-secret-99" not in message
    assert "12345678" not in message


def test_a_reference_in_a_url_query_or_userinfo_is_a_secret_piece(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        """
        rest:
          - {name: mrs, url: "https://gitlab.example/api/v4/mrs?state=opened&private_token=${env:GL_TOKEN}"}
          - {name: cam, url: "https://bot:${env:CAM_PW}@cams.example/status"}
          - {name: host, url: "https://${env:API_HOST}/health"}
        """,
    )
    environ = {"GL_TOKEN": "glpat-q1w2e3r4t5", "CAM_PW": "cam-pw-77x", "API_HOST": "api.example"}
    config = load_config(cfg, environ=environ)
    assert config.rest[0].url.endswith("private_token=glpat-q1w2e3r4t5")  # the poller needs it
    # ...but logs, IRC, the event log and `config show` never show it
    assert REDACTOR.redact("GET ?private_token=glpat-q1w2e3r4t5") == "GET ?private_token=***"
    assert REDACTOR.redact("login cam-pw-77x") == "login ***"
    assert REDACTOR.redact("api.example") == "api.example"  # a host is a plain value
    shown = str(config.redacted_dump())
    assert "glpat-q1w2e3r4t5" not in shown and "cam-pw-77x" not in shown
    assert "private_token=***" in shown and "api.example" in shown


def test_a_validator_quoting_a_referenced_value_does_not_leak_it(tmp_path: Path) -> None:
    # a secret put in the wrong place: pass_env wants variable NAMES
    cfg = make_config(tmp_path, 'deploy: {pass_env: ["ARM_CLIENT_SECRET=${env:ARM}"]}')
    with pytest.raises(ConfigError) as info:
        load_config(cfg, environ={"ARM": "Zq8~realAzureSecretValue"})
    assert "deploy.pass_env" in str(info.value)
    assert "Zq8~realAzureSecretValue" not in str(info.value)


EMPTY_HOOK_SECRETS = [
    ('github: {secret: ""}', "webhooks.github.secret"),
    ('gitlab: {token: "   "}', "webhooks.gitlab.token"),
    ('gitlab: {token: t0k3n, signing_secret: ""}', "webhooks.gitlab.signing_secret"),
    ('jenkins: {token: ""}', "webhooks.jenkins.token"),
    ('alertmanager: {bearer_token: ""}', "webhooks.alertmanager.bearer_token"),
    ('alertmanager: {basic: {username: am, password: ""}}', "webhooks.alertmanager.basic.password"),
    ('pagerduty: {secrets: [""]}', "webhooks.pagerduty.secrets[0]"),
    ('pagerduty: {secrets: [pd-0ld, "\\t"]}', "webhooks.pagerduty.secrets[1]"),
    ('generic: [{name: release, secret: ""}]', "webhooks.generic[0].secret"),
    ('generic: [{name: release, secret: "", insecure: true}]', "webhooks.generic[0].secret"),
]


@pytest.mark.parametrize(("hooks", "key"), EMPTY_HOOK_SECRETS)
def test_an_empty_webhook_secret_is_an_error_not_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: str, key: str
) -> None:
    # An empty HMAC key or token is one anyone has: the provider must not
    # count as secured (and so enabled) with it.
    make_config(tmp_path, "webhooks:\n  " + hooks)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(Path("config"), environ={})
    assert info.value.file == "config/global/config.yaml"
    assert info.value.key == key
    assert "is empty" in info.value.detail and "remove the key" in info.value.detail


def test_a_blank_webhook_secret_from_the_environment_is_refused_too(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, 'webhooks: {github: {secret: "${env:GH_SECRET}"}}')
    with pytest.raises(ConfigError, match=r"webhooks\.github\.secret: is empty"):
        load_config(cfg, environ={"GH_SECRET": "  "})
    config = load_config(cfg, environ={"GH_SECRET": " s3cret "})
    assert config.webhooks.github is not None and config.webhooks.github.secret is not None
    assert config.webhooks.github.secret.reveal() == " s3cret "


# --- validation messages ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("global_yaml", "env_yaml", "expected"),
    [
        (
            "irc: {port: abc}",
            None,
            "config/global/config.yaml: irc.port: Input should be a valid integer",
        ),
        ("irc: {port: abc}", None, "(got 'abc')"),
        ("irc: {port: 70000}", None, "irc.port: Input should be less than or equal to 65535"),
        (  # a typo in the environment file names that file and suggests the key
            "irc: {host: a.example}",
            "irc: {hots: b.example}",
            "config/environments/dev.yaml: irc.hots: unknown key (did you mean 'host'?)",
        ),
        ("irc: {output: {brust: 3}}", None, "irc.output.brust: unknown key (did you mean 'burst'"),
        ("ircc: {}", None, "config/global/config.yaml: ircc: unknown key (did you mean 'irc'?)"),
        (  # the key came from the env file even though its section is global
            "bot: {timezone: UTC}",
            "bot: {timezone: Mars/Olympus_Mons}",
            "config/environments/dev.yaml: bot.timezone: unknown timezone",
        ),
        ("bot: {timezone: ../../etc/passwd}", None, "bot.timezone: unknown timezone"),
        ("irc: {nick: '9lives'}", None, "irc.nick: not a valid IRC nick"),
        ("irc: {channels: [ops]}", None, "irc.channels[0].name: not a valid channel name"),
        ('irc: {channels: ["#a b c"]}', None, "irc.channels[0]: a channel entry is"),
        ("irc: {reconnect_min_s: 10, reconnect_max_s: 5}", None, "reconnect_max_s must be >="),
        ("irc: {sasl: {username: bot}}", None, "irc.sasl.password: Field required"),
        ("bot: {command_prefix: ''}", None, "bot.command_prefix: String should have at least"),
        ("env: prod", None, "config/global/config.yaml: env: unknown key (set by the loader"),
        ("- a\n- b\n", None, "config/global/config.yaml: the top level should be a mapping"),
        ("irc:\n  port: 1\n   host: x\n", None, "config/global/config.yaml:3: YAML syntax error"),
        ("irc: {port: 1", None, "config/global/config.yaml:1: YAML syntax error"),
        ("irc: {}", "bot: [unclosed\n", "config/environments/dev.yaml:2: YAML syntax error"),
    ],
)
def test_validation_messages(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    global_yaml: str,
    env_yaml: str | None,
    expected: str,
) -> None:
    make_config(tmp_path, global_yaml, env_yaml)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(Path("config"), environ={})
    assert expected in str(info.value)


def test_config_error_attributes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_config(tmp_path, "irc: {port: abc}\nbot: {queue_size: 0}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(Path("config"), environ={})
    err = info.value
    assert err.file == "config/global/config.yaml"
    assert err.key == "irc.port"
    # every problem is reported, one per line
    assert str(err).splitlines()[1].startswith("config/global/config.yaml: bot.queue_size: ")


# --- channels, plain data, immutability ---------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "name", "key"),
    [
        ("#ops", "#ops", None),
        ("#ops sekret", "#ops", "sekret"),
        ({"name": "#ops", "key": "k"}, "#ops", "k"),
        ({"name": "&local"}, "&local", None),
    ],
)
def test_channel_entries(entry: object, name: str, key: str | None) -> None:
    config = build_config({"irc": {"channels": [entry]}}, project_dir=Path("/p"))
    assert config.irc.channels == (ChannelConfig(name=name, key=key),)


def test_build_config_from_plain_dict() -> None:
    config = build_config(
        {"irc": {"port": 7000}, "store": {"path": "db.sqlite"}},
        project_dir=Path("/srv/mc"),
        env="test",
    )
    assert config.irc.port == 7000
    assert config.store.path == Path("/srv/mc/db.sqlite")
    assert config.env == "test"
    with pytest.raises(ConfigError, match=r"^<config>: irc.port: "):
        build_config({"irc": {"port": "x"}}, project_dir=Path("/p"))


def test_config_is_frozen() -> None:
    config = build_config({}, project_dir=Path("/p"))
    with pytest.raises(pydantic.ValidationError):
        config.irc.port = 1
