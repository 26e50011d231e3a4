"""Every method of every store Protocol has a contract test.

A method counts as covered when some test function in a
``test_contract_*.py`` module calls it on a store (``store.m(...)``,
``other.m(...)``, ``s.m(...)``).  A method added to ``api.py`` without a
contract test fails here, so a second backend cannot skip it.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from masterchief.store import api
from masterchief.store.api import AGGREGATES, Store

HERE = Path(__file__).parent
STORE_NAMES = {"store", "other", "s"}


def _methods(proto: type) -> dict[str, object]:
    """The public coroutine methods of ``proto`` and its bases, by name."""
    return {
        n: v
        for klass in reversed(proto.__mro__)
        for n, v in vars(klass).items()
        if inspect.iscoroutinefunction(v) and not n.startswith("_")
    }


def protocol_methods() -> set[str]:
    return set(_methods(Store))


def called_in_contract_tests() -> set[str]:
    called: set[str] = set()
    for path in sorted(HERE.glob("test_contract_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not (isinstance(fn, ast.AsyncFunctionDef) and fn.name.startswith("test_")):
                continue
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in STORE_NAMES
                ):
                    called.add(node.func.attr)
    return called


def test_every_protocol_method_has_a_contract_test() -> None:
    methods = protocol_methods()
    assert len(methods) > 40  # the enumeration itself works
    missing = sorted(methods - called_in_contract_tests())
    assert missing == [], f"store methods without a contract test: {missing}"


def test_every_store_protocol_is_part_of_the_store() -> None:
    # A Protocol added to api.py but left out of ``Store`` would escape the
    # enumeration above (and so the contract suite).
    protocols = [
        v
        for v in vars(api).values()
        if inspect.isclass(v) and getattr(v, "_is_protocol", False) and v.__module__ == api.__name__
    ]
    assert set(AGGREGATES) < set(protocols)
    for proto in protocols:
        declares = any(inspect.iscoroutinefunction(v) for v in vars(proto).values())
        # an aggregate (it declares methods) is a base of Store; a combination
        # of aggregates (LoggedReplayStore) only names methods Store has
        assert proto in Store.__mro__ or not declares, proto.__name__
        assert set(_methods(proto)) <= protocol_methods(), proto.__name__


def test_the_sqlite_backend_implements_every_method() -> None:
    from masterchief.store.sqlite import SqliteStore

    wanted = _methods(Store)
    for name, want in wanted.items():
        ours = getattr(SqliteStore, name, None)
        assert ours is not None and inspect.iscoroutinefunction(ours), name
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(want).parameters  # type: ignore[arg-type]
        ), name
