"""Pydantic models walked by annotation, and their validation errors as
located messages (``file: key: detail``).

How this works.  ``field_at`` follows an error's location through the
models (list indexes and the keys of a mapping field are not fields) to
the model that holds the failing key; ``describe`` says what is wrong in
the operator's words -- an unknown key with the closest known one, a
refused value quoted only when it is safe to show (never a secret or the
result of a reference).  ``located`` puts every error of one
``ValidationError`` into one message, the first line naming its file and
key.  The main configuration and deploy manifests share these.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from typing import Any, get_args, get_origin

from pydantic import (
    BaseModel,
    ValidationError,
)

from masterchief.config.secrets import Redactor, Secret

from .tree import KeyPath, dotted

__all__ = ["describe", "field_at", "is_mapping", "keeps_secrets", "located", "model_in"]


def keeps_secrets(annotation: Any) -> bool:
    """Whether a field type handles ``Secret`` itself (a secret or a sub-model)."""
    if annotation is Secret:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(keeps_secrets(arg) for arg in get_args(annotation))


def model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def is_mapping(annotation: Any) -> bool:
    """Whether ``annotation`` is (or holds) a ``dict``: its keys are names, not fields."""
    if get_origin(annotation) is dict:
        return True
    return any(is_mapping(a) for a in get_args(annotation))


def field_at(root: type[BaseModel], loc: KeyPath) -> tuple[type[BaseModel] | None, Any]:
    """The model holding the last key of ``loc`` and that key's annotation
    (``(model, None)`` when the key is not one of its fields)."""
    model: type[BaseModel] | None = root
    parent: type[BaseModel] | None = None
    annotation: Any = None
    skip = False
    for part in loc:
        if skip or isinstance(part, int):
            skip = False
            continue
        if model is None:
            return None, None
        info = model.model_fields.get(part)
        if info is None:
            return model, None
        parent, annotation = model, info.annotation
        skip = is_mapping(annotation)  # the next part is a key of the mapping
        model = model_in(annotation)
    return parent, annotation


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def describe(
    err: Mapping[str, Any],
    loc: KeyPath,
    parent: type[BaseModel] | None,
    *,
    show_value: bool = True,
    hidden_keys: Collection[str] = (),
) -> str:
    """One pydantic error in words; the refused value is quoted (shortened)
    when ``show_value`` and it is a scalar."""
    kind = err["type"]
    if kind == "extra_forbidden":
        key = loc[-1] if loc else ""
        if parent is None or not isinstance(key, str):
            return "unknown key"
        known = [k for k in parent.model_fields if k not in hidden_keys]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
        return f"unknown key ({hint})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if kind != "missing" and show_value and _is_scalar(value):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg += f" (got {shown})"
    return msg


def located(
    exc: ValidationError,
    root: type[BaseModel],
    where: Callable[[KeyPath], str],
    *,
    shown: Callable[[KeyPath, Any], bool] = lambda _loc, _annotation: True,
    hidden_keys: Collection[str] = (),
    hide: Redactor | None = None,
) -> tuple[str, str, str]:
    """``(file, key, detail)`` of ``exc``'s first error, ``detail`` followed by
    a ``file: key: detail`` line for each further one.  ``where`` names the
    file of a location; ``shown`` says whether a refused value may be quoted
    (given the location and its field's annotation); ``hide`` redacts what
    a validator may have quoted itself."""
    lines: list[tuple[str, str, str]] = []
    for err in exc.errors(include_url=False):
        loc: KeyPath = tuple(err["loc"])
        parent, annotation = field_at(root, loc)
        detail = describe(
            err, loc, parent, show_value=shown(loc, annotation), hidden_keys=hidden_keys
        )
        if hide is not None:
            detail = hide.redact(detail)
        lines.append((where(loc), dotted(loc), detail))
    file, key, detail = lines[0]
    more = "".join(f"\n{f}: {k}: {d}" for f, k, d in lines[1:])
    return file, key, detail + more
