"""``masterchief run``: logging, signals, and the bot until it is told to stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from ..config.schema import Config
from ..config.secrets import install_log_redaction
from ..irc.supervisor import SaslFailed
from .compose import compose

__all__ = ["PydleNoise", "run_bot"]

log = logging.getLogger("masterchief")


class PydleNoise(logging.Filter):
    """pydle logs every server line it has no handler for as a WARNING
    ``Unknown command: ...`` (a 475 for a wrong channel key, numerics it does
    not know).  The bot reads those lines itself (``raw`` bindings), so they
    are shown only at DEBUG: put on the log handlers, since pydle's logger
    name follows the server it talks to.  A 421 (the server does not know a
    command *we* sent) stays a warning: that one is a bug of ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if not (isinstance(msg, str) and msg.startswith("Unknown command")):
            return True
        if f"{os.sep}pydle{os.sep}" not in record.pathname:
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(PydleNoise())
    install_log_redaction()


def _dump_tasks() -> None:
    """SIGUSR1: log every task and where it waits (for a bot that seems stuck)."""
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=4)
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        log.warning("task %s: %s", task.get_name(), where or "(not started)")


async def run_bot(config: Config) -> int:
    """Run the bot until SIGINT/SIGTERM.  SIGHUP reloads scripts."""
    _setup_logging()
    Path(config.store.path).parent.mkdir(parents=True, exist_ok=True)
    app = await compose(config)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, app.stop)
    loop.add_signal_handler(signal.SIGTERM, app.stop)
    loop.add_signal_handler(signal.SIGHUP, app.rehash)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    failed: list[BaseException] = []
    try:
        await app.run()
    except* SaslFailed as group:
        failed.extend(group.exceptions)
    if failed:
        print(f"error: {failed[0]}", file=sys.stderr)
        return 3
    return 0
