"""The seam every input plugs into: ``Source``, ``SourceFamily``, ``EventSink``.

How this works
--------------
A **source** reads one thing -- a REST endpoint, a watched folder, a log
file, the clock, webhook intake -- and turns what it reads into Events for
the dispatcher, which it sees only as an ``EventSink``:

- ``submit(*chain)`` queues without waiting (False when the queue is full);
- ``await put(*chain, on_done=ack)`` waits for room: a source that must not
  lose data acknowledges upstream (commits an offset, marks a row, moves a
  file) only in ``on_done``, called once every handler has finished;
- ``wants(type, key)`` tells whether any binding would match, so a source can
  skip building Events nobody listens to (a busy log file).

``run(sink, started)`` runs until cancelled and sets ``started`` once it is
listening (the runtime logs "ready" after every source has).  ``status()``
is a ``SourceStatus`` (``!sources``, ``masterchief sources status``,
``/healthz``); ``metrics()`` adds family-specific metrics to the counters
every source keeps in its ``SourceCounters`` (events, errors, last success,
pending), which the runner exports for all of them alike.

A **family** is a kind of source with its config section: it names the
section and the bind types it feeds, reads its entries from a ``Config``
(``entries``), and builds one source per entry (``build(entry, deps)``).
``families.py`` is the one explicit list; adding Kafka means a folder and one
line there.  ``SourceDeps`` is what a family may use -- narrow interfaces,
never the runtime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from ..bindings.event import Event, Reply
from ..metrics import Family
from ..store.api import Store

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "Announce",
    "EventSink",
    "ListFamily",
    "SharedHttp",
    "Source",
    "SourceCounters",
    "SourceDeps",
    "SourceFamily",
    "SourceState",
    "SourceStatus",
    "WebhookMount",
]

OnDone = Callable[[], object] | None
Announce = Callable[[str, str], Awaitable[None]]
"""``announce(channel, text)``: a durable line through the outbox."""

SourceState = Literal["starting", "ok", "idle", "failing", "stopped"]


class EventSink(Protocol):
    """The dispatcher as a source sees it."""

    def submit(self, *chain: Event, on_done: OnDone = None) -> bool: ...

    async def put(self, *chain: Event, on_done: OnDone = None) -> None: ...

    def wants(self, type: str, key: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One source as ``!sources`` shows it.  ``detail`` is safe to show: no
    secrets, no exception text (a short reason, as users see elsewhere)."""

    family: str
    name: str
    state: SourceState
    detail: str = ""
    events: int = 0
    errors: int = 0
    pending: int | None = None  # waiting to be read or handled, when the source knows
    last_success: float | None = None  # epoch seconds

    @property
    def qualified(self) -> str:
        return f"{self.family}:{self.name}"


@dataclass(slots=True)
class SourceCounters:
    """What every source counts; ``status()`` reads them."""

    events: int = 0
    errors: int = 0
    last_success: float | None = None
    last_error: str | None = None  # a short, safe reason

    def event(self, n: int = 1) -> None:
        self.events += n
        self.last_success = time.time()

    def success(self) -> None:
        self.last_success = time.time()
        self.last_error = None

    def error(self, reason: str) -> None:
        self.errors += 1
        self.last_error = reason


class Source(Protocol):
    """One running input."""

    @property
    def family(self) -> str: ...

    @property
    def name(self) -> str: ...

    async def run(self, sink: EventSink, started: asyncio.Event) -> None: ...

    def status(self) -> SourceStatus: ...

    def metrics(self) -> list[Family]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceDeps:
    """What a family may use to build its sources."""

    store: Store | None  # None only in tests of sources that keep no state
    announce: Announce
    project_dir: Path = field(default_factory=Path)
    # One HTTP client session for every source that polls (opened on first use).
    http: Callable[[], Awaitable[aiohttp.ClientSession]] | None = None
    webhooks: WebhookMount | None = None  # the web server, when it runs
    # The event log's outcome of a dispatched Event id (replays report it).
    outcome: Callable[[str], str | None] | None = None
    # Where Events rebuilt from the log answer (replays of IRC commands).
    reply: Reply | None = None

    def stored(self) -> Store:
        """The store, for sources that cannot work without one."""
        if self.store is None:
            raise RuntimeError("this source needs the store")
        return self.store


class WebhookMount(Protocol):
    """The web server as webhook intake sees it: ``/webhooks/*`` is answered
    by the mounted intake (a rehash mounts a new one in place of the old)."""

    def mount_webhooks(self, intake: Any) -> None: ...

    def unmount_webhooks(self, intake: Any) -> None: ...


class SharedHttp:
    """One HTTP client session for every source that polls, opened on first
    use (a bot with no poller never loads aiohttp's client side) and closed
    by the runtime.  Sources share connections, never cookies."""

    USER_AGENT = "MasterChief"

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(
                headers={"User-Agent": self.USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SourceFamily(Protocol):
    """A kind of source: its config section, bind types and builder."""

    @property
    def name(self) -> str: ...

    @property
    def section(self) -> str:
        """The config section its entries live in (``rest``, ``files`` ...)."""
        ...

    @property
    def bind_types(self) -> tuple[str, ...]: ...

    @property
    def entry_model(self) -> type[BaseModel] | None:
        """The model of one entry when the family brings its own section
        (``config_schema`` adds it to the configuration); None when the
        section is one of the built-in ones."""
        ...

    def entries(self, config: Any) -> Sequence[Any]:
        """The family's entries in ``config``, each with a unique ``name``;
        equal entries mean an unchanged source (``!rehash`` keeps it running)."""
        ...

    def build(self, entry: Any, deps: SourceDeps) -> Source: ...


@dataclass(frozen=True, slots=True)
class ListFamily:
    """A family whose config section is a list of named entries, one source
    each (``rest:``, ``files:``, ``logs:``): only ``make`` differs."""

    name: str
    bind_types: tuple[str, ...]
    make: Callable[[Any, SourceDeps], Source]
    entry_model: type[BaseModel] | None = None

    @property
    def section(self) -> str:
        return self.name

    def entries(self, config: Any) -> Sequence[Any]:
        entries: Sequence[Any] = getattr(config, self.section)
        return entries

    def build(self, entry: Any, deps: SourceDeps) -> Source:
        return self.make(entry, deps)
