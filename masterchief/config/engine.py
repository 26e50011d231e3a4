"""Configuration: YAML files in, a typed frozen ``Config`` out.

How this works.  ``load_config`` reads ``config/global/config.yaml`` and,
when present, ``config/environments/<env>.yaml``; the second is deep-merged
over the first (mappings merge key by key, any other value replaces).  While
merging it records which file supplied each key, so every error can name the
file the operator has to edit.  String values are then passed through
``resolve_refs`` (``${env:NAME}``, ``${file:/path}``) and the result is
validated by the pydantic models of schema.py, which forbid unknown keys, so
a typo is an error and not a silently ignored setting.  Relative paths (``bot.scripts``,
``store.path``, ``irc.tls_ca_file``) are made absolute against the project
directory (the parent of the config directory).

A reference yields a ``Secret``.  Fields typed ``SecretValue`` keep it (and
its value is registered for log redaction); any other field takes the plain
value, so ``host: ${env:IRC_HOST}`` works.  Error messages never include a
value that came from a reference or sits in a secret field.

``build_config`` is the same pipeline from a plain dict, for tests.  Reading
and merging files with their origins is tree.py; turning a validation error
into ``file: key: detail`` is validation.py.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

from pydantic import (
    ValidationError,
)

from masterchief.config.secrets import REDACTOR, RESOLVERS, Redactor, Resolver, Secret, resolve_refs
from masterchief.config.vault import VaultClient, azure_client, vault_resolver
from masterchief.errors import ConfigError

from .fields import reveal_all
from .schema import RESERVED_KEYS, Config
from .tree import (
    KeyPath,
    dotted,
    drop_key,
    mark_origins,
    merge,
    origin_of,
    read_yaml,
    secrets_in,
)
from .validation import keeps_secrets, located, model_in

__all__ = [
    "DEFAULT_ENV",
    "ConfigError",
    "build_config",
    "config_resolvers",
    "environments",
    "load_config",
    "require_environment",
    "resolve_tree",
]

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
    schema: type[Config] = Config,
) -> Config:
    """Read, merge, resolve and validate the configuration in ``config_dir``.

    ``schema`` is ``Config`` or a subclass with the sections that source
    families bring (``schema.extended``); a rehash reloads with the running
    config's own type.

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
    data = read_yaml(global_file)
    origins: dict[KeyPath, str] = {}
    mark_origins(data, str(global_file), origins, ())
    env_file = config_dir / "environments" / f"{env}.yaml"
    if env_file.is_file():
        merge(data, read_yaml(env_file), str(env_file), origins, ())
    return _build(
        data,
        origins,
        project_dir=config_dir.resolve().parent,
        config_dir=config_dir.resolve(),
        env=env,
        environ=os.environ if environ is None else environ,
        vault_client=vault_client,
        partial=_Partial(sections, lenient) if sections is not None or lenient else None,
        schema=schema,
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
    schema: type[Config] = Config,
) -> Config:
    """Validate plain data (as if read from one file named ``source``)."""
    plain = reveal_all(dict(data))  # a deep copy; secret fields re-wrap their values
    origins: dict[KeyPath, str] = {}
    mark_origins(plain, source, origins, ())
    return _build(
        plain,
        origins,
        project_dir=Path(project_dir),
        config_dir=Path(project_dir) / "config",
        env=env,
        environ={} if environ is None else environ,
        vault_client=vault_client,
        schema=schema,
    )


def resolve_tree(
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
    if isinstance(value, dict | list):
        inner = functools.partial(
            resolve_tree,
            origins=origins,
            environ=environ,
            base_dir=base_dir,
            ref_paths=ref_paths,
            found=found,
            resolvers=resolvers,
            every=every,
            partial=partial,
        )
        if isinstance(value, dict):
            return {k: inner(v, (*path, k)) for k, v in value.items()}
        return [inner(v, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        if partial is not None and not partial.wanted(path):
            return partial.leave(path, value, "not resolved")
        parts = Redactor()  # this value's resolved pieces, registered if it stays secret
        try:
            result = resolve_refs(
                value,
                environ=environ,
                where=f"{origin_of(origins, path)}: {dotted(path)}",
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
    schema: type[Config] = Config,
) -> Config:
    for name in RESERVED_KEYS:
        if name in data:
            raise ConfigError(
                "unknown key (set by the loader, not in YAML)",
                file=origin_of(origins, (name,)),
                key=name,
            )
    ref_paths: set[KeyPath] = set()
    pieces: dict[int, Redactor] = {}
    every: list[tuple[bool, Redactor, str]] = []
    resolved = resolve_tree(
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
        config = _validate({**resolved, **loader}, partial, schema)
    except ValidationError as exc:
        # A validator may quote the value it refused: no resolved reference
        # (a secret put in the wrong field) may reach the message.
        hide = Redactor()
        for _, parts, _ in every:
            for piece in parts.values():
                hide.register(piece)
        raise _config_error(exc, origins, ref_paths, hide, schema) from None
    for secret in secrets_in(config):
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


def _validate(data: dict[str, Any], partial: _Partial | None, schema: type[Config]) -> Config:
    """``Config.model_validate``; in a partial load a stand-in that a field
    refuses (``port: ${env:PORT}``) is dropped, so the field takes its default
    (the display still shows the reference)."""
    for _ in range(16):
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            left = partial.left if partial is not None else {}
            at = [tuple(e["loc"]) for e in exc.errors(include_url=False)]
            under = [[p for p in left if loc[: len(p)] == p] for loc in at]
            if not all(under):  # an error that is not a stand-in's: report it
                raise
            for paths in under:
                for path in paths:
                    drop_key(data, path)
    return schema.model_validate(data)


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
        where = f"{origin_of(origins, ('vault', 'url'))}: vault.url"
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


def _config_error(
    exc: ValidationError,
    origins: Mapping[KeyPath, str],
    ref_paths: set[KeyPath],
    hide: Redactor | None = None,
    schema: type[Config] = Config,
) -> ConfigError:
    def shown(loc: KeyPath, annotation: Any) -> bool:
        # never a value that came from a reference or sits in a secret field
        from_ref = any(loc[: len(p)] == p for p in ref_paths)
        secret_field = (
            annotation is not None and keeps_secrets(annotation) and model_in(annotation) is None
        )
        return not from_ref and not secret_field

    file, key, detail = located(
        exc,
        schema,
        lambda loc: origin_of(origins, loc),
        shown=shown,
        hidden_keys=RESERVED_KEYS,
        hide=hide,
    )
    return ConfigError(detail, file=file, key=key)
