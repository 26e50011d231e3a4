"""User scripts: load, hot-reload and unload Python files that make bindings.

How this works
--------------
Each ``*.py`` file in the configured script folders is one *owner*
(``script:<name>``).  Loading imports it from its path under a fresh module
name while the table *collects* the bindings it makes; only when the import
succeeds are they swapped in for the owner's old ones in one step.  A script
that fails to import leaves its previous version bound, and the error (file,
line, exception type) is logged and returned to whoever asked.  Never
``importlib.reload``: the old module object is simply dropped.

Tasks a script starts (at import or from its handlers) are attributed to it
by a loop task factory that reads the ``current_owner`` context variable —
the dispatcher sets it around each handler — and are cancelled when the
script is reloaded or unloaded.

``watch()`` polls the folders once a second: a changed file is reloaded, a
new one loaded, a deleted one unloaded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import sys
import traceback
import weakref
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .event import new_ref
from .registry import BindingTable, current_owner
from .scriptapi import ScriptApi, using

__all__ = ["LoadResult", "ScriptManager"]

log = logging.getLogger("masterchief.scripts")

_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class LoadResult:
    owner: str
    path: Path
    ok: bool
    bindings: int = 0
    error: str | None = None  # safe to show: file, line, exception type, ref

    def __str__(self) -> str:
        if self.ok:
            return f"{self.path.name}: loaded ({self.bindings} bindings)"
        return f"{self.path.name}: {self.error}"


class ScriptManager:
    def __init__(
        self,
        table: BindingTable,
        dirs: list[Path],
        *,
        poll_s: float = 1.0,
        api: ScriptApi | None = None,
    ) -> None:
        self.table = table
        # What ``masterchief.bind``/``say`` reach while a script is imported.
        self.api = api if api is not None else ScriptApi(table)
        self.dirs = dirs
        self.poll_s = poll_s
        self._modules: dict[str, ModuleType] = {}
        self._mtimes: dict[Path, float] = {}
        self._tasks: dict[str, weakref.WeakSet[asyncio.Task[Any]]] = {}

    # -- task ownership ------------------------------------------------------

    def install_task_factory(self, loop: asyncio.AbstractEventLoop) -> None:
        tasks = self._tasks

        def factory(
            loop: asyncio.AbstractEventLoop,
            coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
            **kwargs: Any,
        ) -> asyncio.Task[Any]:
            task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
            owner = current_owner.get()
            if owner.startswith("script:"):
                tasks.setdefault(owner, weakref.WeakSet()).add(task)
            return task

        loop.set_task_factory(factory)

    def _cancel_tasks(self, owner: str, keep: set[asyncio.Task[Any]] | None = None) -> int:
        try:
            me = asyncio.current_task()
        except RuntimeError:  # no running loop (offline tools, tests)
            me = None
        n = 0
        for t in list(self._tasks.get(owner, ())):
            if t is me or t.done() or (keep is not None and t in keep):
                continue
            t.cancel()
            n += 1
        return n

    # -- loading -------------------------------------------------------------

    @staticmethod
    def owner_of(path: Path) -> str:
        return f"script:{path.stem}"

    def files(self) -> list[Path]:
        out: list[Path] = []
        for d in self.dirs:
            if d.is_dir():
                out.extend(
                    p
                    for p in sorted(d.glob("*.py"))
                    if p.is_file() and not p.name.startswith(("_", "."))
                )
        return out

    def load(self, path: Path) -> LoadResult:
        owner = self.owner_of(path)
        name = f"masterchief_script_{path.stem}_{next(_counter)}"
        before = set(self._tasks.get(owner, ()))
        try:
            mtime = path.stat().st_mtime
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            with using(self.api), self.table.collecting(owner) as bucket:
                spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(name, None)
            # tasks the failed import started die with it; the old version's stay
            self._cancel_tasks(owner, keep=before)
            if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
                raise
            err = self._describe(path, exc)
            log.error("script %s failed to load: %s", path, err, exc_info=exc)
            self._mtimes[path] = path.stat().st_mtime if path.exists() else 0.0
            return LoadResult(owner, path, False, error=err)
        self._cancel_tasks(owner, keep=set(self._tasks.get(owner, ())) - before)
        old = self._modules.pop(owner, None)
        if old is not None:
            sys.modules.pop(old.__name__, None)
        self.table.replace_owner(owner, bucket)
        self._modules[owner] = module
        self._mtimes[path] = mtime
        log.info("script %s loaded: %d bindings", path, len(bucket))
        return LoadResult(owner, path, True, bindings=len(bucket))

    @staticmethod
    def _describe(path: Path, exc: BaseException) -> str:
        line: int | None = None
        if isinstance(exc, SyntaxError) and exc.filename == str(path):
            line = exc.lineno
        else:
            for frame in traceback.extract_tb(exc.__traceback__):
                if frame.filename == str(path):
                    line = frame.lineno
        where = f"line {line}" if line else "import"
        return (
            f"{type(exc).__name__} at {where} (ref {new_ref()}); the previous version stays bound"
        )

    def unload(self, owner: str) -> int:
        removed = self.table.unbind_owner(owner)
        self._cancel_tasks(owner)
        mod = self._modules.pop(owner, None)
        if mod is not None:
            sys.modules.pop(mod.__name__, None)
        for p in [p for p in self._mtimes if self.owner_of(p) == owner]:
            del self._mtimes[p]
        log.info("script %s unloaded (%d bindings)", owner, removed)
        return removed

    def load_all(self) -> list[LoadResult]:
        """Load (or reload) every script; unload those whose file is gone."""
        present = self.files()
        results = [self.load(p) for p in present]
        names = {self.owner_of(p) for p in present}
        for owner in list(self._modules):
            if owner not in names:
                self.unload(owner)
        return results

    def scan_changes(self) -> list[LoadResult]:
        """Reload changed files, load new ones, unload deleted ones."""
        results: list[LoadResult] = []
        present = self.files()
        for p in present:
            try:
                mtime = p.stat().st_mtime
            except OSError:
                continue
            if self._mtimes.get(p) != mtime:
                results.append(self.load(p))
        names = {self.owner_of(p) for p in present}
        for owner in list(self._modules):
            if owner not in names:
                self.unload(owner)
        return results

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                self.scan_changes()
            except Exception:
                log.exception("script watcher failed")

    @property
    def loaded(self) -> list[str]:
        return sorted(self._modules)
