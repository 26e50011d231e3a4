"""The ``masterchief`` command: run the bot, manage its users.

Every subcommand takes ``--config-dir`` and ``--env`` (or the environment
variables ``MASTERCHIEF_CONFIG_DIR`` / ``MASTERCHIEF_ENV``) and works on the
store that configuration names -- the same file the running bot uses.
Errors are one ``error: ...`` line on stderr and a nonzero exit: 2 for bad
configuration, 1 for anything else.
"""

from __future__ import annotations

from . import events, jobs, modules, run, sources, users  # noqa: F401 (they register)
from .base import main

__all__ = ["main"]
