"""Script loading without a server: atomic replace, broken scripts, task ownership."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.bindings.scripts import ScriptManager


def write(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()  # make sure the mtime differs even within one clock tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


GOOD = """
from masterchief import bind
import masterchief

@bind("pub", "-|-", "!a")
def a(ev):
    ev.reply("A1")

masterchief.bind("pub", "-|-", "!b", lambda ev: ev.reply("B1"))
"""


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    table = BindingTable()
    mgr = ScriptManager(table, [tmp_path])
    return table, mgr, tmp_path


def test_load_reload_and_broken(setup) -> None:  # type: ignore[no-untyped-def]
    table, mgr, d = setup
    write(d / "one.py", GOOD)
    (r,) = mgr.load_all()
    assert r.ok and r.bindings == 2 and r.owner == "script:one"
    assert sorted(b.mask for b in table.binds()) == ["!a", "!b"]
    # a new version replaces all of the old bindings at once
    write(d / "one.py", 'from masterchief import bind\nbind("pub", "-|-", "!c", print)\n')
    (r,) = mgr.scan_changes()
    assert r.ok and [b.mask for b in table.binds()] == ["!c"]
    # a broken version leaves the previous one bound and says where
    write(d / "one.py", 'from masterchief import bind\nbind("pub", "-|-", "!d", print)\nx = (\n')
    (r,) = mgr.scan_changes()
    assert not r.ok and r.error is not None
    assert r.error.startswith("SyntaxError at line 3") and "previous version stays bound" in r.error
    assert [b.mask for b in table.binds()] == ["!c"]
    # a runtime error at import: line of the script, not of our loader
    write(d / "one.py", 'from masterchief import bind\nbind("pub", "-|-", "!e", print)\n1/0\n')
    (r,) = mgr.scan_changes()
    assert r.error is not None and r.error.startswith("ZeroDivisionError at line 3")
    assert "division" not in r.error  # exception text stays in the log
    assert [b.mask for b in table.binds()] == ["!c"]
    # a bad bind call is an import failure too
    write(d / "one.py", 'from masterchief import bind\nbind("nosuch", "-|-", "x", print)\n')
    (r,) = mgr.scan_changes()
    assert r.error is not None and r.error.startswith("BindError at line 2")
    # deleting the file unloads it
    (d / "one.py").unlink()
    mgr.scan_changes()
    assert table.binds() == [] and mgr.loaded == []


def test_unchanged_files_are_not_reloaded(setup) -> None:  # type: ignore[no-untyped-def]
    table, mgr, d = setup
    write(d / "one.py", GOOD)
    mgr.load_all()
    first = table.binds()
    assert mgr.scan_changes() == []
    assert table.binds() == first


@pytest.mark.parametrize("how", ["edited", "deleted"])
async def test_tasks_started_by_a_script_die_with_it(setup, how: str) -> None:  # type: ignore[no-untyped-def]
    """Tasks a script started (at import and from a handler) are cancelled when
    a new version replaces it and when its file is deleted."""
    table, mgr, d = setup
    mgr.install_task_factory(asyncio.get_running_loop())
    write(
        d / "bg.py",
        """
import asyncio
from masterchief import bind

started = []

async def forever():
    await asyncio.Event().wait()

started.append(asyncio.get_running_loop().create_task(forever()))

@bind("pub", "-|-", "!spawn")
async def spawn(ev):
    started.append(asyncio.get_running_loop().create_task(forever()))
""",
    )
    (r,) = mgr.load_all()
    assert r.ok
    module = mgr._modules["script:bg"]
    disp = Dispatcher(table)
    worker = asyncio.create_task(disp.run())
    disp.submit(Event(type="pub", key="!spawn"))
    await disp.drain()
    tasks = list(module.started)
    assert len(tasks) == 2 and not any(t.done() for t in tasks)
    if how == "edited":
        write(d / "bg.py", "x = 1\n")  # reload: the old version's tasks are cancelled
    else:
        (d / "bg.py").unlink()  # unload: its tasks are cancelled and its bindings go
    mgr.scan_changes()
    assert mgr.loaded == (["script:bg"] if how == "edited" else [])
    assert [b.mask for b in table.binds()] == []
    # wait for the tasks to finish (with a deadline); they must end cancelled
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert all(t.cancelled() for t in tasks)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)


def test_example_scripts_load(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    table = BindingTable()
    results = ScriptManager(table, [root / "scripts"]).load_all()
    assert results and all(r.ok for r in results), [str(r) for r in results]
    types = {b.type for b in table.binds()}
    # one example for each bind family
    assert {"pub", "msg", "pubm", "msgm", "notc", "join", "part", "sign", "nick", "kick",
            "mode", "topc", "ctcp", "ctcr", "raw", "time", "cron", "evnt", "event"} <= types  # fmt: skip
