"""The source runner: every configured source, supervised, reconfigurable.

How this works
--------------
``SourceRunner(families, config, deps, sink)`` builds one source per entry of
every family at construction, so a bad entry fails the start with a clear
``ConfigError`` (names are checked unique per family here, once, for every
family).  ``run(started)`` starts each source in its own task and sets
``started`` once every source has set its own.

A source whose ``run`` raises is logged with a reference id, shown as
``failing`` and started again after a backoff (1 s doubling to 60 s): one
broken source never stops the bot or the other sources.  A source whose
``run`` returns has nothing to do and is shown ``stopped``.

``reconfigure(config)`` (``!rehash``) diffs each family's entries by name:
a removed entry's task is cancelled, a new one is built and started, a
changed one (its entry no longer equal) is rebuilt and restarted, an equal
one keeps running untouched.  Entries are all built before anything stops,
so an invalid new entry changes nothing and is reported.

``statuses()`` and ``metrics()`` read every source at call time: the common
counters (events, errors, pending, last success) as
``masterchief_source_*{family,source}`` plus each source's own families.
Every ``STATUS_EVERY_S`` the statuses are also written to the store as
checkpoints ``source-status:<family>:<name>`` (only those that changed), so
``masterchief sources status`` can show them without reaching the bot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..bindings.event import new_ref
from ..errors import ConfigError
from ..metrics import Family
from .base import EventSink, Source, SourceDeps, SourceFamily, SourceStatus

__all__ = ["STATUS_PREFIX", "SourceRunner"]

log = logging.getLogger("masterchief.sources")

STATUS_PREFIX = "source-status:"
STATUS_EVERY_S = 10.0
_BACKOFF_MIN_S = 1.0
_BACKOFF_MAX_S = 60.0


@dataclass(slots=True)
class _Running:
    family: SourceFamily
    entry: Any
    source: Source
    started: asyncio.Event
    task: asyncio.Task[None] | None = None
    failure: str | None = None  # why the last run ended in an error (with its ref)


class SourceRunner:
    """Runs the sources of ``families`` for ``config``."""

    def __init__(
        self,
        families: Sequence[SourceFamily],
        config: Any,
        deps: SourceDeps,
        sink: EventSink,
    ) -> None:
        self.families = tuple(families)
        self.deps = deps
        self.sink = sink
        self._running: dict[tuple[str, str], _Running] = {}
        for fam in self.families:
            for entry in self._entries(fam, config):
                self._add(fam, entry, fam.build(entry, self.deps))
        self._tasks: asyncio.TaskGroup | None = None

    # -- building ----------------------------------------------------------------

    @staticmethod
    def _entries(fam: SourceFamily, config: Any) -> Sequence[Any]:
        entries = fam.entries(config)
        names = [_name(e) for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(
                f"{fam.section}: names must be unique: {', '.join(dupes)}", key=fam.section
            )
        return entries

    def _add(self, fam: SourceFamily, entry: Any, source: Source) -> _Running:
        run = _Running(fam, entry, source, asyncio.Event())
        self._running[(fam.name, _name(entry))] = run
        return run

    @property
    def sources(self) -> list[Source]:
        return [r.source for r in self._running.values()]

    def find(self, family: str, name: str) -> Source | None:
        run = self._running.get((family, name))
        return run.source if run is not None else None

    # -- running -----------------------------------------------------------------

    async def run(self, started: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tasks = tg
            try:
                for run in self._running.values():
                    self._start(run)
                for run in list(self._running.values()):
                    await run.started.wait()
                started.set()
                await self._persist_statuses()  # until cancelled
            finally:
                self._tasks = None

    def _start(self, run: _Running) -> None:
        assert self._tasks is not None
        name = f"source:{run.family.name}:{run.source.name}"
        run.task = self._tasks.create_task(self._supervise(run), name=name)

    async def _supervise(self, run: _Running) -> None:
        delay = _BACKOFF_MIN_S
        while True:
            try:
                await run.source.run(self.sink, run.started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                ref = new_ref()
                run.failure = f"crashed (ref {ref})"
                run.started.set()  # a failing source must not hold back "ready"
                log.error(
                    "source %s:%s crashed (ref %s); restarting in %.0f s",
                    run.family.name,
                    run.source.name,
                    ref,
                    delay,
                    exc_info=exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                run.failure = None
                continue
            run.started.set()
            return

    async def _persist_statuses(self) -> None:
        store = self.deps.store
        if store is None:  # nothing to keep them in (tests)
            await asyncio.Event().wait()
            return
        written: dict[str, SourceStatus] = {}
        while True:
            for st in self.statuses():
                name = STATUS_PREFIX + st.qualified
                if written.get(name) == st:
                    continue
                try:
                    await store.checkpoint_put(name, dataclasses.asdict(st))
                except Exception as exc:  # the store's trouble is reported by /healthz
                    log.debug("sources: cannot store the status of %s: %s", st.qualified, exc)
                    break
                written[name] = st
            await asyncio.sleep(STATUS_EVERY_S)

    # -- reconfiguring -------------------------------------------------------------

    def reconfigure(self, config: Any) -> list[str]:
        """Apply ``config``'s entries; the changes made, one line each
        (``rest:statuspage added``).  Raises ``ConfigError`` (nothing changed)
        when a new or changed entry cannot be built."""
        wanted: dict[tuple[str, str], tuple[SourceFamily, Any]] = {}
        for fam in self.families:
            for entry in self._entries(fam, config):
                wanted[(fam.name, _name(entry))] = (fam, entry)
        built: dict[tuple[str, str], Source] = {}
        for key, (fam, entry) in wanted.items():
            old = self._running.get(key)
            if old is None or old.entry != entry:
                built[key] = fam.build(entry, self.deps)  # may raise: nothing changed yet
        changes: list[str] = []
        for key in [k for k in self._running if k not in wanted]:
            self._stop(self._running.pop(key))
            changes.append(f"{key[0]}:{key[1]} removed")
        for key, source in built.items():
            fam, entry = wanted[key]
            old = self._running.pop(key, None)
            if old is not None:
                self._stop(old)
            run = self._add(fam, entry, source)
            if self._tasks is not None:
                self._start(run)
            changes.append(f"{key[0]}:{key[1]} {'changed' if old else 'added'}")
        return changes

    @staticmethod
    def _stop(run: _Running) -> None:
        if run.task is not None:
            run.task.cancel()

    # -- observing ---------------------------------------------------------------

    def statuses(self) -> list[SourceStatus]:
        out = []
        for run in self._running.values():
            st = run.source.status()
            if run.failure is not None:  # waiting to be started again
                st = dataclasses.replace(st, state="failing", detail=run.failure)
            out.append(st)
        return sorted(out, key=lambda s: (s.family, s.name))

    def metrics(self) -> list[Family]:
        statuses = self.statuses()

        def fam(name: str, help: str, kind: str, values: dict[tuple[str, ...], float]) -> Family:
            return Family(name, help, kind, ("family", "source"), values)

        out = [
            fam(
                "masterchief_source_events",
                "Events a source produced",
                "counter",
                {(s.family, s.name): s.events for s in statuses},
            ),
            fam(
                "masterchief_source_errors",
                "Errors a source met (failed polls, refused files, crashes)",
                "counter",
                {(s.family, s.name): s.errors for s in statuses},
            ),
            fam(
                "masterchief_source_pending",
                "Work waiting in a source (files settling, deliveries, lag)",
                "gauge",
                {(s.family, s.name): s.pending for s in statuses if s.pending is not None},
            ),
            fam(
                "masterchief_source_last_success_seconds",
                "When a source last succeeded (Unix time)",
                "gauge",
                {(s.family, s.name): s.last_success for s in statuses if s.last_success},
            ),
            fam(
                "masterchief_source_up",
                "1 when a source is not failing",
                "gauge",
                {(s.family, s.name): float(s.state != "failing") for s in statuses},
            ),
        ]
        for run in self._running.values():
            out.extend(run.source.metrics())
        return out


def _name(entry: Any) -> str:
    return str(getattr(entry, "name", "") or "")
