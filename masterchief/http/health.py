"""What ``GET /healthz`` says: each component's state, and one verdict.

How this works
--------------
Each part of the bot reports a ``ComponentHealth``: ``ok``, ``down`` (the
bot cannot do its job: IRC unreachable, the store not answering, the
webhook port not bound) or ``degraded`` (it works, but something it reads
from is failing: a REST API that errors).  ``summarize`` turns the table
into the HTTP answer: 503 when any component is down, else 200, with a body
naming every component that is not ok and why, so a probe or a person
reading it sees the reason without the logs.  An outside service failing
is not the bot's outage: restarting the bot would not fix it, so it is
``degraded`` and answered 200.

No I/O here except ``probe_store`` (one cheap read under a deadline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from masterchief.config.secrets import REDACTOR

__all__ = [
    "ComponentHealth",
    "HealthInfo",
    "State",
    "probe_store",
    "summarize",
]

State = Literal["ok", "degraded", "down"]

STORE_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    """One component's state; ``reason`` (one line) says why it is not ok."""

    state: State = "ok"
    reason: str = ""

    @classmethod
    def down(cls, reason: str) -> ComponentHealth:
        return cls("down", reason)

    @classmethod
    def degraded(cls, reason: str) -> ComponentHealth:
        return cls("degraded", reason)


OK = ComponentHealth()


@dataclass(frozen=True, slots=True)
class HealthInfo:
    """What the running bot adds to the web server's own view: its
    components (``irc``, ``sources``) and queue depths."""

    components: Mapping[str, ComponentHealth] = field(default_factory=dict)
    queues: Mapping[str, int] = field(default_factory=dict)


def _line(text: str) -> str:
    # a server's ERROR text or an exception name: one line, bounded, and no
    # registered secret in it (the body may be read by anyone who can reach it)
    return REDACTOR.redact(" ".join(text.split()))[:300]


def summarize(components: Mapping[str, ComponentHealth]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for ``components``: 503 when any is
    down.  ``status`` is ``ok``, ``degraded`` or ``unhealthy``; ``reason``
    lists the components that are not ok (down first)."""
    down = [n for n, c in components.items() if c.state == "down"]
    degraded = [n for n, c in components.items() if c.state == "degraded"]
    body: dict[str, Any] = {"status": "unhealthy" if down else "degraded" if degraded else "ok"}
    if down or degraded:
        body["reason"] = "; ".join(
            f"{n} {components[n].state}: {_line(components[n].reason)}" for n in down + degraded
        )
        body["unhealthy"] = down + degraded
    body["components"] = {
        name: {"status": c.state, **({"reason": _line(c.reason)} if c.state != "ok" else {})}
        for name, c in components.items()
    }
    return (503 if down else 200), body


async def probe_store(
    read: Callable[[], Awaitable[object]], timeout: float = STORE_PROBE_TIMEOUT_S
) -> ComponentHealth:
    """The store answers one cheap read within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            await read()
    except TimeoutError:
        return ComponentHealth.down(f"no answer within {timeout:g}s")
    except Exception as exc:  # the type only: a message could hold a path
        return ComponentHealth.down(f"read failed ({type(exc).__name__})")
    return OK
