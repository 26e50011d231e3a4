"""Watched folders with the real bot: `masterchief run` killed between dispatch and done."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.harness import wait_until
from tests.servers import unique_name

BIN = Path(sys.executable).parent / "masterchief"

# The first delivery hangs (the bot is killed under it); later ones return.
SCRIPT = """
import asyncio
from pathlib import Path

from masterchief import bind

MARKER = Path({marker!r})


async def on_file(ev):
    first = not MARKER.exists()
    with MARKER.open("a") as fh:
        fh.write(f"{{ev.payload['name']}} {{ev.payload['redelivery']}}\\n")
    if first:
        await asyncio.sleep(3600)


bind("file", "-|-", "*/inbox/*.json", on_file)
"""


def _project(tmp: Path, host: str, port: int) -> Path:
    cfg = tmp / "config"
    (cfg / "global").mkdir(parents=True)
    (tmp / "scripts").mkdir()
    (tmp / "inbox").mkdir()
    (tmp / "scripts" / "deliveries.py").write_text(
        SCRIPT.format(marker=str(tmp / "deliveries.log"))
    )
    (cfg / "global" / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "irc": {
                    "host": host,
                    "port": port,
                    "nick": unique_name("mc"),
                    "channels": ["#ops"],
                },
                # the hanging handler must still be running when the bot is killed
                "bot": {"scripts": ["scripts"], "handler_timeout_s": 600},
                "store": {"path": "var/mc.db"},
                "web": {"enabled": False},
                "files": [{"name": "inbox", "path": "inbox", "settle_s": 0.2}],
            }
        )
    )
    return cfg


def _start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN), "run", "--config-dir", str(cfg)],
            env=dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


async def _wait(pred: Callable[[], bool], what: str, log: Path) -> None:
    try:
        await wait_until(pred, 30)
    except TimeoutError:
        tail = log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"timed out waiting for {what}; bot log:\n{tail}") from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(15)


@pytest.mark.timeout(150)
async def test_killed_bot_redelivers_the_file_once(tmp_path: Path, ircd) -> None:  # type: ignore[no-untyped-def]
    cfg = _project(tmp_path, ircd.host, ircd.port)
    inbox, marker, log = tmp_path / "inbox", tmp_path / "deliveries.log", tmp_path / "bot.log"

    def lines() -> list[str]:
        return marker.read_text().splitlines() if marker.exists() else []

    proc = _start(cfg, log)
    try:
        (inbox / "job.json").write_text('{"job": 9}')
        await _wait(lambda: lines() == ["job.json False"], "the first delivery", log)
        proc.kill()  # SIGKILL while the handler runs: dispatched, never done
        assert await asyncio.to_thread(proc.wait, 15) == -9
    finally:
        _stop(proc)
    assert (inbox / "job.json").exists() and not (inbox / ".processed").exists()

    proc = _start(cfg, log)
    try:
        await _wait(lambda: (inbox / ".processed" / "job.json").exists(), "the redelivery", log)
        assert lines() == ["job.json False", "job.json True"]
        proc.terminate()
        await asyncio.to_thread(proc.wait, 15)
    finally:
        _stop(proc)

    # A third start: the same content dropped again is known as done; a new file
    # is delivered (and shows the bot was up and reading the folder).
    (inbox / "again.json").write_text('{"job": 9}')
    (inbox / "fresh.json").write_text('{"job": 10}')
    proc = _start(cfg, log)
    try:
        await _wait(
            lambda: (
                (inbox / ".processed" / "again.json").exists()
                and (inbox / ".processed" / "fresh.json").exists()
            ),
            "the third start's files",
            log,
        )
        assert lines() == ["job.json False", "job.json True", "fresh.json False"]
    finally:
        _stop(proc)
