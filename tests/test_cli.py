"""The ``masterchief`` command, through click's CliRunner on a temporary project."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import types
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from masterchief.cli import main
from masterchief.config.engine import load_config
from masterchief.config.schema import Config
from masterchief.identity.users import UserTable, verify_password
from masterchief.store.sqlite import open_store


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    cfg = tmp_path / "proj" / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "environments").mkdir()
    (cfg / "global" / "config.yaml").write_text(
        textwrap.dedent(
            """\
            irc: {host: 127.0.0.1, port: 6667, channels: ["#ops"]}
            store: {path: var/masterchief.db}
            """
        )
    )
    (cfg / "environments" / "prod.yaml").write_text("store: {path: var/prod.db}\n")
    return cfg


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("MASTERCHIEF_CONFIG_DIR", "MASTERCHIEF_ENV", "MASTERCHIEF_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def cli(runner: CliRunner, config_dir: Path, *args: str, **kw: object) -> Result:
    return runner.invoke(main, [*args, "--config-dir", str(config_dir)], **kw)  # type: ignore[arg-type]


async def load_users(path: Path) -> UserTable:
    store = await open_store(path)
    try:
        return await UserTable.load(store)
    finally:
        await store.close()


def bot_users(config_dir: Path, env: str = "dev") -> UserTable:
    """The user table exactly as the bot would load it for this config."""
    return asyncio.run(load_users(load_config(config_dir, env).store.path))


# --- help ---------------------------------------------------------------------------------


def test_help_lists_every_command(runner: CliRunner) -> None:
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    assert "run" in top.output
    assert "user add | user list | user chattr" in top.output
    sub = runner.invoke(main, ["user", "--help"])
    for command in ("add", "list", "chattr"):
        assert f"  {command} " in sub.output


@pytest.mark.parametrize(
    "command", [["run"], ["user", "add"], ["user", "list"], ["user", "chattr"]]
)
def test_every_subcommand_takes_config_dir_and_env(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "--config-dir" in result.output
    assert "--env" in result.output


# --- users round trip ---------------------------------------------------------------------


def test_add_list_chattr_round_trip(runner: CliRunner, config_dir: Path) -> None:
    r = cli(
        runner,
        config_dir,
        "user", "add", "alice",
        "--hostmask", "alice!*@*.example.com",
        "--hostmask", "*!~al@laptop.example",
        "--account", "AliceAcct",
        "--flags", "+mo",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.startswith("added alice: flags +mo; account AliceAcct")

    r = cli(runner, config_dir, "user", "add", "bob", "--hostmask", "*!bob@bob.example")
    assert r.exit_code == 0, r.output

    r = cli(runner, config_dir, "user", "chattr", "alice", "+o", "--channel", "#Ops")
    assert (r.exit_code, r.output) == (0, "alice on #Ops: +o\n")
    r = cli(runner, config_dir, "user", "chattr", "bob", "+v")
    assert (r.exit_code, r.output) == (0, "bob: global +v\n")
    # a leading "-" is a flag change, not an option
    r = cli(runner, config_dir, "user", "chattr", "alice", "-o")
    assert (r.exit_code, r.output) == (0, "alice: global +m\n")

    r = cli(runner, config_dir, "user", "list")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["HANDLE", "FLAGS", "ACCOUNT", "HOSTMASKS", "CHANNEL", "FLAGS"]
    assert lines[1].split() == [
        "alice",
        "+m",
        "AliceAcct",
        "*!~al@laptop.example,alice!*@*.example.com",
        "#ops:+o",
    ]
    assert lines[2].split() == ["bob", "+v", "-", "*!bob@bob.example", "-"]

    # the bot, loading the same config, sees the same users
    users = bot_users(config_dir)
    alice = users.match("x", "y@z", "aliceacct", accounts_available=True)
    assert alice is not None and alice.handle == "alice"
    assert alice.chan_flags("#OPS") == "o"
    bob = users.match("anynick", "bob@bob.example", None, accounts_available=False)
    assert bob is not None and bob.flags == "v"
    assert users.match("anynick", "bob@elsewhere.example", None, accounts_available=False) is None
    assert (config_dir.parent / "var" / "masterchief.db").is_file()


def test_password_from_environment(
    runner: CliRunner, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MASTERCHIEF_PASSWORD", "env-pass-123")
    r = cli(runner, config_dir, "user", "add", "carol", "--password")
    assert r.exit_code == 0, r.output
    assert "password set" in r.output
    assert "env-pass-123" not in r.output
    carol = bot_users(config_dir).get("carol")
    assert carol is not None and verify_password(carol, "env-pass-123")


def test_password_prompted_twice(runner: CliRunner, config_dir: Path) -> None:
    r = cli(runner, config_dir, "user", "add", "dave", "--password", input="pw-dave-1\npw-dave-1\n")
    assert r.exit_code == 0, r.output
    assert "pw-dave-1" not in r.output  # hidden input is not echoed
    dave = bot_users(config_dir).get("dave")
    assert dave is not None and verify_password(dave, "pw-dave-1")


def test_env_selects_the_store(
    runner: CliRunner, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = runner.invoke(
        main, ["user", "add", "eve", "--config-dir", str(config_dir), "--env", "prod"]
    )
    assert r.exit_code == 0, r.output
    assert bot_users(config_dir, "prod").get("eve") is not None
    assert bot_users(config_dir, "dev").get("eve") is None
    # the same through the environment variables
    monkeypatch.setenv("MASTERCHIEF_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("MASTERCHIEF_ENV", "prod")
    r = runner.invoke(main, ["user", "list"])
    assert r.exit_code == 0, r.output
    assert "eve" in r.output


def test_empty_list(runner: CliRunner, config_dir: Path) -> None:
    r = cli(runner, config_dir, "user", "list")
    assert r.exit_code == 0
    assert r.output.startswith("no users")


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "add", "bad handle"], "error: invalid handle 'bad handle'"),
        (["user", "add", "x", "--flags", "+1"], "error: invalid flag '1'"),
        (["user", "add", "x", "--hostmask", "a b"], "error: invalid hostmask"),
        (["user", "chattr", "ghost", "+o"], "error: no such user 'ghost'"),
        (["user", "chattr", "alice", "+o", "--channel", "ops"], "error: invalid channel"),
        (["user", "add", "ALICE"], "error: handle 'ALICE' already exists"),
        # colours, CTCP quoting and invisible marks: refused, quoted in the error
        (
            ["user", "chattr", "alice", "+o", "--channel", "#ops\u200b"],
            "error: invalid channel name '#ops\\u200b': control or invisible characters",
        ),
        (
            ["user", "chattr", "alice", "+o", "--channel", "#a\x01ACTION\x01"],
            "error: invalid channel name '#a\\x01ACTION\\x01': control",
        ),
        (
            ["user", "add", "eve", "--hostmask", "\x02evil\u202e!*@*"],
            "error: invalid hostmask '\\x02evil\\u202e!*@*': control or invisible characters",
        ),
    ],
)
def test_user_errors_are_one_line(
    runner: CliRunner, config_dir: Path, args: list[str], message: str
) -> None:
    assert cli(runner, config_dir, "user", "add", "alice").exit_code == 0
    r = cli(runner, config_dir, *args)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.startswith(message)
    assert len(r.stderr.splitlines()) == 1


def test_hostile_names_are_not_stored(runner: CliRunner, config_dir: Path) -> None:
    """A refused channel or hostmask leaves nothing for ``user list`` to print raw."""
    assert cli(runner, config_dir, "user", "add", "alice").exit_code == 0
    assert (
        cli(
            runner, config_dir, "user", "chattr", "alice", "+o", "--channel", "#ops\u200b"
        ).exit_code
        == 1
    )
    assert (
        cli(runner, config_dir, "user", "add", "eve", "--hostmask", "\x02e\u202e!*@*").exit_code
        == 1
    )
    users = bot_users(config_dir)
    assert [(u.handle, dict(u.chanflags), u.hostmasks) for u in users.all()] == [("alice", {}, ())]
    listed = cli(runner, config_dir, "user", "list")
    assert listed.exit_code == 0 and listed.output.isascii()


@pytest.mark.parametrize("command", [["run"], ["user", "list"], ["user", "add", "x"]])
def test_config_errors_exit_2(runner: CliRunner, config_dir: Path, command: list[str]) -> None:
    (config_dir / "global" / "config.yaml").write_text("irc: {port: abc}\n")
    r = cli(runner, config_dir, *command)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ")
    assert "config.yaml: irc.port: Input should be a valid integer" in r.stderr
    missing = runner.invoke(main, [*command, "--config-dir", str(config_dir.parent / "nope")])
    assert missing.exit_code == 2
    assert "global/config.yaml: file not found" in missing.stderr


def test_missing_secret_never_shows_a_value(
    runner: CliRunner, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config_dir / "global" / "config.yaml").write_text(
        'irc: {sasl: {username: bot, password: "${env:MC_SASL_PASSWORD}"}}\n'
    )
    monkeypatch.delenv("MC_SASL_PASSWORD", raising=False)
    r = cli(runner, config_dir, "run")
    assert r.exit_code == 2
    assert "irc.sasl.password: environment variable MC_SASL_PASSWORD is not set" in r.stderr


# --- run ----------------------------------------------------------------------------------


def test_run_calls_run_bot_and_exits_with_its_code(
    runner: CliRunner, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Config] = []

    async def fake_run_bot(config: Config) -> int:
        seen.append(config)
        return 5

    fake = types.ModuleType("masterchief.runtime.main")
    fake.run_bot = fake_run_bot  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "masterchief.runtime.main", fake)
    r = cli(runner, config_dir, "run", "--env", "prod")
    assert r.exit_code == 5
    [config] = seen
    assert config.env == "prod"
    assert config.store.path == config_dir.resolve().parent / "var" / "prod.db"


# --- weak hostmasks and names equal under IRC case rules (issue 8, items 2 and 8) --------


@pytest.mark.parametrize("mask", ["*!carol@*", "carol!*@*", "carol", "*!*@*", "*!carol@*.com"])
def test_weak_hostmasks_are_refused(runner: CliRunner, config_dir: Path, mask: str) -> None:
    r = cli(runner, config_dir, "user", "add", "carol", "--hostmask", mask, "--flags", "m")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: hostmask ") and " is weak: " in r.stderr
    assert "--allow-weak" in r.stderr and len(r.stderr.splitlines()) == 1
    assert bot_users(config_dir).get("carol") is None


def test_allow_weak_stores_it_marked_and_powerless(runner: CliRunner, config_dir: Path) -> None:
    r = cli(runner, config_dir, "user", "add", "carol", "--hostmask", "*!carol@*", "--flags", "m",
            "--allow-weak")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "users.hostmask_flags_on_account_networks" in r.output  # the note about accounts
    listed = cli(runner, config_dir, "user", "list").output.splitlines()
    assert listed[1].split()[:5] == ["carol", "+m", "-", "*!carol@*", "(weak)"]
    # a stranger with ident carol matches the record, but without its +m
    who = bot_users(config_dir).identify("x", "carol@evil.example", None, accounts_available=False)
    assert who is not None and who.handle == "carol"
    assert (who.global_flags(), who.approval_refusal() is not None) == ("v", True)  # +m gives +v


def test_a_specific_hostmask_is_accepted_without_a_note_for_plain_users(
    runner: CliRunner, config_dir: Path
) -> None:
    r = cli(runner, config_dir, "user", "add", "dave", "--hostmask", "*!~dave@10.1.2.3",
            "--flags", "v")  # fmt: skip
    assert (r.exit_code, r.output) == (0, "added dave: flags +v; hostmasks *!~dave@10.1.2.3\n")


@pytest.mark.parametrize(
    ("first", "second"),
    [("erin[1]", "ERIN{1}"), ("a\\b", "A|B"), ("Bob", "bOB")],
)
def test_handles_equal_under_rfc1459_cannot_coexist(
    runner: CliRunner, config_dir: Path, first: str, second: str
) -> None:
    assert cli(runner, config_dir, "user", "add", first).exit_code == 0
    r = cli(runner, config_dir, "user", "add", second)
    assert r.exit_code == 1
    assert r.stderr.startswith(f"error: handle {second!r} already exists")
    assert [u.handle for u in bot_users(config_dir).all()] == [first]


def test_accounts_equal_under_rfc1459_cannot_coexist(runner: CliRunner, config_dir: Path) -> None:
    assert cli(runner, config_dir, "user", "add", "erin", "--account", "erin[1]").exit_code == 0
    r = cli(runner, config_dir, "user", "add", "other", "--account", "ERIN{1}")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: account 'ERIN{1}' already belongs to erin as 'erin[1]'")
    users = bot_users(config_dir)
    assert users.get("other") is None
    # ...and the bot finds erin by the account as the server spells it
    found = users.identify("E", "e@h", "ERIN{1}", accounts_available=True)
    assert found is not None and found.handle == "erin" and found.via == "account"
