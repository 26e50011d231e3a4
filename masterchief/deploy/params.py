"""Deploy parameters: ``key=value`` words in, typed values checked against the manifest out.

How this works.  ``parse_args`` splits the words after ``!deploy module env``
into a mapping and refuses anything that is not plainly ``name=value`` -- in
particular ``--kubeconfig=/tmp/x`` and other option-looking words, so
nothing a user types can become a flag of the tool that runs the module.
``validate_params`` then checks the environment, the names, each value
(control characters, length, type, pattern, enum, range) and the required
ones, and fills in defaults.  Every refusal is a one-line ``UserError`` safe
to say in a channel: it quotes at most a short, escaped prefix of a value,
and nothing of a secret parameter's value.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from masterchief.deploy.manifest import Manifest, ParamSpec
from masterchief.errors import UserError
from masterchief.text import has_hidden

__all__ = [
    "MAX_ARGS",
    "MAX_ARGS_CHARS",
    "parse_args",
    "redact_params",
    "validate_params",
]

MAX_ARGS = 32
"""At most this many ``key=value`` words."""
MAX_ARGS_CHARS = 4096
"""At most this many characters in all the words together."""
MAX_SCALAR_CHARS = 64
"""Integers, numbers and booleans longer than this are refused before parsing."""

_SHOWN = 24
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _short(text: str) -> str:
    """A short, escaped rendering of user input for an error message."""
    shown = repr(text[:_SHOWN])
    return shown + "..." if len(text) > _SHOWN else shown


def parse_args(words: Sequence[str]) -> dict[str, str]:
    """``["version=1.2.3", "replicas=3"]`` -> ``{"version": "1.2.3", "replicas": "3"}``.

    Values may contain ``=`` (the first one splits).  Refused with a
    ``UserError``: a word without ``=``, an option (``--flag``, ``-x=1``), an
    empty or odd key, a key given twice, too many or too long words.
    """
    if len(words) > MAX_ARGS:
        raise UserError(f"too many parameters ({len(words)}; at most {MAX_ARGS})")
    if sum(len(w) for w in words) > MAX_ARGS_CHARS:
        raise UserError(f"parameters too long (at most {MAX_ARGS_CHARS} characters in all)")
    out: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if word.startswith("-"):
            raise UserError(
                f"options are not accepted ({_short(key)}); give parameters as name=value"
            )
        if not sep:
            raise UserError(f"{_short(word)} is not name=value; give parameters as name=value")
        if not key:
            raise UserError(f"parameter name missing before '=' in {_short(word)}")
        if has_hidden(key) or any(c.isspace() for c in key):
            raise UserError(f"invalid parameter name {_short(key)}")
        if key in out:
            raise UserError(f"parameter {_short(key)} given twice")
        out[key] = value
    return out


def validate_params(manifest: Manifest, env: str, raw: Mapping[str, str]) -> dict[str, Any]:
    """Typed parameters for a deploy of ``manifest`` to ``env``, defaults filled.

    Raises ``UserError`` (one line) for an environment the module does not
    list, an unknown parameter, a missing required one, or a value that
    fails its type, pattern, enum, range or length.
    """
    name = manifest.name
    if env not in manifest.environments:
        raise UserError(
            f"{name} has no environment {_short(env)} "
            f"(environments: {', '.join(manifest.environments)})"
        )
    specs = manifest.parameters
    unknown = [k for k in raw if k not in specs]
    if unknown:
        known = ", ".join(sorted(specs)) if specs else "it takes none"
        raise UserError(f"unknown parameter {_short(unknown[0])} for {name} (known: {known})")
    out: dict[str, Any] = {}
    for key, spec in specs.items():
        if key in raw:
            out[key] = _convert(key, spec, raw[key])
        elif spec.default is not None:
            out[key] = spec.default
    missing = [k for k, spec in specs.items() if spec.required and k not in out]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise UserError(f"{name} needs parameter{plural} {', '.join(missing)} (name=value)")
    return out


def redact_params(manifest: Manifest, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the values of secret parameters replaced by ``***``."""
    specs = manifest.parameters
    return {k: "***" if k in specs and specs[k].secret else v for k, v in params.items()}


def _convert(key: str, spec: ParamSpec, text: str) -> Any:
    def refuse(problem: str) -> UserError:
        shown = "" if spec.secret else f" {_short(text)}"
        return UserError(f"parameter {key}:{shown} {problem}")

    if has_hidden(text):
        raise refuse("contains control characters (not allowed)")
    limit = spec.max_length if spec.type == "string" else MAX_SCALAR_CHARS
    if len(text) > limit:
        raise refuse(f"is longer than {limit} characters")
    value: Any
    if spec.type == "string":
        value = text
    elif spec.type == "integer":
        if not _INTEGER.fullmatch(text):
            raise refuse("is not an integer")
        value = int(text)
    elif spec.type == "number":
        if not _NUMBER.fullmatch(text) or not math.isfinite(float(text)):
            raise refuse("is not a number")
        value = float(text) if any(c in text for c in ".eE") else int(text)
    else:
        found = _BOOLEANS.get(text.lower())
        if found is None:
            raise refuse("is not a boolean (true/false, yes/no, 1/0)")
        value = found
    problem = spec.problem(value)
    if problem:
        raise refuse(problem)
    return value
