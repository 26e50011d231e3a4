"""Deploy parameters: key=value parsing and validation against the manifest (tables, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from masterchief.deploy.manifest import Manifest
from masterchief.deploy.params import MAX_ARGS, parse_args, redact_params, validate_params
from masterchief.errors import UserError

MANIFEST = Manifest.model_validate(
    {
        "name": "web-app",
        "version": "1.2.0",
        "kind": "ansible",
        "entry": "site.yml",
        "environments": ["dev", "staging", "prod"],
        "parameters": {
            "version": {"pattern": r"^[0-9]+\.[0-9]+\.[0-9]+$", "required": True},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 20, "default": 2},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "canary": {"type": "boolean", "default": False},
            "region": {"enum": ["eu", "us"], "default": "eu"},
            "note": {"max_length": 10},
            "token": {"secret": True, "pattern": "^[a-f0-9]{8}$"},
        },
    }
)

BARE = Manifest.model_validate(
    {"name": "bare", "version": "0.1.0", "kind": "script", "entry": "run", "environments": ["dev"]}
)


# --- parse_args ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], {}),
        (["version=1.2.3"], {"version": "1.2.3"}),
        (["version=1.2.3", "replicas=3"], {"version": "1.2.3", "replicas": "3"}),
        (["note=a=b=c"], {"note": "a=b=c"}),
        (["note="], {"note": ""}),
    ],
)
def test_parse_args_accepts(words: list[str], expected: dict[str, str]) -> None:
    assert parse_args(words) == expected


@pytest.mark.parametrize(
    ("words", "reason"),
    [
        (
            ["--kubeconfig=/tmp/x"],
            "options are not accepted ('--kubeconfig'); give parameters as name=value",
        ),
        (["--kubeconfig", "/tmp/x"], "options are not accepted ('--kubeconfig')"),
        (["-x=1"], "options are not accepted ('-x')"),
        (["1.2.3"], "'1.2.3' is not name=value"),
        (["=value"], "parameter name missing before '=' in '=value'"),
        (["version=1", "version=2"], "parameter 'version' given twice"),
        (["ver\x00sion=1"], "invalid parameter name 'ver\\x00sion'"),
        (["a=1"] * (MAX_ARGS + 1), "too many parameters"),
        (["note=" + "x" * 5000], "parameters too long"),
    ],
)
def test_parse_args_refuses(words: list[str], reason: str) -> None:
    with pytest.raises(UserError) as info:
        parse_args(words)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_parse_args_quotes_only_a_short_escaped_prefix() -> None:
    hostile = "x" * 300 + "\r\nPRIVMSG #ops :pwned"
    with pytest.raises(UserError) as info:
        parse_args([hostile])
    text = str(info.value)
    assert "pwned" not in text and "\r" not in text and "\n" not in text
    assert len(text) < 120


# --- validate_params ------------------------------------------------------------------------


def test_valid_parameters_are_typed_and_defaults_filled() -> None:
    got = validate_params(MANIFEST, "prod", {"version": "1.2.3", "replicas": "5", "ratio": "0.5"})
    assert got == {"version": "1.2.3", "replicas": 5, "ratio": 0.5, "canary": False, "region": "eu"}
    assert isinstance(got["replicas"], int)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        ("no", False),
        ("0", False),
    ],
)
def test_boolean_words(raw: str, value: bool) -> None:
    assert validate_params(MANIFEST, "dev", {"version": "1.0.0", "canary": raw})["canary"] is value


@pytest.mark.parametrize(
    ("env", "raw", "reason"),
    [
        # the issue's injection attempts
        (
            "prod",
            {"version": "1.0; rm -rf /"},
            "parameter version: '1.0; rm -rf /' does not match the pattern",
        ),
        (
            "prod",
            {"version": "1.0.0", "kubeconfig": "/tmp/x"},
            "unknown parameter 'kubeconfig' for web-app (known: canary, note, ratio, region, replicas, token, version)",
        ),
        (
            "qa",
            {"version": "1.0.0"},
            "web-app has no environment 'qa' (environments: dev, staging, prod)",
        ),
        ("prod", {}, "web-app needs parameter version (name=value)"),
        # types
        (
            "dev",
            {"version": "1.0.0", "replicas": "three"},
            "parameter replicas: 'three' is not an integer",
        ),
        ("dev", {"version": "1.0.0", "replicas": "3.0"}, "is not an integer"),
        ("dev", {"version": "1.0.0", "replicas": " 3"}, "is not an integer"),
        ("dev", {"version": "1.0.0", "replicas": "1_0"}, "is not an integer"),
        ("dev", {"version": "1.0.0", "replicas": "0x10"}, "is not an integer"),
        ("dev", {"version": "1.0.0", "ratio": "nan"}, "is not a number"),
        ("dev", {"version": "1.0.0", "ratio": "1e999"}, "is not a number"),
        (
            "dev",
            {"version": "1.0.0", "canary": "maybe"},
            "is not a boolean (true/false, yes/no, 1/0)",
        ),
        # ranges, enum, length
        (
            "dev",
            {"version": "1.0.0", "replicas": "0"},
            "parameter replicas: '0' is less than the minimum 1",
        ),
        ("dev", {"version": "1.0.0", "replicas": "21"}, "is more than the maximum 20"),
        ("dev", {"version": "1.0.0", "ratio": "1.5"}, "is more than the maximum 1"),
        (
            "dev",
            {"version": "1.0.0", "region": "mars"},
            "parameter region: 'mars' is not one of eu, us",
        ),
        ("dev", {"version": "1.0.0", "note": "x" * 11}, "is longer than 10 characters"),
        ("dev", {"version": "1.0.0", "replicas": "9" * 100}, "is longer than 64 characters"),
        # control characters
        ("dev", {"version": "1.0.0", "note": "a\x00b"}, "contains control characters"),
        ("dev", {"version": "1.0.0", "note": "a\nb"}, "contains control characters"),
        ("dev", {"version": "1.0.0", "note": "\x02bold"}, "contains control characters"),
        ("dev", {"version": "1.0.0", "note": "a\u202eb"}, "contains control characters"),
        ("dev", {"version": "1.0.0\n"}, "contains control characters"),
    ],
)
def test_refusals_are_one_line(env: str, raw: dict[str, str], reason: str) -> None:
    with pytest.raises(UserError) as info:
        validate_params(MANIFEST, env, raw)
    text = str(info.value)
    assert reason in text
    assert not any(c in text for c in "\r\n\x00\x02\u202e")


def test_module_without_parameters_says_so() -> None:
    with pytest.raises(UserError, match=r"unknown parameter 'x' for bare \(known: it takes none\)"):
        validate_params(BARE, "dev", {"x": "1"})
    assert validate_params(BARE, "dev", {}) == {}


def test_long_hostile_value_is_quoted_by_prefix_only() -> None:
    value = "1.0.0" + "A" * 200 + "$(curl evil)"
    with pytest.raises(UserError) as info:
        validate_params(MANIFEST, "dev", {"version": value})
    assert "curl" not in str(info.value)
    assert "'1.0.0AAAA" in str(info.value)


def test_secret_parameter_value_never_echoed() -> None:
    with pytest.raises(UserError) as info:
        validate_params(MANIFEST, "dev", {"version": "1.0.0", "token": "s3cr3t-nope"})
    assert "s3cr3t" not in str(info.value)
    assert str(info.value).startswith("parameter token: does not match")


def test_redact_params_masks_secret_values() -> None:
    params: dict[str, Any] = validate_params(
        MANIFEST, "dev", {"version": "1.0.0", "token": "deadbeef"}
    )
    assert params["token"] == "deadbeef"
    shown = redact_params(MANIFEST, params)
    assert shown["token"] == "***"
    assert shown["version"] == "1.0.0"


def test_full_command_line_from_the_issue() -> None:
    words = ["version=1.0;", "rm", "-rf", "/"]
    with pytest.raises(UserError, match="'rm' is not name=value"):
        parse_args(words)
