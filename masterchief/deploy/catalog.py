"""Deploy modules: find, order, hot-reload, add and remove ``module.yaml`` folders.

How this works.  ``discover`` walks the configured module roots for
``module.yaml`` files; the folder holding one is a module, and everything
below it belongs to it (the walk does not look for modules inside a module,
skips dot-folders such as ``.removed`` and never follows a symlinked folder).
Each file is validated on its own by ``load_module`` (manifest.py), so one
bad module does not hide the others.

``load_modules`` then assembles a ``ModuleSet``: a name declared twice is an
error naming both files (neither is used), a module whose ``requires`` names
an unknown or unusable module is left out, and ``graphlib`` orders the rest
-- a cycle is reported as ``dependency cycle: a -> b -> a`` and its members
(and whoever requires them) are left out.

``ModuleLoader`` holds the current set.  ``reload()`` re-reads everything and
reports what was added, changed (digest differs) or removed; a module that
used to load but now fails keeps its old version active, like a user script
that fails to reload.  ``watch()`` polls cheap ``stat`` signatures (each
``module.yaml``, every folder under the roots, each module's entry) and
reloads when they move.

``add_module`` copies a validated folder in (through a staging folder, so a
failed copy leaves nothing); ``remove_module`` moves one to
``<root>/.removed/`` -- nothing is ever deleted.
"""

from __future__ import annotations

import asyncio
import graphlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from masterchief.errors import UserError

from .manifest import MANIFEST_NAME, Module, ModuleError, load_module, walk_files

__all__ = [
    "ModuleLoader",
    "ModuleSet",
    "ReloadResult",
    "add_module",
    "discover",
    "load_modules",
    "remove_module",
]

log = logging.getLogger("masterchief.modules")

REMOVED_DIR = ".removed"


def discover(paths: Sequence[Path]) -> list[Path]:
    """Every ``module.yaml`` under ``paths`` (recursive, sorted).

    Dot-folders (``.removed``, ``.git``) are skipped, symlinked folders are
    not entered, and the folders below a module belong to it (no modules
    inside modules).
    """
    return _walk(paths)[0]


# Names someone may give a manifest that is then never read.
_LOOKALIKES = frozenset({"module.yml", "module.json", "manifest.yaml", "manifest.yml"})


def _walk(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``discover``'s manifests, and what looks like a module but is not read
    (a symlinked folder with a manifest, a manifest by another name), with why."""
    found: set[Path] = set()
    ignored: list[tuple[Path, str]] = []
    for root in paths:
        root = Path(root)
        if not root.is_dir():
            continue
        real_root = root.resolve()
        for here, dirs, files in os.walk(root, followlinks=False):
            base = Path(here)
            if MANIFEST_NAME in files:
                candidate = base / MANIFEST_NAME
                if candidate.resolve().is_relative_to(real_root) and candidate.is_file():
                    found.add(candidate)
                    dirs[:] = []
                    continue
                ignored.append((candidate, f"not read: it is a link to outside {root}"))
            for name in sorted(files):
                low = name.lower()
                if name != MANIFEST_NAME and (low in _LOOKALIKES or low == MANIFEST_NAME):
                    ignored.append((base / name, f"not read: a manifest is named {MANIFEST_NAME}"))
            linked = sorted(d for d in dirs if not d.startswith(".") and (base / d).is_symlink())
            for d in linked:
                if (base / d / MANIFEST_NAME).exists():
                    ignored.append((base / d, "not read: a symlinked folder is not followed"))
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked)
    return sorted(found), ignored


def _display(file: Path, roots: Sequence[Path]) -> str:
    """``modules/web/module.yaml``: relative to the parent of its root."""
    for root in roots:
        try:
            return file.relative_to(Path(root).parent).as_posix()
        except ValueError:
            continue
    return str(file)


@dataclass(frozen=True)
class ModuleSet:
    """The usable modules, in dependency order, and what was refused."""

    modules: Mapping[str, Module] = field(default_factory=dict)
    order: tuple[Module, ...] = ()  # every module after the modules it requires
    errors: tuple[ModuleError, ...] = ()

    def get(self, name: str) -> Module | None:
        return self.modules.get(name)

    def require(self, name: str) -> Module:
        """The module, or a ``UserError`` safe to say in a channel."""
        found = self.modules.get(name)
        if found is None:
            shown = name if len(name) <= 40 else name[:37] + "..."
            raise UserError(f"unknown module {shown!r}; try !modules")
        return found

    def closure(self, name: str) -> tuple[Module, ...]:
        """``name``'s requirements (transitively) in deploy order, itself last."""
        wanted = {name}
        todo = [self.require(name)]
        while todo:
            for dep in todo.pop().manifest.requires:
                if dep not in wanted:
                    wanted.add(dep)
                    todo.append(self.modules[dep])
        return tuple(m for m in self.order if m.name in wanted)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.modules))

    def __iter__(self) -> Iterator[Module]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.modules)

    def __contains__(self, name: object) -> bool:
        return name in self.modules


def _parse_all(paths: Sequence[Path]) -> tuple[list[Module], list[ModuleError]]:
    modules: list[Module] = []
    found, ignored = _walk(paths)
    # Reported, not skipped in silence: someone expects these to be modules.
    errors = [ModuleError(why, file=_display(path, paths)) for path, why in ignored]
    for file in found:
        try:
            modules.append(load_module(file, display=_display(file, paths)))
        except ModuleError as exc:
            errors.append(exc)
        except OSError as exc:  # vanished or unreadable mid-scan
            reason = exc.strerror or type(exc).__name__
            errors.append(ModuleError(f"cannot read: {reason}", file=_display(file, paths)))
    return modules, errors


def _dedupe(
    modules: list[Module], paths: Sequence[Path]
) -> tuple[dict[str, Module], list[ModuleError]]:
    by_name: dict[str, list[Module]] = {}
    for m in modules:
        by_name.setdefault(m.name, []).append(m)
    unique: dict[str, Module] = {}
    errors: list[ModuleError] = []
    for name, group in sorted(by_name.items()):
        if len(group) == 1:
            unique[name] = group[0]
            continue
        files = [_display(m.file, paths) for m in group]
        errors.append(
            ModuleError(
                f"module name {name!r} is declared twice: {' and '.join(files)} (neither is used)",
                file=files[0],
                key="name",
            )
        )
    return unique, errors


def _assemble(
    candidates: dict[str, Module], paths: Sequence[Path]
) -> tuple[dict[str, Module], tuple[Module, ...], list[ModuleError]]:
    """Drop modules with missing or cyclic requirements; order the rest."""
    usable = dict(candidates)
    errors: list[ModuleError] = []

    def drop_missing() -> None:
        changed = True
        while changed:
            changed = False
            for name in sorted(usable):
                m = usable[name]
                gone = [r for r in m.manifest.requires if r not in usable]
                if not gone:
                    continue
                dep = gone[0]
                why = (
                    "which is not usable (see its error)"
                    if dep in candidates
                    else "which is not a known module"
                )
                errors.append(
                    ModuleError(
                        f"{name} requires {dep}, {why}",
                        file=_display(m.file, paths),
                        key="requires",
                    )
                )
                del usable[name]
                changed = True

    drop_missing()
    while True:
        graph = {n: m.manifest.requires for n, m in usable.items()}
        sorter = graphlib.TopologicalSorter(graph)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = _cycle_text(exc.args[1])
            first = min(exc.args[1])
            errors.append(
                ModuleError(
                    f"dependency cycle: {cycle}",
                    file=_display(usable[first].file, paths),
                    key="requires",
                )
            )
            for n in set(exc.args[1]):
                usable.pop(n, None)
            drop_missing()
            continue
        order: list[Module] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            order.extend(usable[n] for n in ready)
            sorter.done(*ready)
        return usable, tuple(order), errors


def _cycle_text(nodes: list[str]) -> str:
    # graphlib lists predecessors first ([a, c, b, a]: a is required by c);
    # reversed, it reads as "requires": a -> b -> c -> a.
    ring = list(reversed(nodes))[:-1]
    start = ring.index(min(ring))
    ring = ring[start:] + ring[:start]
    return " -> ".join([*ring, ring[0]])


def load_modules(paths: Sequence[Path]) -> ModuleSet:
    """Every valid module under ``paths`` plus the errors of the others."""
    parsed, errors = _parse_all(paths)
    unique, dup_errors = _dedupe(parsed, paths)
    usable, order, dep_errors = _assemble(unique, paths)
    return ModuleSet(usable, order, tuple([*errors, *dup_errors, *dep_errors]))


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did.  ``kept``: modules whose new version failed, so the
    old one stays active.  ``summary()`` is safe for a channel."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    errors: tuple[ModuleError, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        parts: list[str] = []
        for label, names in (
            ("added", self.added),
            ("changed", self.changed),
            ("removed", self.removed),
        ):
            if names:
                parts.append(f"{label} {', '.join(names)}")
        if self.kept:
            parts.append(f"old version kept for {', '.join(self.kept)}")
        if self.errors:
            n = len(self.errors)
            parts.append(f"{n} error{'s' if n != 1 else ''} (masterchief module validate)")
        return "modules: " + ("; ".join(parts) if parts else "no change")


ChangeCallback = Callable[[ReloadResult], None]
_Signature = tuple[tuple[str, int, int], ...]


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


def _entry_stats(modules: ModuleSet) -> _Signature:
    return tuple(sorted(_stat(m.entry) for m in modules.modules.values()))


class ModuleLoader:
    """The current ``ModuleSet``, kept up to date by ``reload``/``watch``.

    Nothing is read until the first ``reload()``.  ``on_change`` callbacks run
    (in the caller's thread) after every reload; one that raises is logged.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths: Sequence[Path] = tuple(Path(p) for p in paths)  # rehash may replace it
        self.on_change: list[ChangeCallback] = []
        self._set = ModuleSet()
        self._signature: _Signature | None = None

    @property
    def current(self) -> ModuleSet:
        """The active modules (a snapshot: a reload replaces it, never mutates it)."""
        return self._set

    def reload(self) -> ReloadResult:
        """Re-read every module now (blocking file I/O)."""
        signature = self._scan_roots()
        return self._apply(self._read(), signature)

    async def areload(self) -> ReloadResult:
        """``reload`` with the file I/O in a worker thread."""
        signature = await asyncio.to_thread(self._scan_roots)
        return self._apply(await asyncio.to_thread(self._read), signature)

    async def watch(self, interval: float = 1.0) -> None:
        """Poll every ``interval`` seconds; reload when something moved."""
        while True:
            await asyncio.sleep(interval)
            try:
                roots = await asyncio.to_thread(self._scan_roots)
                if roots + await asyncio.to_thread(_entry_stats, self._set) != self._signature:
                    result = self._apply(await asyncio.to_thread(self._read), roots)
                    log.info("%s", result.summary())
            except Exception:
                log.exception("module watcher failed")

    def _read(self) -> tuple[list[Module], list[ModuleError]]:
        parsed, errors = _parse_all(self.paths)
        unique, dup_errors = _dedupe(parsed, self.paths)
        return list(unique.values()), [*errors, *dup_errors]

    def _apply(
        self, read: tuple[list[Module], list[ModuleError]], signature: _Signature
    ) -> ReloadResult:
        fresh, errors = read
        candidates = {m.name: m for m in fresh}
        fresh_files = {m.file for m in fresh}
        kept: list[str] = []
        for name, old in self._set.modules.items():
            if name in candidates or old.file in fresh_files or not old.file.exists():
                continue
            candidates[name] = old  # its file is still there but fails now
            kept.append(name)
        usable, order, dep_errors = _assemble(candidates, self.paths)
        before = self._set.modules
        result = ReloadResult(
            added=tuple(sorted(n for n in usable if n not in before)),
            changed=tuple(
                sorted(
                    n
                    for n in usable
                    if n in before
                    and (usable[n].digest, usable[n].file) != (before[n].digest, before[n].file)
                )
            ),
            removed=tuple(sorted(n for n in before if n not in usable)),
            kept=tuple(sorted(n for n in kept if n in usable)),
            errors=tuple([*errors, *dep_errors]),
        )
        self._set = ModuleSet(usable, order, result.errors)
        # The entries are known only now: without them here the first poll after
        # a load would differ and read every module again.
        self._signature = signature + _entry_stats(self._set)
        for err in result.errors:
            log.warning("module error: %s", err)
        for callback in list(self.on_change):
            try:
                callback(result)
            except Exception:
                log.exception("module on_change callback failed")
        return result

    def _scan_roots(self) -> _Signature:
        """Cheap stat signature of the manifests and folders under the roots
        (with ``_entry_stats`` of the active modules it says "something moved")."""
        seen: list[tuple[str, int, int]] = []
        for root in self.paths:
            if not root.is_dir():
                seen.append(_stat(root))
                continue
            for here, dirs, files in os.walk(root, followlinks=False):
                base = Path(here)
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                seen.append(_stat(base))
                if MANIFEST_NAME in files:
                    seen.append(_stat(base / MANIFEST_NAME))
        return tuple(sorted(seen))


def add_module(src: Path, modules_dir: Path, *, roots: Sequence[Path] = ()) -> Module:
    """Validate the module folder ``src`` and copy it to ``modules_dir/<name>/``.

    Refused: no ``module.yaml``, an invalid manifest, a name already used
    under ``modules_dir`` or ``roots``, symlinks or special files in the
    folder.  Dot-folders (``.git``, ``.terraform``) are not copied.
    """
    src = Path(src)
    manifest_file = src / MANIFEST_NAME
    if src.is_symlink() or not src.is_dir():
        raise ModuleError("not a folder", file=src)
    if manifest_file.is_symlink() or not manifest_file.is_file():
        raise ModuleError(f"no {MANIFEST_NAME} in this folder", file=src)
    module = load_module(manifest_file)
    name = module.name
    modules_dir = Path(modules_dir)
    everywhere = [modules_dir, *roots]
    holders = [m for m in _parse_all(everywhere)[0] if m.name == name]
    if holders:
        where = _display(holders[0].file, everywhere)
        raise ModuleError(f"a module named {name!r} already exists ({where})", file=manifest_file)
    dest = modules_dir / name
    if dest.exists() or dest.is_symlink():
        raise ModuleError("the folder already exists", file=dest)
    files = list(walk_files(src))
    for path, _rel in files:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise ModuleError("is a symbolic link; copy the file itself", file=path)
        if not stat.S_ISREG(mode):
            raise ModuleError("is not a regular file", file=path)
    modules_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".adding-{name}-", dir=modules_dir))
    try:
        for path, rel in files:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target, follow_symlinks=False)
        load_module(staging / MANIFEST_NAME, display=dest / MANIFEST_NAME)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # our own copy, never the source
        raise
    return load_module(dest / MANIFEST_NAME)


def remove_module(name: str, loader_paths: Sequence[Path], *, now: datetime | None = None) -> Path:
    """Move module ``name``'s folder to ``<root>/.removed/<name>-<UTC time>/``.

    Nothing is deleted.  Refused when another module requires it (they are
    named), when the name is unknown or declared twice.
    """
    parsed, _errors = _parse_all(loader_paths)
    matches = [m for m in parsed if m.name == name]
    if not matches:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise ModuleError(f"unknown module {shown!r}")
    if len(matches) > 1:
        files = " and ".join(_display(m.file, loader_paths) for m in matches)
        raise ModuleError(f"module {name!r} is declared twice ({files}); remove one by hand")
    module = matches[0]
    users = sorted(m.name for m in parsed if name in m.manifest.requires)
    if users:
        raise ModuleError(f"{name} is required by {', '.join(users)}; remove those first")
    root = _root_of(module.dir, loader_paths)
    if root is None or root.resolve() == module.dir.resolve():
        raise ModuleError(
            "the module is not in its own folder under a modules root; move it by hand",
            file=module.file,
        )
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    trash = root / REMOVED_DIR
    trash.mkdir(parents=True, exist_ok=True)
    target = trash / f"{name}-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = trash / f"{name}-{stamp}-{n}"
    module.dir.rename(target)
    return target


def _root_of(folder: Path, roots: Sequence[Path]) -> Path | None:
    real = folder.resolve()
    for root in roots:
        if real.is_relative_to(Path(root).resolve()):
            return Path(root)
    return None
