"""Announcements: the built-in bindings that turn webhook deliveries and REST
polls into one readable line each in the provider's channels.

How this works
--------------
``install(app)`` binds, in one atomic swap, under the owner
``builtin:webhooks``:

- one ``webhook`` binding per source mask: ``github/*``, ``gitlab/*``,
  ``jenkins/*``, ``alertmanager/*``, ``pagerduty/*``, ``generic/*``;
- one ``rest`` binding (``rest/*``) for the REST pollers;
- ``event`` bindings for the pollers' ``rest.failing``/``rest.recovered``.

They are ordinary bindings: ``binds`` lists them with hit counts, and a user
script that binds the same key and returns True replaces the built-in line
(the dispatcher skips built-ins of the same stage after a true return).

Each Event goes ``extract()`` (the one place that knows how intake and the
pollers wrap a payload) -> a pure formatter (``formatters/``) -> the
targets configured for that provider (``targets_for()``: its channels, as
IRC ``Target``s) -> the outbox's ``announce(target, text, kind=,
fold_key=, meta=)``.  Nothing a payload
does escapes a handler: a formatter that raises is logged and gives no
line; a failing ``announce`` is logged and the other channels still get
theirs.  Lines naming a build (``Announcement.once``) are posted once: the
Jenkins plugin reports a result at both COMPLETED and FINALIZED.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..bindings.event import Event
from ..bindings.registry import BindingTable
from ..config.schema import Config
from .formatters import (
    PROVIDERS,
    Announcement,
    clean,
    format_rest,
    format_rest_status,
)
from .targets import Target

__all__ = [
    "OWNER",
    "Announce",
    "AnnounceStats",
    "Announcer",
    "Delivery",
    "extract",
    "install",
    "targets_for",
]

log = logging.getLogger("masterchief.announce")

OWNER = "builtin:webhooks"
WEBHOOK_MASKS = tuple(f"{source}/*" for source in PROVIDERS)
REST_STATUS_KEYS = ("rest.failing", "rest.recovered")


class Announce(Protocol):
    """``outbox.announce``: queue ``text`` for ``target`` durably."""

    def __call__(
        self,
        target: Target,
        text: str,
        *,
        kind: str = "text",
        fold_key: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Awaitable[object]: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """What an Event says, as the formatters need it."""

    source: str  # github ... pagerduty | generic | rest | rest-status (poller notices)
    name: str  # the event (push, firing ...), a generic hook's or a poller's name
    payload: object  # the provider's JSON
    changed: bool = True  # rest: the selection differs from the previous poll


def extract(ev: Event) -> Delivery | None:
    """The delivery an Event carries, or None for Events not announced here.

    Webhook Events: ``key="<source>/<name>"``, ``payload`` = the parsed JSON.
    REST Events: ``key=rest/<poller>`` (a bare ``<poller>`` too), ``payload`` = the
    poller's envelope ``{"name", "data", "changed", "hash", ...}`` whose
    ``data`` is the selected JSON (a bare selection is accepted too).
    """
    if ev.type == "webhook":
        source, sep, name = ev.key.partition("/")
        if not sep or not name:
            return None
        return Delivery(source.lower(), name, ev.payload)
    if ev.type == "rest":
        name = ev.key.removeprefix("rest/")
        body = ev.payload
        if isinstance(body, Mapping) and "data" in body and "hash" in body:
            return Delivery("rest", name, body.get("data"), body.get("changed") is not False)
        return Delivery("rest", name, body)
    if ev.type == "event" and ev.key in REST_STATUS_KEYS:
        body = ev.payload
        poller = body.get("name") if isinstance(body, Mapping) else None
        return Delivery("rest-status", poller if isinstance(poller, str) else "", body)
    return None


def targets_for(config: Config, delivery: Delivery) -> tuple[Target, ...]:
    """The channels configured for ``delivery``'s provider, poller or hook."""
    hooks = config.webhooks
    if delivery.source in ("rest", "rest-status"):
        poller = next((r for r in config.rest if r.name == delivery.name), None)
        found = poller.channels if poller is not None else ()
    elif delivery.source == "generic":
        hook = next((g for g in hooks.generic if g.name == delivery.name), None)
        found = hook.channels if hook is not None else ()
    else:
        named = {
            "github": hooks.github,
            "gitlab": hooks.gitlab,
            "jenkins": hooks.jenkins,
            "alertmanager": hooks.alertmanager,
            "pagerduty": hooks.pagerduty,
        }.get(delivery.source)
        found = named.channels if named is not None else ()
    return tuple(Target.parse(channel) for channel in dict.fromkeys(found))


def _source(delivery: Delivery) -> str:
    if delivery.source in ("generic", "rest", "rest-status"):
        return clean(delivery.name, 40) or delivery.source
    return delivery.source


def _format(ev: Event, delivery: Delivery) -> list[Announcement]:
    if delivery.source == "rest":
        return format_rest(delivery.name, delivery.payload, changed=delivery.changed)
    if delivery.source == "rest-status":
        return format_rest_status(ev.key, delivery.payload)
    formatter = PROVIDERS.get(delivery.source)
    if formatter is None:
        return []
    return formatter(delivery.name, delivery.payload)


@dataclass(slots=True)
class AnnounceStats:
    events: int = 0  # Events that gave at least one line
    lines: int = 0  # lines handed to announce (one per channel)
    unrouted: int = 0  # lines with no channel configured
    repeats: int = 0  # lines skipped: already announced (Announcement.once)
    errors: int = 0  # formatter bugs and failed announce calls


class Announcer:
    """Formats Events and announces the lines; its ``handle`` is the binding."""

    def __init__(
        self, config: Callable[[], Config], announce: Announce, *, remember: int = 1024
    ) -> None:
        self._config = config
        self._announce = announce
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self.stats = AnnounceStats()

    def plan(self, ev: Event) -> list[tuple[Target, Announcement]]:
        """The (target, line) pairs ``ev`` gives, each line's ``meta`` naming
        its ``source`` (``github``, a generic hook's or a poller's name) for
        the outbox's expiry summaries.  Never raises."""
        delivery = extract(ev)
        if delivery is None:
            return []
        try:
            lines = _format(ev, delivery)
        except Exception:  # a formatter bug: log it, announce nothing, carry on
            self.stats.errors += 1
            log.exception("formatting %s %s failed; nothing announced", ev.type, ev.key)
            return []
        lines = [a for a in lines if self._first_time(a)]
        if not lines:
            return []
        self.stats.events += 1
        targets = targets_for(self._config(), delivery)
        if not targets:
            self.stats.unrouted += len(lines)
            log.debug("%s %s: no channels configured", ev.type, ev.key)
            return []
        source = _source(delivery)
        extra: dict[str, Any] = {"source": source}
        if ev.tags.get("delivery"):
            # lets the outbox keep a line once when a delivery is replayed after a crash
            extra["delivery"] = ev.tags["delivery"]
        lines = [replace(a, meta={**extra, **a.meta}) for a in lines]
        return [(target, a) for a in lines for target in targets]

    def _first_time(self, a: Announcement) -> bool:
        if a.once is None:
            return True
        if a.once in self._seen:
            self._seen.move_to_end(a.once)
            self.stats.repeats += 1
            return False
        self._seen[a.once] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        return True

    async def handle(self, ev: Event) -> None:
        """Announce what ``ev`` gives to its targets (the bound handler)."""
        for target, a in self.plan(ev):
            try:
                await self._announce(
                    target,
                    a.text,
                    kind=a.kind,
                    fold_key=a.fold_key,
                    meta=dict(a.meta) if a.meta else None,
                )
            except Exception:
                self.stats.errors += 1
                log.exception("announcing %s %s to %s failed", ev.type, ev.key, target)
            else:
                self.stats.lines += 1


def install(table: BindingTable, config: Callable[[], Config], announce: Announce) -> Announcer:
    """Bind the announcement handlers into ``table`` (replacing any made
    before) and return the ``Announcer`` behind them: lines go to
    ``announce`` (the durable outbox); ``config`` is read per Event, so a
    rehash's channels apply at once."""
    announcer = Announcer(config, announce)
    handler = announcer.handle

    def bind() -> None:
        for mask in WEBHOOK_MASKS:
            table.bind("webhook", "-|-", mask, handler, owner=OWNER)
        table.bind("rest", "-|-", "rest/*", handler, owner=OWNER)
        for key in REST_STATUS_KEYS:
            table.bind("event", "-|-", key, handler, owner=OWNER)

    table.install(OWNER, bind)
    return announcer
