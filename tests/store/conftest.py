"""The store contract suite's fixtures, parametrised by backend.

Every ``test_contract_*.py`` test takes ``store`` (a fresh, empty store) and,
where a second writer matters, ``other`` (a second connection to the same
database: another process's view).  They use nothing but the Protocols in
``masterchief.store.api``, so a new backend passes the suite by adding one
entry to ``BACKENDS`` (a PostgreSQL one: a database per test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from masterchief.store.api import Store
from masterchief.store.sqlite import open_store

Opener = Callable[[], Awaitable[Store]]


def _sqlite(tmp_path: Path) -> Opener:
    path = tmp_path / "mc.db"
    return lambda: open_store(path)


BACKENDS: dict[str, Callable[[Path], Opener]] = {"sqlite": _sqlite}
"""Backend name -> (tmp_path -> opener of connections to one fresh database)."""


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
async def store(backend: Opener) -> AsyncIterator[Store]:
    s = await backend()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def other(backend: Opener, store: Store) -> AsyncIterator[Store]:
    """A second connection to ``store``'s database (opened after it)."""
    s = await backend()
    try:
        yield s
    finally:
        await s.close()
