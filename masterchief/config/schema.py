"""The configuration's typed, frozen models: what every section may hold.

How this works.  Every model forbids unknown keys, so a typo is an error and
not a silently ignored setting.  A reference (``${env:...}``) yields a
``Secret``: fields typed ``SecretValue`` (or ``HookSecret``, never empty;
see fields.py) keep it -- it prints and dumps as ``***`` -- while any other
field takes the plain value, so ``host: ${env:IRC_HOST}`` works.  ``Config``
is the whole configuration; engine.py loads, merges and validates files
into it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from masterchief.config.secrets import REDACTOR, Secret

from .fields import (
    CHANNEL_RE,
    NO_SPACE_RE,
    Channels,
    HookSecret,
    Model,
    SecretValue,
    Token,
    check_nick,
)
from .tree import KeyPath, put_at

__all__ = [
    "RESERVED_KEYS",
    "AdminConfig",
    "AlertmanagerHook",
    "BasicAuthConfig",
    "BotConfig",
    "ChannelConfig",
    "Config",
    "DeployConfig",
    "EventsConfig",
    "FilesConfig",
    "FloodConfig",
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
    "StoreConfig",
    "UsersConfig",
    "VaultConfig",
    "WebConfig",
    "WebhooksConfig",
]


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, dict):
        return {k: _redact_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_strings(v) for v in value]
    return value


class ChannelConfig(Model):
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
        if not CHANNEL_RE.fullmatch(value):
            raise ValueError("not a valid channel name (it starts with #, &, + or !)")
        return value

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str | None) -> str | None:
        if value is not None and (not NO_SPACE_RE.fullmatch(value) or "," in value):
            raise ValueError("a channel key has no spaces or commas")
        return value


class SaslConfig(Model):
    username: str = Field(min_length=1)
    password: SecretValue


class OutputConfig(Model):
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


class IrcConfig(Model):
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
        return check_nick(value)

    @field_validator("alt_nicks")
    @classmethod
    def _check_alt_nicks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for nick in value:
            check_nick(nick)
        return value

    @model_validator(mode="after")
    def _check_backoff(self) -> IrcConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class FloodConfig(Model):
    """Eggdrop-style flood limits.  More than ``commands`` commands (pub/msg
    bindings, built-ins included) from one user within ``per_s`` seconds:
    told once, then ignored for ``ignore_s``.  CTCP requests are answered at
    most ``ctcp_replies`` times per ``ctcp_per_s`` seconds for the whole bot."""

    commands: int = Field(default=5, ge=1)
    per_s: float = Field(default=10.0, gt=0)
    ignore_s: float = Field(default=60.0, ge=0)
    ctcp_replies: int = Field(default=3, ge=0)
    ctcp_per_s: float = Field(default=60.0, gt=0)


class BotConfig(Model):
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


class UsersConfig(Model):
    """Who the user table trusts.  ``hostmask_flags_on_account_networks``:
    on a network with services accounts, a record matched by hostmask (one
    without an account) carries flags above +v and may approve deploys.  Off
    by default: there an account is proof, a hostmask only a claim.  Weak
    hostmasks (``*!carol@*``) never carry them, either way."""

    hostmask_flags_on_account_networks: bool = False


class StoreConfig(Model):
    path: Path = Path("var/masterchief.db")


# --- web, webhooks, REST polling, outbox (issue 3) ---------------------------------

_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class AdminConfig(Model):
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


class WebConfig(Model):
    """The HTTP server for webhooks and the API.  ``port: 0`` picks a free port.
    Without ``admin``, ``/metrics`` and ``/healthz`` are open on this port."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1, pattern=r"^\S+$")
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    admin: AdminConfig | None = None


class _Hook(Model):
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


class BasicAuthConfig(Model):
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


class WebhooksConfig(Model):
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


class RestAuthConfig(Model):
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


class RestPollConfig(Model):
    name: str = Field(pattern=_NAME)
    url: str = Field(pattern=r"^https?://\S+$")
    interval_s: float = Field(default=60.0, ge=1.0)
    timeout_s: float = Field(default=10.0, gt=0)
    auth: RestAuthConfig = RestAuthConfig()
    select: str | None = None  # JMESPath
    emit: Literal["on_change", "every_poll"] = "on_change"
    channels: Channels = ()


class OutboxConfig(Model):
    """Announcements wait here (durably) until IRC takes them.  Entries older
    than ``expire_after_s`` when the bot gets back are summarised, not replayed;
    those older than ``delayed_after_s`` when sent carry ``[delayed 3m]``."""

    expire_after_s: float = Field(default=1800.0, gt=0)
    delayed_after_s: float = Field(default=60.0, ge=0)


# --- watched folders and tailed logs (issue 4) ---------------------------------------


class FilesConfig(Model):
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


class LogConfig(Model):
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


class DeployConfig(Model):
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


class EventsConfig(Model):
    """The event log: what happened, for audit and replay."""

    enabled: bool = True
    retention_days: float = Field(default=30.0, gt=0)
    max_payload_bytes: int = Field(default=65_536, ge=1024)


class VaultConfig(Model):
    """Azure Key Vault for ``${vault:name}`` references (``masterchief[azure]``)."""

    url: str | None = Field(default=None, pattern=r"^https://\S+$")


RESERVED_KEYS = ("project_dir", "config_dir", "env", "unresolved")

Unresolved = tuple[tuple[KeyPath, str], ...]
"""References a partial load left unresolved: (key path, how to show it)."""


class Config(Model):
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
            put_at(data, path, shown)
        return data


@functools.cache
def _extended(sections: tuple[tuple[str, type[BaseModel]], ...]) -> type[Config]:
    fields: dict[str, Any] = {
        name: (tuple.__class_getitem__((model, ...)), ()) for name, model in sections
    }
    extended: type[Config] = create_model("Config", __base__=Config, **fields)
    return extended


def extended(sections: Mapping[str, type[BaseModel]]) -> type[Config]:
    """``Config`` with more top-level sections, each a list of entries of its
    model (what a source family brings: ``streams: [...]``), validated like
    every other section -- unknown keys refused, errors as ``file: key:
    detail``.  The same sections give the same class."""
    clash = sorted(set(sections) & set(Config.model_fields))
    if clash:
        raise ValueError(f"config sections already defined: {', '.join(clash)}")
    if not sections:
        return Config
    return _extended(tuple(sorted(sections.items(), key=lambda kv: kv[0])))
