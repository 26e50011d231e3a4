"""`masterchief run` as a real process: config dir + env file, SIGHUP rehash, SIGTERM stop."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pydle
import yaml

from masterchief.runtime.main import PydleNoise
from tests.botproc import bot_process
from tests.harness import wait_until
from tests.servers import unique_name

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "masterchief"


async def test_run_sighup_and_sigterm(tmp_path: Path, ircd, irc_client) -> None:  # type: ignore[no-untyped-def]
    nick = unique_name("mc")
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "environments").mkdir()
    (tmp_path / "scripts").mkdir()
    (cfg / "global" / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "irc": {"host": ircd.host, "port": 1, "nick": nick, "channels": ["#ops"]},
                "bot": {"scripts": ["scripts"]},
                "store": {"path": "var/mc.db"},
            }
        )
    )
    # the environment file wins over the global one (here: the right port)
    (cfg / "environments" / "staging.yaml").write_text(yaml.safe_dump({"irc": {"port": ircd.port}}))
    # Only a rehash (SIGHUP, !rehash) fires `evnt rehash`; the 1 s script
    # watcher's reload does not, so this line proves the signal was handled.
    (tmp_path / "scripts" / "hup.py").write_text(
        "from masterchief import bind, say\n"
        'bind("evnt", "-|-", "rehash", lambda ev: say("#ops", "rehash seen"))\n'
    )
    watcher = await irc_client()
    await watcher.join("#ops")
    log = (tmp_path / "bot.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN), "run", "--config-dir", str(cfg)],
        env={**os.environ, "MASTERCHIEF_ENV": "staging"},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        await watcher.wait_for(rf"^:{nick}!\S+ JOIN :?#ops", timeout=15)
        assert (tmp_path / "var" / "mc.db").exists()  # relative to the project dir
        (tmp_path / "scripts" / "late.py").write_text(
            'from masterchief import bind\nbind("pub", "-|-", "!late", lambda ev: ev.reply("late ok"))\n'
        )
        proc.send_signal(signal.SIGHUP)
        await watcher.wait_for(rf"^:{nick}!\S+ PRIVMSG #ops :rehash seen$", timeout=15)
        await watcher.say("#ops", "!late")
        await watcher.wait_for(rf"^:{nick}!\S+ PRIVMSG #ops :late ok$", timeout=10)
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 15)
        assert rc == 0
        await watcher.wait_for(rf"^:{nick}!\S+ QUIT", timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_missing_env_secret_is_a_clear_startup_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "global" / "config.yaml").write_text(
        "irc:\n  sasl: {username: bot, password: '${env:MC_TEST_UNSET_SECRET}'}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MC_TEST_UNSET_SECRET"}
    out = subprocess.run(
        [str(BIN), "run", "--config-dir", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "MC_TEST_UNSET_SECRET" in out.stderr and "irc.sasl.password" in out.stderr
    assert "config.yaml" in out.stderr


def test_help_lists_every_command() -> None:
    out = subprocess.run([str(BIN), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for cmd in ("run", "user"):
        assert cmd in out.stdout
    out = subprocess.run([str(BIN), "user", "--help"], capture_output=True, text=True, timeout=30)
    for cmd in ("add", "list", "chattr"):
        assert cmd in out.stdout


async def test_ready_line_and_no_pydle_unknown_command_noise(
    tmp_path: Path, ircd, irc_client
) -> None:  # type: ignore[no-untyped-def]
    """Once registered, one INFO line says where to connect; a server line
    pydle has no handler for (here ERR_BADCHANNELKEY, 475, for a channel
    whose key the config gets wrong) does not reach the log at INFO."""
    nick = unique_name("mc")
    locked = "#" + unique_name("lk")
    watcher = await irc_client()
    await watcher.join("#ops")
    await watcher.join(locked)
    await watcher.send_raw(f"MODE {locked} +k right-key")
    await watcher.wait_for(rf"MODE {locked} \+k", timeout=10)
    config = {
        "irc": {
            "host": ircd.host,
            "port": ircd.port,
            "nick": nick,
            "channels": ["#ops", f"{locked} sekrit-key"],
        },
        "bot": {"scripts": ["scripts"]},
        "store": {"path": "var/mc.db"},
        "web": {"host": "127.0.0.1", "port": 0},
    }
    # the 475 reached the bot's bindings, so pydle has seen it too (and logged, or not)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "saw.py").write_text(
        "from masterchief import bind, say\n"
        'bind("raw", "-", "475", lambda ev: say("#ops", "saw 475"))\n'
    )
    with bot_process(tmp_path, config) as bot:
        await watcher.wait_for(rf"^:{nick}!\S+ JOIN :?#ops", timeout=20)
        await watcher.wait_for(rf"^:{nick}!\S+ PRIVMSG #ops :saw 475$", timeout=20)
        await wait_until(lambda: " ready: " in bot.output(), 15)
        out = bot.output()
    ready = [ln for ln in out.splitlines() if " ready: " in ln]
    assert len(ready) == 1, out
    m = re.search(
        rf"INFO +masterchief: ready: IRC {re.escape(ircd.host)}:{ircd.port} as {nick} "
        rf"in #ops, {locked}; webhooks on http://127\.0\.0\.1:(\d+)$",
        ready[0],
    )
    assert m, ready[0]
    assert int(m.group(1)) != 0  # the port web.port: 0 got, not the 0
    assert "sekrit-key" not in out  # a channel key is not where-to-connect information
    assert "Unknown command" not in out, out
    assert nick not in {
        ln.nick for ln in watcher.lines if ln.command == "JOIN" and ln.target == locked
    }


def test_pydle_unknown_command_is_debug_only() -> None:
    """The filter in unit form: pydle's record is dropped at INFO, shown as
    DEBUG when the root logger is at DEBUG; other records pass untouched."""
    pydle_file = str(Path(pydle.__file__).parent / "client.py")

    def record(name: str, path: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, path, 1, msg, ("x",), None)

    noise = PydleNoise()
    root = logging.getLogger()
    before = root.level
    try:
        root.setLevel(logging.INFO)
        assert not noise.filter(record("_Client:irc", pydle_file, "Unknown command: [%s]"))
        ours = record("masterchief.irc", __file__, "Unknown command: [%s]")
        assert noise.filter(ours) and ours.levelno == logging.WARNING
        other = record("pydle.client", pydle_file, "Failed to execute %s handler.")
        assert noise.filter(other) and other.levelno == logging.WARNING
        root.setLevel(logging.DEBUG)
        shown = record("pydle.client", pydle_file, "Unknown command: [%s]")
        assert noise.filter(shown) and shown.levelname == "DEBUG"
    finally:
        root.setLevel(before)
