"""Deploy modules: discovery, ordering, reload, add/remove."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from masterchief.deploy.catalog import (
    ModuleLoader,
    ReloadResult,
    add_module,
    discover,
    load_modules,
    remove_module,
)
from masterchief.deploy.manifest import ModuleError
from masterchief.errors import UserError
from tests.deploy.test_manifest import manifest, write_module

# --- discovery ------------------------------------------------------------------------------


def test_discover_nested_sorted_and_skips_dot_folders(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    b = write_module(root / "team" / "b", manifest("b"))
    a = write_module(root / "a", manifest("a"))
    write_module(root / ".removed" / "old-20240101T000000Z", manifest("old"))
    write_module(root / "a" / "inner", manifest("inner"))  # inside a module: its files
    outside = write_module(tmp_path / "elsewhere" / "c", manifest("c")).parent
    (root / "linked").symlink_to(outside, target_is_directory=True)
    assert discover([root, tmp_path / "missing"]) == sorted([a, b])


def test_one_bad_module_does_not_hide_the_others(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "good", manifest("good"))
    write_module(root / "bad", manifest("bad", kind="helm"))
    found = load_modules([root])
    assert found.names == ("good",)
    assert [str(e).split(": ")[:2] for e in found.errors] == [["modules/bad/module.yaml", "kind"]]


def test_duplicate_names_name_both_files(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "one", manifest("web"))
    write_module(root / "two", manifest("web"))
    found = load_modules([root])
    assert "web" not in found
    assert len(found.errors) == 1
    assert "modules/one/module.yaml and modules/two/module.yaml" in str(found.errors[0])


# --- ordering ----------------------------------------------------------------------------------


def make_graph(root: Path, graph: dict[str, list[str]]) -> None:
    for name, requires in graph.items():
        write_module(root / name, manifest(name, requires=requires))


def test_order_and_closure(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    make_graph(root, {"app": ["db", "net"], "db": ["net"], "net": [], "other": []})
    found = load_modules([root])
    assert found.errors == ()
    order = [m.name for m in found.order]
    assert order.index("net") < order.index("db") < order.index("app")
    assert [m.name for m in found.closure("app")] == ["net", "db", "app"]
    assert [m.name for m in found.closure("net")] == ["net"]
    with pytest.raises(UserError, match="unknown module 'nope'; try !modules"):
        found.closure("nope")


def test_missing_dependency_named_and_dependents_excluded(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    make_graph(root, {"app": ["db"], "db": ["ghost"], "solo": []})
    found = load_modules([root])
    assert found.names == ("solo",)
    messages = sorted(str(e) for e in found.errors)
    assert messages == [
        "modules/app/module.yaml: requires: app requires db, which is not usable (see its error)",
        "modules/db/module.yaml: requires: db requires ghost, which is not a known module",
    ]


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": ["b"], "b": ["a"]}, "a -> b -> a"),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "a -> b -> c -> a"),
        ({"b": ["a"], "a": ["c"], "c": ["b"]}, "a -> c -> b -> a"),
        ({"a": ["a"]}, "a -> a"),
    ],
)
def test_cycle_is_reported_and_excluded(
    tmp_path: Path, graph: dict[str, list[str]], cycle: str
) -> None:
    root = tmp_path / "modules"
    make_graph(root, {**graph, "top": ["a"], "free": []})
    found = load_modules([root])
    assert found.names == ("free",)
    texts = [str(e) for e in found.errors]
    assert f"modules/a/module.yaml: requires: dependency cycle: {cycle}" in texts
    assert (
        "modules/top/module.yaml: requires: top requires a, which is not usable (see its error)"
        in texts
    )


# --- the loader ----------------------------------------------------------------------------------


def test_reload_keeps_old_version_on_broken_edit_and_takes_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web", version="1.0.0"))
    write_module(root / "db", manifest("db"))
    loader = ModuleLoader([root])
    seen: list[ReloadResult] = []
    loader.on_change.append(seen.append)

    first = loader.reload()
    assert first.added == ("db", "web") and first.ok
    assert loader.current.require("web").version == "1.0.0"

    write_module(root / "web", manifest("web", version="1.1.0", kind="helm"))
    broken = loader.reload()
    assert broken.kept == ("web",)
    assert broken.changed == () and broken.removed == ()
    assert [e.key for e in broken.errors] == ["kind"]
    assert loader.current.require("web").version == "1.0.0"
    assert "old version kept for web" in broken.summary()

    write_module(root / "web", manifest("web", version="1.1.0"))
    fixed = loader.reload()
    assert fixed.ok and fixed.changed == ("web",) and fixed.kept == ()
    assert loader.current.require("web").version == "1.1.0"

    (root / "db" / "module.yaml").unlink()
    gone = loader.reload()
    assert gone.removed == ("db",)
    assert "db" not in loader.current
    assert seen == [first, broken, fixed, gone]


def test_reload_notices_content_change_without_manifest_change(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])
    loader.reload()
    assert loader.reload().summary() == "modules: no change"
    (root / "web" / "site.yml").write_text("- hosts: other\n")
    assert loader.reload().changed == ("web",)


def test_reload_keeps_dependency_of_a_kept_module(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    make_graph(root, {"app": ["net"], "net": []})
    loader = ModuleLoader([root])
    loader.reload()
    write_module(root / "net", manifest("net", version="x"))
    result = loader.reload()
    assert result.kept == ("net",)
    assert [m.name for m in loader.current.closure("app")] == ["net", "app"]


def test_callback_failure_does_not_break_reload(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])

    def boom(_result: ReloadResult) -> None:
        raise RuntimeError("callback bug")

    got: list[ReloadResult] = []
    loader.on_change.extend([boom, got.append])
    assert loader.reload().added == ("web",)
    assert len(got) == 1


async def wait_for(
    predicate: Callable[[], bool], changed: asyncio.Event, timeout: float = 15.0
) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await changed.wait()
            changed.clear()


async def test_watch_notices_a_new_module_and_an_edit(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])
    loader.reload()
    changed = asyncio.Event()
    loader.on_change.append(lambda _r: changed.set())
    task = asyncio.create_task(loader.watch(interval=0.01))
    try:
        write_module(root / "db", manifest("db"))
        await wait_for(lambda: "db" in loader.current, changed)
        manifest_file = root / "web" / "module.yaml"
        manifest_file.write_text(yaml.safe_dump(manifest("web", version="2.0.0")))
        st = manifest_file.stat()
        os.utime(manifest_file, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        await wait_for(lambda: loader.current.require("web").version == "2.0.0", changed)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_does_not_reread_what_was_just_loaded(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])
    loader.reload()
    reloads: list[object] = []
    loader.on_change.append(reloads.append)
    polled = asyncio.Event()
    real_scan = loader._scan_roots

    def scan() -> object:
        polled.set()
        return real_scan()

    loader._scan_roots = scan  # type: ignore[method-assign]
    task = asyncio.create_task(loader.watch(interval=0.01))
    try:
        for _ in range(3):  # several polls, nothing changed
            polled.clear()
            await asyncio.wait_for(polled.wait(), 5)
        assert reloads == []
        # an edit of the entry alone is still noticed
        entry = root / "web" / "site.yml"
        st = entry.stat()
        os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        async with asyncio.timeout(5):
            while not reloads:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_areload_matches_reload(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "web", manifest("web"))
    loader = ModuleLoader([root])
    result = await loader.areload()
    assert result.added == ("web",)


# --- add and remove ----------------------------------------------------------------------------


def test_add_copies_and_validates(tmp_path: Path) -> None:
    src = tmp_path / "incoming"
    write_module(src, manifest("tool", kind="script", entry="run.sh"), entry="run.sh")
    (src / "run.sh").chmod(0o755)
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref\n")
    root = tmp_path / "modules"
    added = add_module(src, root)
    assert added.dir == root / "tool"
    assert added.entry == (root / "tool" / "run.sh").resolve()
    assert os.access(added.entry, os.X_OK)
    assert not (root / "tool" / ".git").exists()
    assert (src / "module.yaml").is_file()  # the source stays
    assert load_modules([root]).names == ("tool",)

    with pytest.raises(ModuleError, match="a module named 'tool' already exists"):
        add_module(src, root)


def test_add_refuses_clash_in_another_root_symlinks_and_bad_manifests(tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_module(other / "deep" / "web", manifest("web"))
    root = tmp_path / "modules"
    src = tmp_path / "src"
    write_module(src, manifest("web"))
    with pytest.raises(ModuleError, match=r"already exists \(other/deep/web/module.yaml\)"):
        add_module(src, root, roots=[other])

    (src / "module.yaml").write_text(yaml.safe_dump(manifest("fresh")))
    (src / "link").symlink_to("/etc/hostname")
    with pytest.raises(ModuleError, match="symbolic link"):
        add_module(src, root)
    (src / "link").unlink()

    (src / "module.yaml").write_text(yaml.safe_dump(manifest("fresh", kind="helm")))
    with pytest.raises(ModuleError, match="kind"):
        add_module(src, root)
    with pytest.raises(ModuleError, match=r"no module\.yaml"):
        add_module(tmp_path / "other", root)
    assert not root.exists() or [p.name for p in root.iterdir()] == []


def test_add_leaves_nothing_behind_when_the_copy_fails_validation(tmp_path: Path) -> None:
    (tmp_path / "shared.yml").write_text("[]\n")
    src = tmp_path / "src"
    write_module(src, manifest("web", entry="../shared.yml"), entry=None)
    root = tmp_path / "modules"
    root.mkdir()
    with pytest.raises(ModuleError, match="entry: not found"):
        add_module(src, root)  # ../shared.yml does not exist next to the copy
    assert list(root.iterdir()) == []


def test_remove_moves_to_removed_and_refuses_required_modules(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    make_graph(root, {"app": ["net"], "net": [], "old": []})
    with pytest.raises(ModuleError, match="net is required by app; remove those first"):
        remove_module("net", [root])
    assert (root / "net" / "module.yaml").is_file()

    moved = remove_module("old", [root], now=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))
    assert moved == root / ".removed" / "old-20240506T070809Z"
    assert (moved / "module.yaml").is_file() and (moved / "site.yml").is_file()
    assert not (root / "old").exists()
    assert "old" not in load_modules([root])

    write_module(root / "old", manifest("old"))
    again = remove_module("old", [root], now=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))
    assert again.name == "old-20240506T070809Z-2"

    with pytest.raises(ModuleError, match="unknown module 'ghost'"):
        remove_module("ghost", [root])
