"""A deploy module's ``module.yaml``: the manifest model and its validation.

How this works.  ``load_module`` validates one file into a ``Manifest``
(pydantic, unknown keys refused) and a ``Module`` (entry resolved and
checked, folder digest taken); every problem becomes a ``ModuleError``
whose text names the file and the field: ``modules/web/module.yaml:
parameters.version.pattern: does not compile (...)``.  An unknown key is
answered with the closest known one.

A ``kubernetes`` module run by ``kubectl`` applies its manifests as they are:
there is no values file to carry parameters, so a manifest declaring
parameters is refused rather than silently dropping them.

``folder_digest`` is what "this module changed" means: a hash over every
file below the folder (dot-folders skipped, symlinks never followed).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

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
from masterchief.config.tree import read_yaml
from masterchief.config.validation import located
from masterchief.errors import ConfigError, LocatedError
from masterchief.text import has_hidden

__all__ = [
    "ENV_RE",
    "MANIFEST_NAME",
    "NAME_RE",
    "AnsibleOptions",
    "ApprovalRule",
    "KubernetesOptions",
    "Manifest",
    "Module",
    "ModuleError",
    "ParamSpec",
    "ScriptOptions",
    "TerraformOptions",
    "folder_digest",
    "load_module",
    "walk_files",
]

MANIFEST_NAME = "module.yaml"

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
    for path, rel in walk_files(folder):
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


def walk_files(folder: Path) -> Iterator[tuple[Path, str]]:
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
        data = read_yaml(file)
    except ConfigError as exc:
        where = exc.file or shown
        # read_yaml names the file as it was opened; show the display name instead
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


def _manifest_error(exc: ValidationError, shown: str) -> ModuleError:
    file, key, detail = located(exc, Manifest, lambda _loc: shown)
    return ModuleError(detail, file=file, key=key)
