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

from masterchief.store.api import AGGREGATES, Store

HERE = Path(__file__).parent
STORE_NAMES = {"store", "other", "s"}


def protocol_methods() -> set[str]:
    names: set[str] = set()
    for proto in (*AGGREGATES, Store):
        names |= {
            n
            for n, v in vars(proto).items()
            if inspect.iscoroutinefunction(v) and not n.startswith("_")
        }
    return names


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


def test_every_aggregate_is_in_the_store() -> None:
    assert set(AGGREGATES) <= set(Store.__mro__)


def test_every_protocol_method_has_a_contract_test() -> None:
    methods = protocol_methods()
    assert len(methods) > 40  # the enumeration itself works
    missing = sorted(methods - called_in_contract_tests())
    assert missing == [], f"store methods without a contract test: {missing}"


def test_the_sqlite_backend_implements_every_method() -> None:
    from masterchief.store.sqlite import SqliteStore

    for name in protocol_methods():
        ours = getattr(SqliteStore, name, None)
        assert ours is not None and inspect.iscoroutinefunction(ours), name
        want = inspect.signature(
            getattr(next(p for p in (*AGGREGATES, Store) if name in vars(p)), name)
        )
        assert list(inspect.signature(ours).parameters) == list(want.parameters), name
