"""Deploy modules: find, validate, order and hot-reload ``module.yaml`` folders.

How this works.  ``discover`` walks the configured module roots for
``module.yaml`` files; the folder holding one is a module, and everything
below it belongs to it (the walk does not look for modules inside a module,
skips dot-folders such as ``.removed`` and never follows a symlinked folder).
``load_module`` validates one file into a ``Manifest`` (pydantic, unknown keys
refused) and a ``Module`` (entry resolved and checked, folder digest taken);
every problem becomes a ``ModuleError`` whose text names the file and the
field: ``modules/web/module.yaml: parameters.version.pattern: does not
compile (...)``.

``load_modules`` validates every file on its own, so one bad module does not
hide the others, then assembles a ``ModuleSet``: a name declared twice is an
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

Module config (``config/modules/<name>.yaml`` deep-merged with
``config/modules/<env>/<name>.yaml``, ``<env>`` the environment the job runs
in, not the bot's ``--env``) goes through the main config's merge
and reference machinery: values built from ``${env:...}``, ``${file:...}``
or ``${vault:...}`` come back as ``Secret`` and are registered for log
redaction.  ``${vault:...}`` uses the main configuration's ``vault.url`` (or
the client the caller injected), through ``module_resolvers``.  One key there
is a setting of the bot, not a variable: ``allow_bot_host`` (a literal
boolean; ``tool_variables`` leaves it out of what the tool gets).

A ``kubernetes`` module run by ``kubectl`` applies its manifests as they are:
there is no values file to carry parameters, so a manifest declaring
parameters is refused rather than silently dropping them.
"""

from __future__ import annotations

import asyncio
import difflib
import graphlib
import hashlib
import logging
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from masterchief.bindings.flags import FlagError, FlagMask
from masterchief.config.engine import (
    Config,
    KeyPath,
    _dotted,
    _merge,
    _model_in,
    _read_yaml,
    _resolve_tree,
    config_resolvers,
)
from masterchief.config.secrets import REDACTOR, Redactor, Resolver, Secret
from masterchief.config.vault import VaultClient
from masterchief.errors import ConfigError, LocatedError, UserError
from masterchief.text import has_hidden

__all__ = [
    "BOT_HOST_SETTING",
    "MANIFEST_NAME",
    "AnsibleOptions",
    "ApprovalRule",
    "KubernetesOptions",
    "Manifest",
    "Module",
    "ModuleError",
    "ModuleLoader",
    "ModuleSet",
    "ParamSpec",
    "ReloadResult",
    "ScriptOptions",
    "TerraformOptions",
    "add_module",
    "allows_bot_host",
    "discover",
    "load_module",
    "load_module_config",
    "load_modules",
    "module_config_envs",
    "module_config_problems",
    "module_resolvers",
    "remove_module",
    "tool_variables",
]

log = logging.getLogger("masterchief.modules")

MANIFEST_NAME = "module.yaml"
REMOVED_DIR = ".removed"

NAME_RE = r"^[a-z0-9][a-z0-9-]{0,62}$"
VERSION_RE = r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$"
ENV_RE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
PARAM_RE = r"^[a-z][a-z0-9_]{0,31}$"
_HELM_NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?$"
_K8S_NS_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"

DIGEST_MAX_BYTES = 32 * 1024 * 1024
"""Contents beyond this many bytes per module are represented by size and mtime."""

Kind = Literal["ansible", "terraform", "kubernetes", "script"]
ParamType = Literal["string", "integer", "number", "boolean"]


class ModuleError(LocatedError):
    """A module that cannot be used.  ``str(err)`` is ``file: key: detail``.

    Shown on the console and in logs (it holds a path), not in a channel.
    """


# --- the manifest ---------------------------------------------------------------


def _plain_text(value: str) -> str:
    if has_hidden(value):
        raise ValueError("control characters are not allowed")
    return value


PlainText = Annotated[str, AfterValidator(_plain_text)]
"""Text a manifest shows to people (descriptions): no hidden characters."""


def _type_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` is not of parameter type ``kind`` (None: it is)."""
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, bool)
    return None if ok else f"should be of type {kind}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Model):
    """One parameter a module takes (``name=value`` on the command line)."""

    # Field order matters: the validators of later fields read earlier ones.
    type: ParamType = "string"
    description: PlainText = Field(default="", max_length=200)
    required: bool = False
    pattern: str | None = None
    enum: tuple[Any, ...] | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    max_length: int = Field(default=256, ge=1, le=4096)
    secret: bool = False
    default: Any = None

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("type", "string") != "string":
            raise ValueError("pattern is only for string parameters")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"does not compile ({exc})") from None
        return value

    @field_validator("enum")
    @classmethod
    def _check_enum(cls, value: tuple[Any, ...] | None, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if not value:
            raise ValueError("an enum lists at least one value")
        kind = info.data.get("type", "string")
        for item in value:
            problem = _type_problem(kind, item)
            if problem:
                raise ValueError(f"enum value {item!r} {problem}")
        if len(set(value)) != len(value):
            raise ValueError("enum values must be unique")
        return value

    @field_validator("minimum", "maximum", mode="before")
    @classmethod
    def _number_bound(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if info.data.get("type", "string") not in ("integer", "number"):
            raise ValueError(f"{info.field_name} is only for integer and number parameters")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("should be a number")
        if not math.isfinite(value):
            raise ValueError("should be a finite number")
        low = info.data.get("minimum")
        if info.field_name == "maximum" and low is not None and value < low:
            raise ValueError("maximum is less than minimum")
        return value

    @field_validator("default")
    @classmethod
    def _check_default(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if info.data.get("required"):
            raise ValueError("a required parameter takes no default")
        spec = cls.model_construct(**{k: v for k, v in info.data.items()})
        problem = spec.problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def problem(self, value: Any) -> str | None:
        """Why a typed value is refused (None: it is fine).  Never quotes the value."""
        problem = _type_problem(self.type, value)
        if problem:
            return problem
        if isinstance(value, str):
            if has_hidden(value):
                return "control characters are not allowed"
            if len(value) > self.max_length:
                return f"is longer than {self.max_length} characters"
            if self.pattern is not None and not re.fullmatch(self.pattern, value):
                return f"does not match the pattern {self.pattern}"
        if self.enum is not None and value not in self.enum:
            return "is not one of " + ", ".join(str(v) for v in self.enum)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return f"is less than the minimum {self.minimum}"
            if self.maximum is not None and value > self.maximum:
                return f"is more than the maximum {self.maximum}"
        return None


def _check_flags(value: str) -> str:
    if not value.strip():
        raise ValueError("flags are required (write '-|-' to let anyone in)")
    try:
        FlagMask.parse(value)
    except FlagError as exc:
        raise ValueError(str(exc)) from None
    return value


class ApprovalRule(_Model):
    """Jobs in this environment wait for ``approvers`` people holding ``flags``."""

    approvers: int = Field(default=1, ge=1, le=10)
    flags: str = "m|m"
    ttl_s: float = Field(default=900.0, gt=0, le=86400)

    @field_validator("flags")
    @classmethod
    def _flags(cls, value: str) -> str:
        return _check_flags(value)

    @property
    def mask(self) -> FlagMask:
        return FlagMask.parse(self.flags)


class AnsibleOptions(_Model):
    """``inventory``: environment -> path (relative to the module folder)."""

    inventory: dict[str, str] = {}


class TerraformOptions(_Model):
    """``workspace``: select (or create) a workspace named after the environment."""

    workspace: bool = False


class ScriptOptions(_Model):
    """``changes_bot_host``: a script always runs on the bot's host; unless its
    author states here that it only acts elsewhere (calls an API, connects to
    other machines), it counts as changing that host, which needs
    ``allow_bot_host`` in its module config and an owner (+n) to run it."""

    changes_bot_host: bool = True


class KubernetesOptions(_Model):
    """``entry`` is a chart folder (helm) or a manifests folder (kubectl)."""

    release: str | None = Field(default=None, pattern=_HELM_NAME_RE)
    namespace: str | None = Field(default=None, pattern=_K8S_NS_RE)
    tool: Literal["helm", "kubectl"] = "helm"


def _unique_names(value: tuple[str, ...], pattern: str, what: str, one: str) -> tuple[str, ...]:
    for name in value:
        if not re.fullmatch(pattern, name):
            raise ValueError(f"{name!r} is not {what}")
    if len(set(value)) != len(value):
        raise ValueError(f"{one} is listed twice")
    return value


class Manifest(_Model):
    """A ``module.yaml``, validated."""

    name: str = Field(pattern=NAME_RE)
    version: str = Field(pattern=VERSION_RE)
    kind: Kind
    description: PlainText = Field(default="", max_length=300)
    entry: str = Field(min_length=1)
    requires: tuple[str, ...] = ()
    environments: tuple[str, ...] = Field(min_length=1)
    flags: str = "o|o"
    approval: dict[str, ApprovalRule] = {}
    timeout_s: float = Field(default=1800.0, gt=0, le=86400)
    parameters: dict[str, ParamSpec] = {}
    ansible: AnsibleOptions | None = None
    terraform: TerraformOptions | None = None
    kubernetes: KubernetesOptions | None = None
    script: ScriptOptions | None = None

    @field_validator("entry")
    @classmethod
    def _relative_entry(cls, value: str) -> str:
        if Path(value).is_absolute() or value.startswith("~"):
            raise ValueError("should be a path relative to the module folder")
        if "\x00" in value:
            raise ValueError("control characters are not allowed")
        return value

    @field_validator("requires")
    @classmethod
    def _check_requires(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _unique_names(value, NAME_RE, "a module name", "a module")

    @field_validator("environments")
    @classmethod
    def _check_environments(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _unique_names(value, ENV_RE, f"an environment name ({ENV_RE})", "an environment")

    @field_validator("flags")
    @classmethod
    def _flags(cls, value: str) -> str:
        return _check_flags(value)

    @field_validator("approval")
    @classmethod
    def _approval_envs(
        cls, value: dict[str, ApprovalRule], info: ValidationInfo
    ) -> dict[str, ApprovalRule]:
        _listed(value, info)
        return value

    @field_validator("parameters")
    @classmethod
    def _param_names(cls, value: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in value:
            if not re.fullmatch(PARAM_RE, name):
                raise ValueError(f"{name!r} is not a parameter name ({PARAM_RE})")
        return value

    @field_validator("ansible", "terraform", "kubernetes", "script")
    @classmethod
    def _matches_kind(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        if value is not None and kind is not None and kind != info.field_name:
            raise ValueError(f"this section is for kind {info.field_name} (kind is {kind})")
        if isinstance(value, AnsibleOptions):
            _listed(value.inventory, info, what="inventory")
        return value

    @property
    def mask(self) -> FlagMask:
        return FlagMask.parse(self.flags)

    def section(self) -> dict[str, Any]:
        """The kind-specific options as plain data ({} when absent)."""
        options: BaseModel | None = getattr(self, self.kind, None)
        return options.model_dump(mode="json") if options is not None else {}


def _listed(keys: Iterable[str], info: ValidationInfo, what: str = "") -> None:
    envs = info.data.get("environments")
    if envs is None:  # environments itself failed; that error is reported
        return
    for key in keys:
        if key not in envs:
            prefix = f"{what}: " if what else ""
            raise ValueError(
                f"{prefix}{key!r} is not a listed environment (environments: {', '.join(envs)})"
            )


# --- a module ----------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    """A validated module folder.  ``digest`` is taken when it is made, so two
    loads of a folder compare equal only if nothing in it changed."""

    manifest: Manifest
    dir: Path
    file: Path
    entry: Path
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", folder_digest(self.dir))

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def options(self) -> dict[str, Any]:
        return self.manifest.section()


def folder_digest(folder: Path, max_bytes: int = DIGEST_MAX_BYTES) -> str:
    """sha256 over the relative paths and contents of the files below ``folder``.

    Dot-folders are skipped, symlinks are hashed by their target text (never
    followed); once ``max_bytes`` have been read, further files count by size
    and mtime only.
    """
    total = hashlib.sha256()
    budget = max_bytes
    for path, rel in _walk_files(folder):
        total.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        try:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                total.update(b"L" + os.readlink(path).encode("utf-8", "surrogateescape"))
            elif not stat.S_ISREG(st.st_mode):
                total.update(b"S")
            elif st.st_size <= budget:
                budget -= st.st_size
                total.update(b"F" + _file_hash(path))
            else:
                budget = 0
                total.update(f"B{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError as exc:
            total.update(f"E{exc.errno}".encode())
        total.update(b"\n")
    return total.hexdigest()


def _file_hash(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(65536), b""):
            h.update(chunk)
    return h.digest()


def _walk_files(folder: Path) -> Iterator[tuple[Path, str]]:
    """Every non-folder entry below ``folder`` (sorted; dot-folders pruned)."""
    for here, dirs, files in os.walk(folder, followlinks=False):
        base = Path(here)
        keep = sorted(d for d in dirs if not d.startswith("."))
        # symlinked folders are entries, not places to walk into
        links = [d for d in keep if (base / d).is_symlink()]
        dirs[:] = [d for d in keep if d not in links]
        for name in sorted([*files, *links]):
            path = base / name
            yield path, path.relative_to(folder).as_posix()


# --- loading one module ------------------------------------------------------------------


def load_module(file: Path, *, display: str | Path | None = None) -> Module:
    """Validate one ``module.yaml``; ``display`` is how errors name the file."""
    file = Path(file)
    shown = str(display if display is not None else file)
    data = _read_manifest(file, shown)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise _manifest_error(exc, shown) from None
    k8s = manifest.kubernetes
    if k8s is not None and k8s.tool == "kubectl" and manifest.parameters:
        raise ModuleError(
            "parameters are not supported for kubectl modules (kubectl applies the "
            "manifests as they are); use tool: helm",
            file=shown,
            key="parameters",
        )
    folder = file.parent.absolute()
    entry = _check_entry(manifest, folder, shown)
    if manifest.ansible is not None:
        for env, rel in manifest.ansible.inventory.items():
            if not (folder / rel).exists():
                raise ModuleError(
                    f"not found ({rel} relative to the module folder)",
                    file=shown,
                    key=f"ansible.inventory.{env}",
                )
    return Module(manifest=manifest, dir=folder, file=file.absolute(), entry=entry)


def _read_manifest(file: Path, shown: str) -> dict[str, Any]:
    try:
        data = _read_yaml(file)
    except ConfigError as exc:
        where = exc.file or shown
        # _read_yaml names the file as it was opened; show the display name instead
        where = where.replace(str(file), shown)
        raise ModuleError(exc.detail, file=where) from None
    return data


def _check_entry(manifest: Manifest, folder: Path, shown: str) -> Path:
    raw = folder / manifest.entry
    try:
        entry = raw.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ModuleError(
            f"not found ({manifest.entry} relative to the module folder)", file=shown, key="entry"
        ) from None
    if manifest.kind == "script":
        mode = entry.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ModuleError("a script entry should be a regular file", file=shown, key="entry")
        if not os.access(entry, os.X_OK):
            raise ModuleError("the script is not executable (chmod +x)", file=shown, key="entry")
    elif manifest.kind == "ansible" and not entry.is_file():
        raise ModuleError("an ansible entry should be a playbook file", file=shown, key="entry")
    return entry


def _is_mapping(annotation: Any) -> bool:
    if get_origin(annotation) is dict:
        return True
    return any(_is_mapping(a) for a in get_args(annotation))


def _parent_model(loc: KeyPath) -> type[BaseModel] | None:
    """The model whose field the last part of ``loc`` names."""
    model: type[BaseModel] = Manifest
    skip = False
    for part in loc[:-1]:
        if skip or isinstance(part, int):
            skip = False
            continue
        info = model.model_fields.get(part)
        sub = _model_in(info.annotation) if info is not None else None
        if info is None or sub is None:
            return None
        skip = _is_mapping(info.annotation)  # the next part is a key of the mapping
        model = sub
    return model


def _describe(err: Mapping[str, Any], loc: KeyPath) -> str:
    if err["type"] == "extra_forbidden":
        model = _parent_model(loc)
        key = loc[-1] if loc else ""
        if model is None or not isinstance(key, str):
            return "unknown key"
        known = list(model.model_fields)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
        return f"unknown key ({hint})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if err["type"] != "missing" and (isinstance(value, str | int | float | bool) or value is None):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg += f" (got {shown})"
    return msg


def _manifest_error(exc: ValidationError, shown: str) -> ModuleError:
    lines = []
    for err in exc.errors(include_url=False):
        loc: KeyPath = tuple(err["loc"])
        lines.append((_dotted(loc), _describe(err, loc)))
    key, detail = lines[0]
    more = "".join(f"\n{shown}: {k}: {d}" for k, d in lines[1:])
    return ModuleError(detail + more, file=shown, key=key)


# --- discovery and the module set ------------------------------------------------------------


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


# --- the loader ------------------------------------------------------------------------------


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


# --- module config -------------------------------------------------------------------------


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
            _merge(data, _read_yaml(file), str(file), origins, ())
    if not data:
        return {}
    _check_settings(data, origins)
    os_env = os.environ if environ is None else environ
    pieces: dict[int, Redactor] = {}
    resolved: dict[str, Any] = _resolve_tree(
        data,
        (),
        origins=origins,
        environ=os_env,
        base_dir=config.project_dir,
        ref_paths=set(),
        found=pieces,
        resolvers=module_resolvers(config, environ=os_env) if resolvers is None else resolvers,
    )
    for secret in _secrets(resolved):
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


def _secrets(value: Any) -> Iterator[Secret]:
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _secrets(v)
    elif isinstance(value, list):
        for v in value:
            yield from _secrets(v)


# --- add and remove -----------------------------------------------------------------------


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
    files = list(_walk_files(src))
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
