"""Secrets: a value type that prints as stars, a redactor, reference resolution.

How this works.  Config values may be references -- ``${env:NAME}``,
``${file:/path}``, later ``${vault:name}``.  ``resolve_refs`` looks each one
up through a table of resolvers (one function per scheme, so the vault issue
adds an entry rather than a branch) and returns a ``Secret`` whenever a
reference was involved.  Every resolved value is also registered with a
``Redactor``; the ``RedactingFilter`` on the log handlers replaces any
registered value with ``***`` in log lines and tracebacks, so a secret that
slipped into an exception message or a raw IRC line still never reaches a log.

``$${...}`` stands for a literal ``${...}``.
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import final

from masterchief.errors import ConfigError

__all__ = [
    "REDACTOR",
    "RESOLVERS",
    "RedactingFilter",
    "Redactor",
    "ResolveContext",
    "Resolver",
    "Secret",
    "install_log_redaction",
    "resolve_refs",
]

MASK = "***"


@final
class Secret:
    """A string that does not print itself.  ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    def __str__(self) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


class Redactor:
    """Replaces every registered secret value (4 characters or more) with ``***``.

    Shorter values are ignored: redacting every "abc" in every log line would
    destroy the logs and protect nothing.  Thread-safe; ``redact`` reads an
    immutable compiled pattern, so it takes no lock.
    """

    MIN_LENGTH = 4

    def __init__(self, *, variants: bool = False) -> None:
        """``variants``: also mask each value in any letter case, reversed, and
        with one separator between its characters (``S.E.C.R.E.T``) -- what a
        module's own template can do to a secret it holds.  Dearer per line
        with many values: meant for one job's few secrets, not the global set."""
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._variants = variants

    def register(self, value: str | Secret) -> None:
        text = value.reveal() if isinstance(value, Secret) else value
        # A multi-line secret (a key file) may be logged one line at a time.
        candidates = {text, *(line.strip() for line in text.splitlines())}
        new = {c for c in candidates if len(c) >= self.MIN_LENGTH}
        with self._lock:
            if new <= self._values:
                return
            self._values = self._values | new
            # Tools print secrets base64-encoded too: a Kubernetes Secret
            # rendered by `helm template` (b64enc), a Basic auth header.
            masked = self._values.union(*(_base64_forms(v) for v in self._values))
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(masked, key=len, reverse=True)
            parts = [re.escape(v) for v in ordered]
            if self._variants:
                longest = sorted(self._values, key=len, reverse=True)
                parts = [*(_variant_pattern(v) for v in longest), *parts]
            self._pattern = re.compile("|".join(parts))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(MASK, text)

    def values(self) -> frozenset[str]:
        """The registered values (for merging one redactor into another)."""
        return self._values

    def clear(self) -> None:
        with self._lock:
            self._values = frozenset()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._values)


def _base64_forms(text: str) -> set[str]:
    raw = text.encode("utf-8")
    forms = {base64.b64encode(raw).decode("ascii"), base64.urlsafe_b64encode(raw).decode("ascii")}
    return forms | {f.rstrip("=") for f in forms}


def _variant_pattern(text: str) -> str:
    """``text`` or its reverse, in any case, with at most one non-alphanumeric
    character between two of its characters.  Case by character classes
    (``[tT]``): a third cheaper per line than the ``(?i)`` flag."""

    def one(c: str) -> str:
        low, up = c.lower(), c.upper()
        if low == up or len(low) != 1 or len(up) != 1:
            return re.escape(c)
        return f"[{re.escape(low)}{re.escape(up)}]"

    def spaced(chars: str) -> str:
        return r"[\W_]?".join(one(c) for c in chars)

    return f"(?:{spaced(text)}|{spaced(text[::-1])})"


REDACTOR = Redactor()
"""The process-wide redactor: config loading registers into it, logs use it."""


class RedactingFilter(logging.Filter):
    """Redacts a record's message (with its arguments), traceback and stack."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor.redact
        try:
            message = record.getMessage()
        except Exception:  # bad %-arguments: keep the text, drop the arguments
            message = f"{record.msg} (unformattable log arguments dropped)"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(
    logger: logging.Logger | None = None, redactor: Redactor = REDACTOR
) -> RedactingFilter:
    """Add a ``RedactingFilter`` to every handler of ``logger`` (default: the
    root logger and ``logging.lastResort``).

    Call it after logging is configured: filters belong to handlers (a filter
    on a logger would miss records propagated from child loggers).  Handlers
    that already have one are left alone, so calling it twice is harmless.
    """
    target = logger if logger is not None else logging.getLogger()
    flt = RedactingFilter(redactor)
    handlers = list(target.handlers)
    if logger is None and logging.lastResort is not None:
        handlers.append(logging.lastResort)  # used when the root has no handler
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt


# --- references ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolveContext:
    """What a resolver may use.  ``where`` names the file and key for errors."""

    environ: Mapping[str, str]
    where: str
    base_dir: Path | None = None


Resolver = Callable[[str, ResolveContext], str]
"""Turns the argument of ``${scheme:argument}`` into the value; raises ConfigError."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _resolve_env(name: str, ctx: ResolveContext) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ConfigError(f"invalid environment variable name {name!r}", key=ctx.where)
    value = ctx.environ.get(name)
    if value is None:
        raise ConfigError(f"environment variable {name} is not set", key=ctx.where)
    if value == "":
        raise ConfigError(f"environment variable {name} is empty", key=ctx.where)
    return value


def _resolve_file(arg: str, ctx: ResolveContext) -> str:
    if not arg:
        raise ConfigError("empty path in ${file:...} reference", key=ctx.where)
    path = Path(arg).expanduser()
    if not path.is_absolute() and ctx.base_dir is not None:
        path = ctx.base_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"secret file {path} is not UTF-8 text", key=ctx.where) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot read secret file {path}: {reason}", key=ctx.where) from None
    text = text.rstrip("\r\n")
    if not text:
        raise ConfigError(f"secret file {path} is empty", key=ctx.where)
    return text


def _resolve_vault(name: str, ctx: ResolveContext) -> str:
    raise ConfigError("vault references need the azure extra (not configured)", key=ctx.where)


RESOLVERS: dict[str, Resolver] = {
    "env": _resolve_env,
    "file": _resolve_file,
    "vault": _resolve_vault,
}
"""Scheme -> resolver.  Later issues add or replace entries (``vault``)."""

# "$" then an optional second "$" (escape), then {scheme:argument}.
_REF = re.compile(r"\$(\$?)\{([A-Za-z][A-Za-z0-9_]*):([^{}]*)\}")


def resolve_refs(
    value: str,
    *,
    environ: Mapping[str, str],
    where: str,
    base_dir: Path | None = None,
    redactor: Redactor | None = REDACTOR,
    resolvers: Mapping[str, Resolver] | None = None,
) -> str | Secret:
    """Resolve the ``${scheme:arg}`` references in ``value``.

    No reference: ``value`` comes back as it is (``$${`` unescaped).  Any
    reference: the result is a ``Secret`` -- the resolved value alone when the
    whole string was one reference, else the string with each substituted.
    Resolved values are registered with ``redactor``.  Errors are
    ``ConfigError`` naming ``where`` (file and key), never the value.
    """
    if "${" not in value:
        return value
    table = RESOLVERS if resolvers is None else resolvers
    ctx = ResolveContext(environ=environ, where=where, base_dir=base_dir)
    out: list[str] = []
    resolved: list[str] = []
    pos = 0
    for m in _REF.finditer(value):
        gap = value[pos : m.start()]
        if "${" in gap:
            raise _malformed(where)
        out.append(gap)
        escaped, scheme, arg = m.group(1), m.group(2), m.group(3)
        if escaped:
            out.append(m.group(0)[1:])
        else:
            resolver = table.get(scheme)
            if resolver is None:
                known = ", ".join(sorted(table))
                raise ConfigError(
                    f"unknown reference scheme {scheme!r} (known: {known})", key=where
                )
            secret = resolver(arg, ctx)
            resolved.append(secret)
            out.append(secret)
        pos = m.end()
    tail = value[pos:]
    if "${" in tail:
        raise _malformed(where)
    out.append(tail)
    result = "".join(out)
    if not resolved:
        return result
    if redactor is not None:
        for part in resolved:
            redactor.register(part)
        redactor.register(result)
    return Secret(result)


def _malformed(where: str) -> ConfigError:
    return ConfigError(
        "malformed reference: use ${env:NAME}, ${file:/path} or ${vault:name} "
        "(write $${ for a literal ${)",
        key=where,
    )
