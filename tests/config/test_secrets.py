"""Secret values, redaction (in text and in logs) and reference resolution."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from masterchief.config.secrets import (
    RESOLVERS,
    RedactingFilter,
    Redactor,
    ResolveContext,
    Secret,
    install_log_redaction,
    resolve_refs,
)
from masterchief.errors import ConfigError

WHERE = "config/global/config.yaml: irc.sasl.password"


# --- Secret -----------------------------------------------------------------------------


def test_secret_never_prints_its_value() -> None:
    s = Secret("hunter2-xyz")
    assert repr(s) == "***"
    assert str(s) == "***"
    assert f"{s}" == "***"
    assert "hunter2" not in repr({"password": s, "list": [s]})
    assert s.reveal() == "hunter2-xyz"


def test_secret_equality_and_truth() -> None:
    assert Secret("abcd") == Secret("abcd")
    assert Secret("abcd") != Secret("abce")
    assert Secret("abcd") != "abcd"  # a secret is not its plain string
    assert len({Secret("abcd"), Secret("abcd")}) == 1
    assert not Secret("")
    with pytest.raises(TypeError):
        Secret(1234)  # type: ignore[arg-type]


# --- Redactor ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered", "text", "expected"),
    [
        (["s3cr3t!"], "token=s3cr3t! end", "token=*** end"),
        (["s3cr3t!"], "twice s3cr3t!s3cr3t!", "twice ******"),
        (["abc"], "abc is too short to redact", "abc is too short to redact"),
        (["abcd"], "abcd is long enough", "*** is long enough"),
        # longest first: a secret containing another is masked whole
        (["pass", "password123"], "x password123 y pass", "x *** y ***"),
        # regex metacharacters are literal
        (["a.b*c+d"], "a.b*c+d and aXbbcd", "*** and aXbbcd"),
        # multi-line secret: each line is masked on its own too
        (["-----BEGIN-----\nMIIBOgIBAAJB\n-----END-----"], "line MIIBOgIBAAJB", "line ***"),
        ([Secret("wrapped-secret")], "see wrapped-secret", "see ***"),
        ([], "nothing registered", "nothing registered"),
    ],
)
def test_redactor(registered: list[str | Secret], text: str, expected: str) -> None:
    r = Redactor()
    for value in registered:
        r.register(value)
    assert r.redact(text) == expected


def test_redactor_clear_and_values() -> None:
    r = Redactor()
    r.register("one-secret")
    r.register("one-secret")
    assert r.values() == frozenset({"one-secret"})
    r.clear()
    assert r.redact("one-secret") == "one-secret"


# --- logging ----------------------------------------------------------------------------


@pytest.fixture
def logger_and_stream() -> Iterator[tuple[logging.Logger, io.StringIO, Redactor]]:
    logger = logging.getLogger("masterchief.test.redaction")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    redactor = Redactor()
    redactor.register("tok-9f8e7d6c")
    try:
        yield logger, stream, redactor
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_log_records_are_redacted(
    logger_and_stream: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, stream, redactor = logger_and_stream
    flt = install_log_redaction(logger, redactor)
    assert isinstance(flt, RedactingFilter)
    install_log_redaction(logger, redactor)  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in logger.handlers[0].filters) == 1

    logger.info("message tok-9f8e7d6c inline")
    logger.info("arg %s and %r", "tok-9f8e7d6c", {"k": "tok-9f8e7d6c"})
    logger.info("a Secret prints as %s", Secret("tok-9f8e7d6c"))
    try:
        raise RuntimeError("connect failed with password tok-9f8e7d6c")
    except RuntimeError:
        logger.exception("boom")
    logger.info("bad args %d", "tok-9f8e7d6c")

    out = stream.getvalue()
    assert "tok-9f8e7d6c" not in out
    assert "message *** inline" in out
    assert "arg *** and {'k': '***'}" in out
    assert "a Secret prints as ***" in out
    assert "RuntimeError: connect failed with password ***" in out


# --- references -------------------------------------------------------------------------

ENV = {"MC_PW": "pw-from-env-1", "USER_X": "bob", "EMPTY": ""}


@pytest.mark.parametrize(
    ("value", "expected", "is_secret"),
    [
        ("plain text", "plain text", False),
        ("${env:MC_PW}", "pw-from-env-1", True),
        ("user=${env:USER_X};pw=${env:MC_PW}", "user=bob;pw=pw-from-env-1", True),
        ("https://${env:USER_X}:${env:MC_PW}@host/x", "https://bob:pw-from-env-1@host/x", True),
        ("$${env:MC_PW} is literal", "${env:MC_PW} is literal", False),
        ("cost: $5 {not a ref}", "cost: $5 {not a ref}", False),
    ],
)
def test_resolve_env(value: str, expected: str, is_secret: bool) -> None:
    r = Redactor()
    out = resolve_refs(value, environ=ENV, where=WHERE, redactor=r)
    assert isinstance(out, Secret) is is_secret
    got = out.reveal() if isinstance(out, Secret) else out
    assert got == expected
    if is_secret:
        assert r.redact(f"log {got}") == "log ***"
        assert "pw-from-env-1" not in r.redact("x pw-from-env-1 x")
    else:
        assert len(r) == 0


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("${env:NOPE}", "environment variable NOPE is not set"),
        ("${env:EMPTY}", "environment variable EMPTY is empty"),
        ("${env:bad-name}", "invalid environment variable name"),
        ("${vault:db-password}", "vault references need the azure extra (not configured)"),
        ("${s3:bucket/key}", "unknown reference scheme 's3'"),
        ("${env:MC_PW", "malformed reference"),
        ("${MC_PW}", "malformed reference"),
        ("prefix ${env:MC_PW} ${oops", "malformed reference"),
        ("${file:}", "empty path"),
    ],
)
def test_resolve_errors_name_where_but_not_values(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_refs(value, environ=ENV, where=WHERE, redactor=Redactor())
    message = str(info.value)
    assert message.startswith(WHERE + ": ")
    assert fragment in message
    assert "pw-from-env-1" not in message


def test_missing_variable_is_never_an_empty_string() -> None:
    with pytest.raises(ConfigError):
        resolve_refs("a${env:NOPE}b", environ={}, where=WHERE)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("file-secret-1\n", "file-secret-1"),
        ("file-secret-1\r\n", "file-secret-1"),
        ("file-secret-1", "file-secret-1"),
        ("line one\nline two\n\n", "line one\nline two"),
        ("  spaces kept  \n", "  spaces kept  "),
    ],
)
def test_resolve_file(tmp_path: Path, content: str, expected: str) -> None:
    f = tmp_path / "secret.txt"
    f.write_bytes(content.encode())
    for ref in (f"${{file:{f}}}", "${file:secret.txt}"):
        out = resolve_refs(ref, environ={}, where=WHERE, base_dir=tmp_path, redactor=Redactor())
        assert isinstance(out, Secret)
        assert out.reveal() == expected


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("missing", "cannot read secret file"),
        ("directory", "cannot read secret file"),
        ("empty", "is empty"),
        ("binary", "is not UTF-8 text"),
    ],
)
def test_resolve_file_errors(tmp_path: Path, setup: str, fragment: str) -> None:
    f = tmp_path / "secret"
    if setup == "directory":
        f.mkdir()
    elif setup == "empty":
        f.write_text("\n")
    elif setup == "binary":
        f.write_bytes(b"\xff\xfe\x00secret-bytes")
    with pytest.raises(ConfigError) as info:
        resolve_refs(f"${{file:{f}}}", environ={}, where=WHERE)
    message = str(info.value)
    assert message.startswith(WHERE + ": ")
    assert fragment in message
    assert str(f) in message
    assert "secret-bytes" not in message


def test_resolver_table_is_extensible() -> None:
    def fake_vault(name: str, ctx: ResolveContext) -> str:
        return f"vault-value-for-{name}"

    table = {**RESOLVERS, "vault": fake_vault}
    out = resolve_refs("${vault:db}", environ={}, where=WHERE, resolvers=table, redactor=Redactor())
    assert isinstance(out, Secret)
    assert out.reveal() == "vault-value-for-db"


def test_base64_forms_of_a_secret_are_masked_too() -> None:
    import base64

    r = Redactor()
    r.register("db-Pa55word-zq81?")
    raw = b"db-Pa55word-zq81?"
    for form in (
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
    ):
        assert r.redact(f"data: {form}") == "data: ***", form


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        ("tok-Zq81-api", "x *** y"),
        ("TOK-ZQ81-API", "x *** y"),
        ("tok-zq81-api", "x *** y"),
        ("ipa-18qZ-kot", "x *** y"),  # reversed
        ("IPA-18QZ-KOT", "x *** y"),
        ("t.o.k.-.Z.q.8.1.-.a.p.i", "x *** y"),  # | list | join('.')
        ("t o k - Z q 8 1 - a p i", "x *** y"),
        ("i,p,a,-,1,8,q,Z,-,k,o,t", "x *** y"),
        ("tok-Zq8", "x tok-Zq8 y"),  # a prefix is not the secret
        ("t..o..k-Zq81-api", "x t..o..k-Zq81-api y"),  # two separators
    ],
)
def test_variants_of_a_job_secret_are_masked(shown: str, expected: str) -> None:
    r = Redactor(variants=True)
    r.register("tok-Zq81-api")
    assert r.redact(f"x {shown} y") == expected
    plain = Redactor()  # the global redactor masks the exact forms only
    plain.register("tok-Zq81-api")
    assert (plain.redact(f"x {shown} y") == "x *** y") == (shown == "tok-Zq81-api")
