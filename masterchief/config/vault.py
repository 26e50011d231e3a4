"""``${vault:name}``: secrets from Azure Key Vault.

How this works.  The config loader asks ``vault_resolver`` for a resolver
bound to a client factory.  The client is created on the first reference
only (a config without vault references never imports Azure), and each
secret name is fetched once per load.  The real client is
``azure.keyvault.secrets.SecretClient`` with ``DefaultAzureCredential``
(managed identity, workload identity, environment, Azure CLI), from the
optional extra ``masterchief[azure]``; tests inject any object with a
``get_secret(name)`` method returning something with a ``.value``.

Errors name the file and key (through ``ResolveContext.where``) and the
secret's name, never a value and never the Azure exception's text (it can
quote request URLs and tokens): only its class name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from masterchief.config.secrets import ResolveContext, Resolver
from masterchief.errors import ConfigError

__all__ = ["VaultClient", "azure_client", "unfetched_vault_resolver", "vault_resolver"]

# Key Vault secret names: 1-127 characters, letters, digits and dashes.
_SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")


class VaultClient(Protocol):
    def get_secret(self, name: str) -> Any: ...


def azure_client(url: str) -> VaultClient:
    """A Key Vault client for ``url`` using the default Azure credential chain."""
    try:
        from azure.identity import DefaultAzureCredential  # type: ignore[import-not-found]
        from azure.keyvault.secrets import SecretClient  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            "vault references need the azure extra: pip install 'masterchief[azure]'"
        ) from None
    client: VaultClient = SecretClient(vault_url=url, credential=DefaultAzureCredential())
    return client


def _check_name(name: str, ctx: ResolveContext) -> None:
    if not _SECRET_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid vault secret name {name[:40]!r} (letters, digits and dashes)",
            key=ctx.where,
        )


def unfetched_vault_resolver(name: str, ctx: ResolveContext) -> str:
    """A ``${vault:name}`` resolver for checking a file's shape only: the name
    is checked, nothing is fetched (a Key Vault call blocks; ``!rehash`` runs
    on the event loop), and the value is a placeholder nobody can use."""
    _check_name(name, ctx)
    return "unfetched-vault-secret"


def vault_resolver(factory: Callable[[], VaultClient]) -> Resolver:
    """A ``${vault:name}`` resolver that creates its client on first use."""
    client: list[VaultClient] = []
    cache: dict[str, str] = {}

    def resolve(name: str, ctx: ResolveContext) -> str:
        _check_name(name, ctx)
        if name in cache:
            return cache[name]
        if not client:
            try:
                client.append(factory())
            except ConfigError as exc:
                raise ConfigError(exc.detail, key=ctx.where) from None
        try:
            secret = client[0].get_secret(name)
        except Exception as exc:
            raise ConfigError(_explain(name, exc), key=ctx.where) from None
        value = getattr(secret, "value", None)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"vault secret {name} is empty", key=ctx.where)
        cache[name] = value
        return value

    return resolve


def _explain(name: str, exc: Exception) -> str:
    kind = type(exc).__name__
    if kind == "ResourceNotFoundError":
        return f"vault secret {name} not found"
    if kind in ("ClientAuthenticationError", "CredentialUnavailableError"):
        return f"vault: cannot authenticate to read {name} ({kind})"
    return f"vault: cannot read {name} ({kind})"
