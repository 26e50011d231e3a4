"""Configuration: YAML files in, a typed frozen ``Config`` out.

How this works.  ``load_config`` reads ``config/global/config.yaml`` and,
when present, ``config/environments/<env>.yaml``; the second is deep-merged
over the first (mappings merge key by key, any other value replaces).  While
merging it records which file supplied each key, so every error can name the
file the operator has to edit.  String values are then passed through
``resolve_refs`` (``${env:NAME}``, ``${file:/path}``) and the result is
validated by pydantic models that forbid unknown keys, so a typo is an error
and not a silently ignored setting.  Relative paths (``bot.scripts``,
``store.path``, ``irc.tls_ca_file``) are made absolute against the project
directory (the parent of the config directory).

A reference yields a ``Secret``.  Fields typed ``SecretValue`` keep it (and
its value is registered for log redaction); any other field takes the plain
value, so ``host: ${env:IRC_HOST}`` works.  Error messages never include a
value that came from a reference or sits in a secret field.

``build_config`` is the same pipeline from a plain dict, for tests.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from secrets import token_urlsafe
from typing import Annotated, Any, Literal, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from masterchief.config.secrets import REDACTOR, RESOLVERS, Redactor, Resolver, Secret, resolve_refs
from masterchief.config.vault import VaultClient, azure_client, vault_resolver
from masterchief.errors import ConfigError

__all__ = [
    "AdminConfig",
    "AlertmanagerHook",
    "BasicAuthConfig",
    "BotConfig",
    "ChannelConfig",
    "Config",
    "ConfigError",
    "DeployConfig",
    "EventsConfig",
    "FilesConfig",
    "GenericHook",
    "GithubHook",
    "GitlabHook",
    "IrcConfig",
    "JenkinsHook",
    "LogConfig",
    "OutboxConfig",
    "OutputConfig",
    "PagerDutyHook",
    "RestAuthConfig",
    "RestPollConfig",
    "SaslConfig",
    "SecretValue",
    "StoreConfig",
    "UsersConfig",
    "VaultConfig",
    "WebConfig",
    "WebhooksConfig",
    "build_config",
    "config_resolvers",
    "environments",
    "load_config",
    "require_environment",
]

Key = str | int
KeyPath = tuple[Key, ...]


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


def _to_hook_secret(value: Any) -> Secret:
    # An empty key would verify an empty-key HMAC or an empty header: the
    # provider would look secured while anyone can sign for it.
    secret = _to_secret(value)
    if not secret.reveal().strip():
        raise ValueError(
            "is empty, which would let anyone sign: set a value, or remove the key"
            " (a provider with no secret is disabled; insecure: true opens it unverified)"
        )
    return secret


HookSecret = Annotated[
    Secret,
    PlainValidator(_to_hook_secret),
    PlainSerializer(lambda _s: "***", return_type=str),
]
"""A webhook provider's secret: like ``SecretValue``, and never empty or blank."""


_REF_START = re.compile(r"(?<!\$)\$\{")


def _credential_position(value: str) -> bool:
    """Whether a reference in ``value`` sits in a URL's query or fragment
    (``?key=${env:K}``) or userinfo (``https://user:${env:P}@host``)."""
    scheme = value.find("://")
    if scheme < 0:
        return False
    rest = value[scheme + 3 :]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    for m in _REF_START.finditer(value):
        at = m.start() - scheme - 3
        if at < 0:
            continue
        if "@" in authority and at < len(authority) and at < authority.rindex("@"):
            return True  # userinfo
        if re.search(r"[?#]", rest[:at]):
            return True  # query or fragment
    return False


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, dict):
        return {k: _redact_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_strings(v) for v in value]
    return value


def _reveal_all(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, dict):
        return {k: _reveal_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal_all(v) for v in value]
    return value


def _keeps_secrets(annotation: Any) -> bool:
    """Whether a field type handles ``Secret`` itself (a secret or a sub-model)."""
    if annotation is Secret:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_keeps_secrets(arg) for arg in get_args(annotation))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_references(cls, data: Any) -> Any:
        # A reference in a non-secret field (host: ${env:IRC_HOST}) is just a value.
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            k: (v if k not in fields or _keeps_secrets(fields[k].annotation) else _reveal_all(v))
            for k, v in data.items()
        }


_NICK = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]{0,63}")
_CHANNEL = re.compile(r"[#&+!][^\s,\x07\x00]{1,199}")
_NO_SPACE = re.compile(r"\S+")


def _check_nick(value: str) -> str:
    if not _NICK.fullmatch(value):
        raise ValueError("not a valid IRC nick")
    return value


def _channel_names(value: tuple[str, ...]) -> tuple[str, ...]:
    for chan in value:
        if not _CHANNEL.fullmatch(chan):
            raise ValueError(f"{chan!r} is not a channel name")
    return value


Channels = Annotated[tuple[str, ...], AfterValidator(_channel_names)]
"""Where announcements go: every name checked (webhooks, REST, folders, deploys)."""


class ChannelConfig(_Model):
    """A channel to join: ``"#chan"``, ``"#chan key"`` or ``{name, key}``."""

    name: str
    key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, Secret):
            data = data.reveal()
        if isinstance(data, str):
            parts = data.split()
            if len(parts) not in (1, 2):
                raise ValueError("a channel entry is '#chan' or '#chan key'")
            return {"name": parts[0], "key": parts[1] if len(parts) == 2 else None}
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _CHANNEL.fullmatch(value):
            raise ValueError("not a valid channel name (it starts with #, &, + or !)")
        return value

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str | None) -> str | None:
        if value is not None and (not _NO_SPACE.fullmatch(value) or "," in value):
            raise ValueError("a channel key has no spaces or commas")
        return value


class SaslConfig(_Model):
    username: str = Field(min_length=1)
    password: SecretValue


class OutputConfig(_Model):
    """Output pacing: ``burst`` lines at once, then ``rate`` lines a second.

    ``max_backlog_s``: when a channel's queued announcements would take longer
    than this to send, they are folded into summaries (alert storms)."""

    burst: int = Field(default=7, ge=1)
    rate: float = Field(default=1.0, gt=0)
    max_queue: int = Field(default=300, ge=1)
    max_backlog_s: float = Field(default=10.0, gt=0)
    # The server's receive queue for our connect class: a full token bucket
    # never stands for more than half of it, so long lines cost more tokens.
    recvq: int = Field(default=8192, ge=512)


class IrcConfig(_Model):
    host: str = Field(default="127.0.0.1", min_length=1, pattern=r"^\S+$")
    port: int = Field(default=6667, ge=1, le=65535)
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: Path | None = None  # CA bundle for a private/self-signed server
    nick: str = "masterchief"
    alt_nicks: tuple[str, ...] = ("masterchief_",)
    username: str = Field(default="masterchief", pattern=r"^[^\s@]+$")
    realname: str = Field(default="MasterChief", pattern=r"^[^\r\n\x00]*$")
    channels: tuple[ChannelConfig, ...] = (ChannelConfig(name="#ops"),)
    sasl: SaslConfig | None = None
    rejoin_on_kick: bool = True
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=300.0, gt=0)
    output: OutputConfig = OutputConfig()

    @field_validator("nick")
    @classmethod
    def _check_nick(cls, value: str) -> str:
        return _check_nick(value)

    @field_validator("alt_nicks")
    @classmethod
    def _check_alt_nicks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for nick in value:
            _check_nick(nick)
        return value

    @model_validator(mode="after")
    def _check_backoff(self) -> IrcConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class FloodConfig(_Model):
    """Eggdrop-style flood limits.  More than ``commands`` commands (pub/msg
    bindings, built-ins included) from one user within ``per_s`` seconds:
    told once, then ignored for ``ignore_s``.  CTCP requests are answered at
    most ``ctcp_replies`` times per ``ctcp_per_s`` seconds for the whole bot."""

    commands: int = Field(default=5, ge=1)
    per_s: float = Field(default=10.0, gt=0)
    ignore_s: float = Field(default=60.0, ge=0)
    ctcp_replies: int = Field(default=3, ge=0)
    ctcp_per_s: float = Field(default=60.0, gt=0)


class BotConfig(_Model):
    scripts: tuple[Path, ...] = (Path("scripts"),)
    timezone: str = "UTC"
    handler_timeout_s: float = Field(default=30.0, gt=0)
    command_prefix: str = Field(default="!", min_length=1, max_length=8, pattern=r"^\S+$")
    queue_size: int = Field(default=10000, ge=1)
    flood: FloodConfig = FloodConfig()
    # How private answers (!help, !binds, !jobs ...) go: PRIVMSG opens a query
    # window in common clients; NOTICE often lands in the status window.
    private_replies: Literal["privmsg", "notice"] = "privmsg"

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown timezone (use an IANA name like Europe/Paris)") from None
        return value

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class UsersConfig(_Model):
    """Who the user table trusts.  ``hostmask_flags_on_account_networks``:
    on a network with services accounts, a record matched by hostmask (one
    without an account) carries flags above +v and may approve deploys.  Off
    by default: there an account is proof, a hostmask only a claim.  Weak
    hostmasks (``*!carol@*``) never carry them, either way."""

    hostmask_flags_on_account_networks: bool = False


class StoreConfig(_Model):
    path: Path = Path("var/masterchief.db")


# --- web, webhooks, REST polling, outbox (issue 3) ---------------------------------

_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _to_token(value: Any) -> Secret:
    secret = _to_secret(value)
    if not secret.reveal().strip():
        raise ValueError("is empty: set a value, or remove the key")
    return secret


Token = Annotated[
    Secret,
    PlainValidator(_to_token),
    PlainSerializer(lambda _s: "***", return_type=str),
]
"""A bearer token we check: like ``SecretValue``, and never empty or blank."""


class AdminConfig(_Model):
    """``/metrics`` and ``/healthz``: on a listener of their own (``port``;
    the webhook port then serves only ``/webhooks/*``), behind
    ``Authorization: Bearer <token>``, or both.  ``port: 0`` picks one."""

    host: str = Field(default="127.0.0.1", min_length=1, pattern=r"^\S+$")
    port: int | None = Field(default=None, ge=0, le=65535)
    token: Token | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> AdminConfig:
        if self.port is None and self.token is None:
            raise ValueError("needs a port (a listener of its own), a token, or both")
        return self


class WebConfig(_Model):
    """The HTTP server for webhooks and the API.  ``port: 0`` picks a free port.
    Without ``admin``, ``/metrics`` and ``/healthz`` are open on this port."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1, pattern=r"^\S+$")
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    admin: AdminConfig | None = None


class _Hook(_Model):
    channels: Channels = ()
    insecure: bool = False  # accept unverified deliveries (logged as a warning at start)


class GithubHook(_Hook):
    secret: HookSecret | None = None


class GitlabHook(_Hook):
    token: HookSecret | None = None
    # Standard Webhooks signing secret (``whsec_<base64>``), checked when the
    # delivery carries webhook-signature.
    signing_secret: HookSecret | None = None


class JenkinsHook(_Hook):
    token: HookSecret | None = None


class BasicAuthConfig(_Model):
    username: str = Field(min_length=1)
    password: HookSecret


class AlertmanagerHook(_Hook):
    bearer_token: HookSecret | None = None
    basic: BasicAuthConfig | None = None


class PagerDutyHook(_Hook):
    secrets: tuple[HookSecret, ...] = ()


class GenericHook(_Hook):
    """``POST /webhooks/generic/<name>``, signed the Standard Webhooks way
    (``secret``: ``whsec_<base64>`` or any string, whose bytes are the key).
    ``legacy_signature: true`` takes the old ``X-Signature``/``X-Timestamp``
    form instead, deduplicated by what it signs (its X-Request-Id is not)."""

    name: str = Field(pattern=_NAME)
    secret: HookSecret | None = None
    legacy_signature: bool = False


class WebhooksConfig(_Model):
    github: GithubHook | None = None
    gitlab: GitlabHook | None = None
    jenkins: JenkinsHook | None = None
    alertmanager: AlertmanagerHook | None = None
    pagerduty: PagerDutyHook | None = None
    generic: tuple[GenericHook, ...] = ()

    @field_validator("generic")
    @classmethod
    def _unique_generic(cls, value: tuple[GenericHook, ...]) -> tuple[GenericHook, ...]:
        names = [g.name for g in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"generic webhook names must be unique: {', '.join(dupes)}")
        return value


class RestAuthConfig(_Model):
    """``none`` | ``api_key`` (``header`` or ``query`` names where ``key`` goes)
    | ``bearer`` (``token``) | ``basic`` (``username``/``password``) |
    ``oauth2`` client credentials (``token_url``, ``client_id``,
    ``client_secret``, optional ``scope``)."""

    type: Literal["none", "api_key", "bearer", "basic", "oauth2"] = "none"
    key: SecretValue | None = None
    header: str | None = None
    query: str | None = None
    token: SecretValue | None = None
    username: str | None = None
    password: SecretValue | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: SecretValue | None = None
    scope: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> RestAuthConfig:
        need: dict[str, tuple[str, ...]] = {
            "api_key": ("key",),
            "bearer": ("token",),
            "basic": ("username", "password"),
            "oauth2": ("token_url", "client_id", "client_secret"),
        }
        missing = [f for f in need.get(self.type, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"auth type {self.type} needs {', '.join(missing)}")
        if self.type == "api_key" and (self.header is None) == (self.query is None):
            raise ValueError("auth type api_key needs exactly one of header or query")
        return self


class RestPollConfig(_Model):
    name: str = Field(pattern=_NAME)
    url: str = Field(pattern=r"^https?://\S+$")
    interval_s: float = Field(default=60.0, ge=1.0)
    timeout_s: float = Field(default=10.0, gt=0)
    auth: RestAuthConfig = RestAuthConfig()
    select: str | None = None  # JMESPath
    emit: Literal["on_change", "every_poll"] = "on_change"
    channels: Channels = ()


class OutboxConfig(_Model):
    """Announcements wait here (durably) until IRC takes them.  Entries older
    than ``expire_after_s`` when the bot gets back are summarised, not replayed;
    those older than ``delayed_after_s`` when sent carry ``[delayed 3m]``."""

    expire_after_s: float = Field(default=1800.0, gt=0)
    delayed_after_s: float = Field(default=60.0, ge=0)


# --- watched folders and tailed logs (issue 4) ---------------------------------------


class FilesConfig(_Model):
    """A watched folder: files matching ``patterns`` become ``file`` Events once
    they have settled; refused ones go to ``<path>/.quarantine/``."""

    name: str = Field(pattern=_NAME)
    path: Path
    patterns: tuple[str, ...] = ("*.json", "*.csv", "*.yaml", "*.yml", "*.xml")
    recursive: bool = True
    settle_s: float = Field(default=1.0, ge=0)
    max_bytes: int = Field(default=104_857_600, ge=1)
    after: Literal["move", "delete"] = "move"
    channels: Channels = ()


class LogConfig(_Model):
    """A tailed log (``path`` may be a glob: one tailer per matching file)."""

    name: str = Field(pattern=_NAME)
    path: Path
    format: Literal["json", "syslog", "regex", "plain"] = "plain"
    pattern: str | None = None  # named groups, for format: regex
    start_at: Literal["end", "beginning"] = "end"
    max_line_bytes: int = Field(default=65_536, ge=256)
    # A file rotated away by rename is still read until it has not grown for
    # this long (its writer keeps the old handle until it reopens the path).
    rotate_wait_s: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _check_pattern(self) -> LogConfig:
        if self.format == "regex":
            if not self.pattern:
                raise ValueError("format regex needs a pattern with named groups")
            try:
                compiled = re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
            if not compiled.groupindex:
                raise ValueError("pattern needs named groups, e.g. (?P<level>\\w+)")
        return self


# --- deploy modules, event log, vault (issue 5) ------------------------------------


class DeployConfig(_Model):
    """Deploy modules and jobs.  ``modules`` are searched recursively for
    ``module.yaml``; ``channels`` also get every job's progress."""

    modules: tuple[Path, ...] = (Path("modules"),)
    work_dir: Path = Path("var/jobs")
    channels: Channels = ()
    progress_interval_s: float = Field(default=5.0, ge=0.5)
    kill_grace_s: float = Field(default=10.0, gt=0)
    max_output_line_bytes: int = Field(default=4096, ge=256)
    tail_lines: int = Field(default=50, ge=10, le=10_000)
    # Names of the bot's environment variables a job may see (credentials for
    # the tools: ARM_CLIENT_ID, KUBECONFIG, SSH_AUTH_SOCK...); nothing else leaks.
    pass_env: tuple[str, ...] = ()
    # Who may read job records (``!jobs all``, ``!job ID``): a flag mask
    # checked against a user record; "-|-" is any known user, never a stranger.
    job_flags: str = "-|-"
    # A plan's "what would change" lines: this many in the channel; a longer
    # plan goes to the asker privately, up to plan_private_lines.
    plan_lines: int = Field(default=4, ge=0, le=20)
    plan_private_lines: int = Field(default=20, ge=0, le=200)

    @field_validator("job_flags")
    @classmethod
    def _check_job_flags(cls, value: str) -> str:
        from ..bindings.flags import FlagError, FlagMask  # bindings/ imports this module

        try:
            FlagMask.parse(value)
        except FlagError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("pass_env")
    @classmethod
    def _check_pass_env(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value


class EventsConfig(_Model):
    """The event log: what happened, for audit and replay."""

    enabled: bool = True
    retention_days: float = Field(default=30.0, gt=0)
    max_payload_bytes: int = Field(default=65_536, ge=1024)


class VaultConfig(_Model):
    """Azure Key Vault for ``${vault:name}`` references (``masterchief[azure]``)."""

    url: str | None = Field(default=None, pattern=r"^https://\S+$")


_RESERVED = ("project_dir", "config_dir", "env", "unresolved")

Unresolved = tuple[tuple[KeyPath, str], ...]
"""References a partial load left unresolved: (key path, how to show it)."""


class Config(_Model):
    """The whole configuration.  ``project_dir``/``config_dir``/``env`` are set
    by the loader, not read from YAML."""

    irc: IrcConfig = IrcConfig()
    bot: BotConfig = BotConfig()
    users: UsersConfig = UsersConfig()
    store: StoreConfig = StoreConfig()
    web: WebConfig = WebConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    rest: tuple[RestPollConfig, ...] = ()
    outbox: OutboxConfig = OutboxConfig()
    files: tuple[FilesConfig, ...] = ()
    logs: tuple[LogConfig, ...] = ()
    deploy: DeployConfig = DeployConfig()
    events: EventsConfig = EventsConfig()
    vault: VaultConfig = VaultConfig()
    project_dir: Path = Path()
    config_dir: Path = Path("config")
    env: str = "dev"
    # Set by a partial load (``load_config(sections=..., lenient=...)``): the
    # references left unresolved.  Their fields hold an unguessable stand-in,
    # so such a Config is for reading only; the App refuses it.
    unresolved: Unresolved = ()

    def redacted_dump(self) -> dict[str, Any]:
        """Plain data for display: secrets as ``***``, paths as strings,
        registered secret pieces masked inside plain values (a token in a URL),
        and an unresolved reference as written, with why (``${env:NAME} (not
        set)``)."""
        data = cast("dict[str, Any]", _redact_strings(self.model_dump(mode="json")))
        del data["unresolved"]
        for path, shown in self.unresolved:
            _put(data, path, shown)
        return data


def _holds(data: Any, key: Key, *, new: bool = False) -> bool:
    """Whether ``data[key]`` exists (or, with ``new``, may be set in a dict)."""
    if isinstance(data, dict):
        return new or key in data
    return isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data)


def _put(data: Any, path: KeyPath, value: Any) -> None:
    """Set ``value`` at ``path`` in plain data, if the path's parent exists."""
    if not path:
        return
    for part in path[:-1]:
        if not _holds(data, part):
            return
        data = data[part]
    if _holds(data, path[-1], new=True):
        data[path[-1]] = value


# --- loading --------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DEFAULT_ENV = "dev"


def environments(config_dir: Path) -> list[str]:
    """The environments ``config_dir`` defines: an ``environments/<name>.yaml``
    or a folder of deploy module settings, ``modules/<name>/``."""
    config_dir = Path(config_dir)
    found = {p.stem for p in config_dir.glob("environments/*.yaml") if p.is_file()}
    found |= {p.name for p in config_dir.glob("modules/*") if p.is_dir()}
    return sorted(n for n in found if _ENV_NAME.fullmatch(n))


def require_environment(config_dir: Path, env: str) -> None:
    """A ``ConfigError`` listing the known environments (``environments``)
    unless ``env`` is one of them: for an ``--env`` someone typed, where a
    typo must not quietly run with the global configuration alone."""
    known = environments(config_dir)
    if env in known:
        return
    env_file = Path(config_dir) / "environments" / f"{env}.yaml"
    raise ConfigError(
        f"unknown environment {env!r}: there is no {env_file}"
        f" (known environments: {', '.join(known) or 'none'})"
    )


def load_config(
    config_dir: Path,
    env: str = DEFAULT_ENV,
    environ: Mapping[str, str] | None = None,
    *,
    vault_client: VaultClient | None = None,
    sections: Collection[str] | None = None,
    lenient: bool = False,
) -> Config:
    """Read, merge, resolve and validate the configuration in ``config_dir``.

    ``environments/<env>.yaml`` is merged over the global file when it
    exists (``require_environment`` is for an environment someone named).

    Partial loads, for commands that need only part of the configuration
    (``masterchief user list`` needs only the store): ``sections`` resolves
    references only in those top-level sections, and ``lenient`` turns a
    reference that cannot be resolved (an unset variable) into an entry of
    ``Config.unresolved`` instead of an error.  Either way the fields of an
    unresolved reference hold an unguessable stand-in, never a usable value,
    and ``App`` refuses such a Config: ``masterchief run`` loads it whole.
    """
    if not _ENV_NAME.fullmatch(env):
        raise ConfigError(f"invalid environment name {env!r}")
    config_dir = Path(config_dir)
    global_file = config_dir / "global" / "config.yaml"
    if not global_file.is_file():
        raise ConfigError("file not found (the global configuration is required)", file=global_file)
    data = _read_yaml(global_file)
    origins: dict[KeyPath, str] = {}
    _mark(data, str(global_file), origins, ())
    env_file = config_dir / "environments" / f"{env}.yaml"
    if env_file.is_file():
        _merge(data, _read_yaml(env_file), str(env_file), origins, ())
    return _build(
        data,
        origins,
        project_dir=config_dir.resolve().parent,
        config_dir=config_dir.resolve(),
        env=env,
        environ=os.environ if environ is None else environ,
        vault_client=vault_client,
        partial=_Partial(sections, lenient) if sections is not None or lenient else None,
    )


class _Partial:
    """Which references a partial load resolves, and the ones it left."""

    def __init__(self, sections: Collection[str] | None, lenient: bool) -> None:
        self.sections = None if sections is None else frozenset(sections)
        self.lenient = lenient
        self.left: dict[KeyPath, str] = {}

    def wanted(self, path: KeyPath) -> bool:
        return self.sections is None or (bool(path) and path[0] in self.sections)

    def leave(self, path: KeyPath, written: str, why: str) -> Secret:
        """Record a reference left unresolved; its stand-in value."""
        self.left[path] = f"{written} ({why})"
        return Secret("unresolved-" + token_urlsafe(24))  # matches nothing anyone knows


def _why_unresolved(exc: ConfigError) -> str:
    detail = exc.detail
    for ending, short in ((" is not set", "not set"), (" is empty", "empty")):
        if detail.endswith(ending):
            return short
    return detail


def build_config(
    data: Mapping[str, Any],
    *,
    project_dir: Path,
    env: str = "dev",
    environ: Mapping[str, str] | None = None,
    source: str = "<config>",
    vault_client: VaultClient | None = None,
) -> Config:
    """Validate plain data (as if read from one file named ``source``)."""
    plain = _reveal_all(dict(data))  # a deep copy; secret fields re-wrap their values
    origins: dict[KeyPath, str] = {}
    _mark(plain, source, origins, ())
    return _build(
        plain,
        origins,
        project_dir=Path(project_dir),
        config_dir=Path(project_dir) / "config",
        env=env,
        environ={} if environ is None else environ,
        vault_client=vault_client,
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or type(exc).__name__}", file=path) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = exc.problem or "invalid YAML"
        raise ConfigError(f"YAML syntax error: {problem}", file=where) from None
    except yaml.YAMLError:
        raise ConfigError("not valid YAML (is it UTF-8 text?)", file=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("the top level should be a mapping of keys to values", file=path)
    return data


def _mark(value: Any, source: str, origins: dict[KeyPath, str], path: KeyPath) -> None:
    origins[path] = source
    if isinstance(value, dict):
        for k, v in value.items():
            _mark(v, source, origins, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _mark(v, source, origins, (*path, i))


def _merge(
    base: dict[str, Any],
    over: dict[str, Any],
    source: str,
    origins: dict[KeyPath, str],
    path: KeyPath,
) -> None:
    """Deep-merge ``over`` into ``base`` in place, recording where keys came from."""
    for key, value in over.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, source, origins, here)
            continue
        base[key] = value
        n = len(here)
        for old in [p for p in origins if p[:n] == here]:
            del origins[old]
        _mark(value, source, origins, here)


def _origin(origins: Mapping[KeyPath, str], loc: KeyPath) -> str:
    for i in range(len(loc), -1, -1):
        found = origins.get(loc[:i])
        if found is not None:
            return found
    return "<config>"


def _dotted(loc: KeyPath) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _resolve_tree(
    value: Any,
    path: KeyPath,
    *,
    origins: Mapping[KeyPath, str],
    environ: Mapping[str, str],
    base_dir: Path,
    ref_paths: set[KeyPath],
    found: dict[int, Redactor],
    resolvers: Mapping[str, Resolver] | None = None,
    every: list[tuple[bool, Redactor, str]] | None = None,
    partial: _Partial | None = None,
) -> Any:
    """Resolve the references in ``value`` (those ``partial`` wants, if
    given).  ``found`` gets the resolved pieces of each value that stays a
    ``Secret``; ``every`` (when given) gets ``(credential, pieces, whole
    resolved text)`` for every string with a reference, ``credential`` when a
    reference sits where URLs carry credentials (see
    ``_credential_position``)."""
    if isinstance(value, dict):
        return {
            k: _resolve_tree(
                v,
                (*path, k),
                origins=origins,
                environ=environ,
                base_dir=base_dir,
                ref_paths=ref_paths,
                found=found,
                resolvers=resolvers,
                every=every,
                partial=partial,
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _resolve_tree(
                v,
                (*path, i),
                origins=origins,
                environ=environ,
                base_dir=base_dir,
                ref_paths=ref_paths,
                found=found,
                resolvers=resolvers,
                every=every,
                partial=partial,
            )
            for i, v in enumerate(value)
        ]
    if isinstance(value, str) and "${" in value:
        if partial is not None and not partial.wanted(path):
            return partial.leave(path, value, "not resolved")
        parts = Redactor()  # this value's resolved pieces, registered if it stays secret
        try:
            result = resolve_refs(
                value,
                environ=environ,
                where=f"{_origin(origins, path)}: {_dotted(path)}",
                base_dir=base_dir,
                redactor=parts,
                resolvers=resolvers,
            )
        except ConfigError as exc:
            if partial is None or not partial.lenient:
                raise
            return partial.leave(path, value, _why_unresolved(exc))
        if isinstance(result, Secret):
            ref_paths.add(path)
            found[id(result)] = parts
        if every is not None:
            whole = result.reveal() if isinstance(result, Secret) else result
            every.append((_credential_position(value), parts, whole))
        return result
    return value


def _build(
    data: dict[str, Any],
    origins: dict[KeyPath, str],
    *,
    project_dir: Path,
    config_dir: Path,
    env: str,
    environ: Mapping[str, str],
    vault_client: VaultClient | None = None,
    partial: _Partial | None = None,
) -> Config:
    for name in _RESERVED:
        if name in data:
            raise ConfigError(
                "unknown key (set by the loader, not in YAML)",
                file=_origin(origins, (name,)),
                key=name,
            )
    ref_paths: set[KeyPath] = set()
    pieces: dict[int, Redactor] = {}
    every: list[tuple[bool, Redactor, str]] = []
    resolved = _resolve_tree(
        data,
        (),
        origins=origins,
        environ=environ,
        base_dir=project_dir,
        ref_paths=ref_paths,
        found=pieces,
        resolvers=config_resolvers(data, origins, environ, vault_client),
        every=every,
        partial=partial,
    )
    loader = {"project_dir": project_dir, "config_dir": config_dir, "env": env}
    if partial is not None:
        loader["unresolved"] = tuple(partial.left.items())
    try:
        config = _validate({**resolved, **loader}, partial)
    except ValidationError as exc:
        # A validator may quote the value it refused: no resolved reference
        # (a secret put in the wrong field) may reach the message.
        hide = Redactor()
        for _, parts, _ in every:
            for piece in parts.values():
                hide.register(piece)
        raise _config_error(exc, origins, ref_paths, hide) from None
    for secret in _secrets_in(config):
        REDACTOR.register(secret)
        for piece in pieces.get(id(secret), Redactor()).values():
            REDACTOR.register(piece)
    # A reference in a URL's query or userinfo is a credential even in a plain
    # field (url: https://...?private_token=${env:T}); elsewhere in a plain
    # field (host: ${env:IRC_HOST}, path: ${env:HOME}/inbox) it is a value.
    for credential, parts, whole in every:
        if credential:  # the token, not the whole URL (which stays readable)
            for piece in parts.values() - {whole}:
                REDACTOR.register(piece)
    return _absolute_paths(config, project_dir)


def _validate(data: dict[str, Any], partial: _Partial | None) -> Config:
    """``Config.model_validate``; in a partial load a stand-in that a field
    refuses (``port: ${env:PORT}``) is dropped, so the field takes its default
    (the display still shows the reference)."""
    for _ in range(16):
        try:
            return Config.model_validate(data)
        except ValidationError as exc:
            left = partial.left if partial is not None else {}
            at = [tuple(e["loc"]) for e in exc.errors(include_url=False)]
            under = [[p for p in left if loc[: len(p)] == p] for loc in at]
            if not all(under):  # an error that is not a stand-in's: report it
                raise
            for paths in under:
                for path in paths:
                    _drop(data, path)
    return Config.model_validate(data)


def _drop(data: Any, path: KeyPath) -> None:
    """Remove the key at ``path``; inside a list, the list's own key (an item
    cannot go without shifting the others), so the field takes its default."""
    keys = [i for i, part in enumerate(path) if isinstance(part, str)]
    if not keys:
        return
    path = path[: keys[-1] + 1]
    for part in path[:-1]:
        if not _holds(data, part):
            return
        data = data[part]
    if isinstance(data, dict):
        data.pop(path[-1], None)


def config_resolvers(
    data: Mapping[str, Any],
    origins: Mapping[KeyPath, str],
    environ: Mapping[str, str],
    vault_client: VaultClient | None = None,
) -> dict[str, Resolver]:
    """The reference resolvers for one load: ``vault`` bound to ``vault.url``
    from the same configuration (itself maybe a ``${env:...}``), or to an
    injected client."""

    def factory() -> VaultClient:
        if vault_client is not None:
            return vault_client
        section = data.get("vault")
        url = section.get("url") if isinstance(section, Mapping) else None
        if not isinstance(url, str) or not url:
            raise ConfigError("vault references need vault.url (https://NAME.vault.azure.net)")
        where = f"{_origin(origins, ('vault', 'url'))}: vault.url"
        resolved = resolve_refs(url, environ=environ, where=where, redactor=None)
        plain = resolved.reveal() if isinstance(resolved, Secret) else resolved
        if not plain.startswith("https://"):
            raise ConfigError("vault.url must start with https://")
        return azure_client(plain)

    return {**RESOLVERS, "vault": vault_resolver(factory)}


def _absolute_paths(config: Config, base: Path) -> Config:
    def fix(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else Path(os.path.normpath(base / p))

    ca_file = config.irc.tls_ca_file
    irc = config.irc.model_copy(update={"tls_ca_file": fix(ca_file) if ca_file else None})
    bot = config.bot.model_copy(update={"scripts": tuple(fix(p) for p in config.bot.scripts)})
    store = config.store.model_copy(update={"path": fix(config.store.path)})
    files = tuple(f.model_copy(update={"path": fix(f.path)}) for f in config.files)
    logs = tuple(lg.model_copy(update={"path": fix(lg.path)}) for lg in config.logs)
    deploy = config.deploy.model_copy(
        update={
            "modules": tuple(fix(p) for p in config.deploy.modules),
            "work_dir": fix(config.deploy.work_dir),
        }
    )
    return config.model_copy(
        update={
            "irc": irc,
            "bot": bot,
            "store": store,
            "files": files,
            "logs": logs,
            "deploy": deploy,
        }
    )


def _secrets_in(value: Any) -> list[Secret]:
    if isinstance(value, Secret):
        return [value]
    if isinstance(value, BaseModel):
        return [s for name in type(value).model_fields for s in _secrets_in(getattr(value, name))]
    if isinstance(value, tuple | list):
        return [s for v in value for s in _secrets_in(v)]
    return []


# --- validation errors -> ConfigError ---------------------------------------------------


def _field_at(loc: KeyPath) -> tuple[type[BaseModel] | None, Any]:
    """The model holding the last key of ``loc`` and that key's annotation."""
    model: type[BaseModel] | None = Config
    annotation: Any = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None, None
        field = model.model_fields.get(part)
        if field is None:
            return model, None
        annotation = field.annotation
        parent = model
        model = _model_in(annotation)
        if part == loc[-1]:
            return parent, annotation
    return model, annotation


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _describe(err: Mapping[str, Any], loc: KeyPath, ref_paths: set[KeyPath]) -> str:
    kind = err["type"]
    parent, annotation = _field_at(loc)
    if kind == "extra_forbidden":
        key = loc[-1] if loc else ""
        if parent is None or not isinstance(key, str):
            return "unknown key"
        known = [k for k in parent.model_fields if k not in _RESERVED]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
        return f"unknown key ({hint})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    from_ref = any(loc[: len(p)] == p for p in ref_paths)
    secret_field = (
        annotation is not None and _keeps_secrets(annotation) and (_model_in(annotation) is None)
    )
    if kind != "missing" and not from_ref and not secret_field and _is_scalar(value):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg += f" (got {shown})"
    return msg


def _config_error(
    exc: ValidationError,
    origins: Mapping[KeyPath, str],
    ref_paths: set[KeyPath],
    hide: Redactor | None = None,
) -> ConfigError:
    lines: list[tuple[str, str, str]] = []
    for err in exc.errors(include_url=False):
        loc: KeyPath = tuple(err["loc"])
        detail = _describe(err, loc, ref_paths)
        if hide is not None:
            detail = hide.redact(detail)
        lines.append((_origin(origins, loc), _dotted(loc), detail))
    file, key, detail = lines[0]
    more = "".join(f"\n{f}: {k}: {d}" for f, k, d in lines[1:])
    return ConfigError(detail + more, file=file, key=key)
