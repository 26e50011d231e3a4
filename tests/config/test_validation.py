"""config.validation and config.tree: error locations in words, merged trees with origins."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from masterchief.config.secrets import Redactor, Secret
from masterchief.config.tree import KeyPath, mark_origins, merge, origin_of, secrets_in
from masterchief.config.validation import field_at, located


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Param(_Strict):
    pattern: str | None = None
    default: int = 0


class Section(_Strict):
    name: str = "x"
    params: dict[str, Param] = {}
    items: tuple[Param, ...] = ()


class Root(_Strict):
    section: Section = Section()
    port: int = 1
    token: str = ""
    env: str = "dev"  # set by a loader, never in a file


@pytest.mark.parametrize(
    ("loc", "parent", "field"),
    [
        (("port",), Root, "port"),
        (("section", "name"), Section, "name"),
        (("section", "params", "web", "pattern"), Param, "pattern"),  # a mapping's key is skipped
        (("section", "items", 2, "default"), Param, "default"),  # a list index too
        (("section", "nmae"), Section, None),  # unknown: the model that lacks it
        (("port", "deeper"), None, None),  # below a field that is not a model
    ],
)
def test_field_at(loc: KeyPath, parent: type[BaseModel] | None, field: str | None) -> None:
    found, annotation = field_at(Root, loc)
    assert found is parent
    expected = parent.model_fields[field].annotation if parent and field else None
    assert annotation == expected


def _error(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Root.model_validate(data)
    return info.value


def test_located_names_every_error_with_its_file_and_key() -> None:
    exc = _error({"section": {"nmae": "y", "params": {"web": {"patern": "a"}}}, "port": "many"})
    file, key, detail = located(exc, Root, lambda loc: f"{loc[0]}.yaml")
    lines = detail.splitlines()
    assert (file, key) == ("section.yaml", "section.params.web.patern")
    assert lines[0] == "unknown key (did you mean 'pattern'?)"
    assert "section.yaml: section.nmae: unknown key (did you mean 'name'?)" in lines
    assert (
        "port.yaml: port: Input should be a valid integer, unable to parse string as an "
        "integer (got 'many')" in lines
    )


def test_located_hides_what_may_not_be_shown() -> None:
    exc = _error({"port": "hunter2", "envv": "x"})
    hide = Redactor()
    hide.register("hunter2")
    _file, _key, detail = located(
        exc,
        Root,
        lambda loc: "c.yaml",
        shown=lambda loc, annotation: loc != ("port",),
        hidden_keys=("env",),
        hide=hide,
    )
    assert "hunter2" not in detail and "(got" not in detail
    assert "env'" not in detail  # a loader's key is never suggested
    assert "known keys: section, port, token" in detail


def test_merge_records_which_file_each_key_came_from() -> None:
    base: dict[str, Any] = {"irc": {"host": "a", "port": 1}, "list": [1, 2]}
    origins: dict[KeyPath, str] = {}
    mark_origins(base, "global.yaml", origins, ())
    merge(base, {"irc": {"port": 2}, "list": [3]}, "prod.yaml", origins, ())
    assert base == {"irc": {"host": "a", "port": 2}, "list": [3]}
    assert origin_of(origins, ("irc", "host")) == "global.yaml"
    assert origin_of(origins, ("irc", "port")) == "prod.yaml"
    assert origin_of(origins, ("list", 1)) == "prod.yaml"  # the old item's origin is gone
    assert origin_of(origins, ("nowhere",)) == "global.yaml"  # the top level's


def test_secrets_in_walks_models_mappings_and_sequences() -> None:
    class Holder(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        one: Secret
        many: tuple[Secret, ...]

    a, b, c, d = Secret("a"), Secret("b"), Secret("c"), Secret("d")
    tree = {"x": [a, {"y": b}], "z": (Holder(one=c, many=(d,)),), "plain": "e"}
    assert [s.reveal() for s in secrets_in(tree)] == ["a", "b", "c", "d"]
