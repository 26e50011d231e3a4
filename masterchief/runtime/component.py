"""What every long-lived part of the running bot is to the runtime: a Component.

How this works
--------------
``run(started)`` runs until cancelled and sets ``started`` once the part
serves (the runtime logs "ready" when IRC is registered and every part has
started).  ``metrics()`` returns ``Family`` values read at scrape time from
counters the part already keeps.  ``reconfigure(config)`` applies a new
configuration (``!rehash``) and returns False when what changed needs a
restart -- the component's ``name`` is then what the rehash reply lists, so
a component named after its config section (``irc``, ``web``, ``store``)
tells the operator which section it was.

The domain classes (the dispatcher, the pacer, the outbox, the IRC client,
the sources) stay free of this protocol: ``components.py`` adapts each of
them, so the lifecycle is the runtime's concern alone and none of them
imports it.  ``SourceRunner`` and ``WebServer`` run as they are.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config.schema import Config
    from ..metrics import Family

__all__ = ["Component"]


class Component(Protocol):
    @property
    def name(self) -> str: ...

    async def run(self, started: asyncio.Event) -> None: ...

    def metrics(self) -> list[Family]: ...

    def reconfigure(self, config: Config) -> bool:
        """Apply ``config``; False when what changed needs a restart."""
        ...
