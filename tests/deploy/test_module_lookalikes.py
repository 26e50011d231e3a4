"""What looks like a deploy module but is not read is reported, not skipped in
silence (issue 8, item 16): a manifest by another name, a symlinked folder,
a manifest that links out of the modules folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from masterchief.deploy.catalog import discover, load_modules
from tests.deploy.test_manifest import manifest, write_module


def _rename(file: Path, name: str) -> Path:
    return file.rename(file.with_name(name))


@pytest.mark.parametrize(
    ("make", "shown", "why"),
    [
        (
            lambda root, tmp: _rename(write_module(root / "yml", manifest("yml")), "module.yml"),
            "modules/yml/module.yml",
            "a manifest is named module.yaml",
        ),
        (
            lambda root, tmp: _rename(write_module(root / "cap", manifest("cap")), "Module.yaml"),
            "modules/cap/Module.yaml",
            "a manifest is named module.yaml",
        ),
        (
            lambda root, tmp: (root / "linked").symlink_to(
                write_module(tmp / "elsewhere" / "c", manifest("c")).parent,
                target_is_directory=True,
            ),
            "modules/linked",
            "a symlinked folder is not followed",
        ),
        (
            lambda root, tmp: (root / "out" / "module.yaml").symlink_to(
                write_module(tmp / "elsewhere" / "d", manifest("d"))
            ),
            "modules/out/module.yaml",
            "it is a link to outside",
        ),
    ],
)
def test_lookalikes_are_errors(tmp_path: Path, make, shown: str, why: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "modules"
    good = write_module(root / "good", manifest("good"))
    (root / "out").mkdir()
    make(root, tmp_path)
    found = load_modules([root])
    assert found.names == ("good",)
    assert discover([root]) == [good]  # still never read
    assert [e.file for e in found.errors] == [shown]
    assert why in str(found.errors[0])


def test_dot_folders_and_folders_inside_a_module_stay_quiet(tmp_path: Path) -> None:
    root = tmp_path / "modules"
    write_module(root / "a", manifest("a"))
    write_module(root / "a" / "inner", manifest("inner"))  # a module's own files
    _rename(write_module(root / ".removed" / "x", manifest("x")), "module.yml")
    found = load_modules([root])
    assert found.names == ("a",) and found.errors == ()
