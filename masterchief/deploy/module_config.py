"""Per-module config: ``config/modules/<name>.yaml`` and its overlays.

How this works.  A module's config is ``config/modules/<name>.yaml``
deep-merged with ``config/modules/<env>/<name>.yaml``, ``<env>`` the
environment the job runs in, not the bot's ``--env``.  It goes through the
main config's merge and reference machinery: values built from
``${env:...}``, ``${file:...}`` or ``${vault:...}`` come back as ``Secret``
and are registered for log redaction.  ``${vault:...}`` uses the main
configuration's ``vault.url`` (or the client the caller injected), through
``module_resolvers``.  ``module_config_problems`` checks every environment's
overlay a module can run with, for ``!rehash`` and ``module validate``.

One key there is a setting of the bot, not a variable: ``allow_bot_host``
(a literal boolean; ``tool_variables`` leaves it out of what the tool gets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from masterchief.config.engine import config_resolvers, resolve_tree
from masterchief.config.schema import Config
from masterchief.config.secrets import REDACTOR, Redactor, Resolver
from masterchief.config.tree import KeyPath, merge, read_yaml, secrets_in
from masterchief.config.vault import VaultClient
from masterchief.errors import ConfigError

from .manifest import ENV_RE, NAME_RE, Module

__all__ = [
    "BOT_HOST_SETTING",
    "allows_bot_host",
    "load_module_config",
    "module_config_envs",
    "module_config_problems",
    "module_resolvers",
    "tool_variables",
]


def module_resolvers(
    config: Config,
    *,
    environ: Mapping[str, str] | None = None,
    vault_client: VaultClient | None = None,
) -> dict[str, Resolver]:
    """The reference resolvers for module config under ``config``: ``env`` and
    ``file`` as in the main configuration, ``vault`` bound to its (already
    resolved) ``vault.url`` or to ``vault_client`` when one is injected.

    The vault client is made on the first ``${vault:...}`` only, and each
    secret is fetched once per table: build one table per load (one job, one
    ``module validate``) so a secret rotated in Key Vault is seen next time.
    """
    data: dict[str, Any] = {"vault": {"url": config.vault.url}} if config.vault.url else {}
    origins: dict[KeyPath, str] = {("vault", "url"): "the main configuration"}
    env = os.environ if environ is None else environ
    return config_resolvers(data, origins, env, vault_client)


def load_module_config(
    config: Config,
    name: str,
    *,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
    resolvers: Mapping[str, Resolver] | None = None,
) -> dict[str, Any]:
    """``config/modules/<name>.yaml`` deep-merged with ``config/modules/<env>/<name>.yaml``.

    ``env`` is the environment the module runs in (a job's: ``!deploy web
    prod`` reads the ``prod`` overlay whatever ``--env`` the bot runs with);
    None means ``config.env``, the CLI's ``--env``.  Missing files are fine
    (``{}``).  Values built from references are ``Secret`` (registered with
    ``REDACTOR``).  ``resolvers`` defaults to
    ``module_resolvers(config, environ=environ)``; pass a table to share one
    vault client across modules or to inject one.  Errors are ``ConfigError``
    naming the file and the key.
    """
    if not re.fullmatch(NAME_RE, name):
        raise ConfigError(f"{name!r} is not a module name")
    # A path component: a job's environment (a manifest's, ENV_RE) is checked
    # here too, never ".." or a slash; the bot's own was checked by load_config.
    if env is not None and not re.fullmatch(ENV_RE, env):
        raise ConfigError(f"{env[:40]!r} is not an environment name")
    env_name = config.env if env is None else env
    base = config.config_dir / "modules"
    data: dict[str, Any] = {}
    origins: dict[KeyPath, str] = {}
    for file in (base / f"{name}.yaml", base / env_name / f"{name}.yaml"):
        if file.is_file():
            merge(data, read_yaml(file), str(file), origins, ())
    if not data:
        return {}
    _check_settings(data, origins)
    os_env = os.environ if environ is None else environ
    pieces: dict[int, Redactor] = {}
    resolved: dict[str, Any] = resolve_tree(
        data,
        (),
        origins=origins,
        environ=os_env,
        base_dir=config.project_dir,
        ref_paths=set(),
        found=pieces,
        resolvers=module_resolvers(config, environ=os_env) if resolvers is None else resolvers,
    )
    for secret in secrets_in(resolved):
        REDACTOR.register(secret)
        for piece in pieces.get(id(secret), Redactor()).values():
            REDACTOR.register(piece)
    return resolved


def module_config_envs(config: Config, module: Module) -> list[str]:
    """The environments whose module config ``module`` can be run with: those
    its manifest names, and any ``config/modules/<env>/`` holding an overlay
    for it (a typo'd or retired environment's file is still checked)."""
    envs = set(module.manifest.environments)
    base = config.config_dir / "modules"
    if base.is_dir():
        for sub in base.iterdir():
            if (
                re.fullmatch(ENV_RE, sub.name)
                and sub.is_dir()
                and (sub / f"{module.name}.yaml").is_file()
            ):
                envs.add(sub.name)
    return sorted(envs)


def module_config_problems(
    config: Config, module: Module, resolvers: Mapping[str, Resolver]
) -> list[str]:
    """Every distinct ``ConfigError`` of ``module``'s config, loaded for each of
    ``module_config_envs`` (a broken base file is said once, not per environment)."""
    problems: list[str] = []
    for env in module_config_envs(config, module):
        try:
            load_module_config(config, module.name, env=env, resolvers=resolvers)
        except ConfigError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    return problems


BOT_HOST_SETTING = "allow_bot_host"
"""Module config key: this module may run against the bot's own host (with
an owner's request).  A setting of the bot, never a variable of the tool."""
_SETTINGS = frozenset({BOT_HOST_SETTING})


def tool_variables(config: Mapping[str, Any]) -> dict[str, Any]:
    """Module config without the bot's own settings: what the tool gets."""
    return {k: v for k, v in config.items() if k not in _SETTINGS}


def allows_bot_host(config: Mapping[str, Any]) -> bool:
    """Whether module config says ``allow_bot_host: true`` (literally)."""
    return config.get(BOT_HOST_SETTING) is True


def _check_settings(data: Mapping[str, Any], origins: Mapping[KeyPath, str]) -> None:
    value = data.get(BOT_HOST_SETTING)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(
            "should be true or false (a literal, not a reference)",
            file=origins.get((BOT_HOST_SETTING,)),
            key=BOT_HOST_SETTING,
        )
