"""Field types the configuration's models share.

How this works.  A reference (``${env:...}``) yields a ``Secret``.  Fields
typed ``SecretValue`` keep it (it dumps as ``***``); ``HookSecret`` and
``Token`` also refuse an empty or blank value, which would make a check
pass for anyone.  Every section derives from ``Model``: unknown keys are
refused, and a reference in any other field is just its plain value, so
``host: ${env:IRC_HOST}`` works.  ``Channels`` and ``check_nick`` check IRC
names where the configuration names them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

from masterchief.config.secrets import Secret

from .validation import keeps_secrets

__all__ = [
    "CHANNEL_RE",
    "NO_SPACE_RE",
    "Channels",
    "HookSecret",
    "Model",
    "SecretValue",
    "Token",
    "check_nick",
    "reveal_all",
]


def _to_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value)
    raise ValueError("should be a string (quote it, or use ${env:NAME} / ${file:/path})")


SecretValue = Annotated[
    Secret,
    PlainValidator(_to_secret),
    PlainSerializer(lambda _s: "***", return_type=str),
]
"""A config field holding a secret: kept as ``Secret``, dumped as ``***``."""


def _non_blank(why: str) -> Callable[[Any], Secret]:
    """A ``SecretValue`` validator that also refuses an empty or blank value."""

    def check(value: Any) -> Secret:
        secret = _to_secret(value)
        if not secret.reveal().strip():
            raise ValueError(why)
        return secret

    return check


# An empty key would verify an empty-key HMAC or an empty header: the
# provider would look secured while anyone can sign for it.
_to_hook_secret = _non_blank(
    "is empty, which would let anyone sign: set a value, or remove the key"
    " (a provider with no secret is disabled; insecure: true opens it unverified)"
)


HookSecret = Annotated[
    Secret,
    PlainValidator(_to_hook_secret),
    PlainSerializer(lambda _s: "***", return_type=str),
]
"""A webhook provider's secret: like ``SecretValue``, and never empty or blank."""


def reveal_all(value: Any) -> Any:
    """``value`` with every ``Secret`` in it (in dicts and lists) revealed."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, dict):
        return {k: reveal_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal_all(v) for v in value]
    return value


class Model(BaseModel):
    """A config section: unknown keys refused, frozen; references made plain
    values except in fields that keep secrets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_references(cls, data: Any) -> Any:
        # A reference in a non-secret field (host: ${env:IRC_HOST}) is just a value.
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            k: (v if k not in fields or keeps_secrets(fields[k].annotation) else reveal_all(v))
            for k, v in data.items()
        }


_NICK = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]{0,63}")
CHANNEL_RE = re.compile(r"[#&+!][^\s,\x07\x00]{1,199}")
NO_SPACE_RE = re.compile(r"\S+")


def check_nick(value: str) -> str:
    if not _NICK.fullmatch(value):
        raise ValueError("not a valid IRC nick")
    return value


def _channel_names(value: tuple[str, ...]) -> tuple[str, ...]:
    for chan in value:
        if not CHANNEL_RE.fullmatch(chan):
            raise ValueError(f"{chan!r} is not a channel name")
    return value


Channels = Annotated[tuple[str, ...], AfterValidator(_channel_names)]
"""Where announcements go: every name checked (webhooks, REST, folders, deploys)."""


_to_token = _non_blank("is empty: set a value, or remove the key")


Token = Annotated[
    Secret,
    PlainValidator(_to_token),
    PlainSerializer(lambda _s: "***", return_type=str),
]
"""A bearer token we check: like ``SecretValue``, and never empty or blank."""
