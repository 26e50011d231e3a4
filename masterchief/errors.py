"""Errors, split by whose fault they are.

``UserError``: the person asking got something wrong; the message is written
for them and is safe to say in a channel ("unknown handle 'bob'").
``ConfigError``: the operator's configuration is wrong; the message names the
file and the key but never a secret's value.  Shown on the console, not in a
channel (it contains paths).
``InternalError``: our fault.  Only a reference id reaches the channel; the
log holds the details.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConfigError", "InternalError", "LocatedError", "UserError"]


class UserError(Exception):
    """A refusal caused by the request; ``str(err)`` is safe to show anyone."""


class InternalError(Exception):
    """Something failed on our side; show users only a reference id."""


class LocatedError(Exception):
    """An error in a file the operator wrote: ``str(err)`` is ``file: key: detail``,
    with ``file`` and ``key`` kept as attributes (either may be ``None``)."""

    def __init__(
        self, detail: str, *, file: str | Path | None = None, key: str | None = None
    ) -> None:
        self.detail = detail
        self.file = str(file) if file is not None else None
        self.key = key
        parts = [p for p in (self.file, key) if p]
        super().__init__(": ".join([*parts, detail]))


class ConfigError(LocatedError):
    """Invalid configuration.  ``str(err)`` is ``file: key: detail``.

    ``file`` and ``key`` are kept as attributes so callers can test them;
    either may be ``None`` when unknown.  The message never contains the
    value of a secret.
    """
