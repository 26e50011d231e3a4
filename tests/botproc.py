"""``masterchief run`` as a real process, for tests that need the bot out of
the test's event loop (a blocked loop, the startup log, signals)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent / "masterchief"


@dataclass
class BotProcess:
    proc: subprocess.Popen[bytes]
    log: Path  # stdout and stderr
    project: Path  # holds config/, scripts/, var/

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def write_config(project: Path, data: Mapping[str, Any]) -> Path:
    """``project/config/global/config.yaml`` from ``data``; returns the config dir."""
    cfg = project / "config"
    (cfg / "global").mkdir(parents=True, exist_ok=True)
    (cfg / "global" / "config.yaml").write_text(yaml.safe_dump(dict(data)))
    return cfg


@contextlib.contextmanager
def bot_process(
    project: Path, data: Mapping[str, Any], *, env: Mapping[str, str] | None = None
) -> Iterator[BotProcess]:
    """Start ``masterchief run`` on a config made from ``data`` (relative paths
    are under ``project``); SIGTERM (then SIGKILL) at the end."""
    (project / "scripts").mkdir(parents=True, exist_ok=True)
    cfg = write_config(project, data)
    log_path = project / "bot.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN), "run", "--config-dir", str(cfg)],
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield BotProcess(proc, log_path, project)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
