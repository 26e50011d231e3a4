"""What the built-in commands may use of the running bot: narrow Protocols.

The commands (``core.py``, ``deploy.py``) are handed the runtime, but see it
only through these: the binding table, the users, the IRC connection's
read-only facts, and a handful of actions (``rehash``, ``resolve``).  The
runtime satisfies them structurally; nothing here imports it, so the
commands sit below the composition root, never in a cycle with it.
``RehashReport`` lives here because the ``!rehash`` command is who reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from ..bindings.dispatcher import Dispatcher
from ..bindings.event import Event
from ..bindings.registry import BindingTable
from ..bindings.scripts import LoadResult
from ..config.schema import Config
from ..deploy.catalog import ModuleLoader
from ..identity.principal import Identity
from ..identity.users import UserTable
from ..irc.supervisor import IrcBot
from ..sources.runner import SourceRunner
from ..store.api import CheckpointStore, FileLedgerStore, JobStore, UserStore

__all__ = ["CoreHost", "DeployHost", "RehashReport"]


@dataclasses.dataclass(slots=True)
class RehashReport:
    """What a rehash did: scripts, configuration, modules, sources."""

    scripts: list[LoadResult]
    config_error: str | None = None
    restart_needed: tuple[str, ...] = ()
    module_errors: list[str] = dataclasses.field(default_factory=list)  # one per broken module
    modules_kept: list[str] = dataclasses.field(default_factory=list)  # broken now, old version on
    module_config_errors: dict[str, str] = dataclasses.field(default_factory=dict)  # by module
    modules_changed: list[str] = dataclasses.field(default_factory=list)
    sources_changed: list[str] = dataclasses.field(default_factory=list)  # "rest:x added"


class CoreStore(UserStore, FileLedgerStore, CheckpointStore, Protocol):
    """The store as ``!adduser``/``!chattr`` and ``!files`` use it."""


class CoreHost(Protocol):
    """What ``!help !whoami !binds !rehash !status !adduser !chattr !files
    !sources`` and the CTCP replies use."""

    @property
    def table(self) -> BindingTable: ...

    @property
    def dispatcher(self) -> Dispatcher: ...

    @property
    def users(self) -> UserTable: ...

    @property
    def store(self) -> CoreStore: ...

    @property
    def irc(self) -> IrcBot: ...

    @property
    def sources(self) -> SourceRunner: ...

    @property
    def config(self) -> Config: ...

    @property
    def command_prefix(self) -> str: ...

    @property
    def started(self) -> float: ...

    @property
    def casemapping(self) -> str: ...

    def resolve(self, ev: Event) -> Identity | None: ...

    def rehash(self) -> RehashReport: ...


class DeployHost(Protocol):
    """What ``!deploy !plan !approve !deny !cancel !jobs !job !modules`` use."""

    @property
    def table(self) -> BindingTable: ...

    @property
    def store(self) -> JobStore: ...

    @property
    def irc(self) -> IrcBot: ...

    @property
    def modules(self) -> ModuleLoader: ...

    @property
    def config(self) -> Config: ...

    @property
    def command_prefix(self) -> str: ...

    def resolve(self, ev: Event) -> Identity | None: ...

    def module_config(self, name: str, env: str) -> dict[str, Any]: ...
