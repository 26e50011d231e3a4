"""The package's shape: layers, no import cycles, no module over 600 lines.

How this works.  Every module under ``masterchief/`` is parsed with ``ast``
(nothing is imported) and every import in it counts: at the top, under
``if TYPE_CHECKING:``, inside functions.  ``from pkg import name`` is an
import of ``pkg.name`` when that is a module, else of ``pkg``.  Then:

(a) no import cycle between modules (a strongly connected component of the
    import graph with more than one module);
(b) no import from a lower layer to a higher one.  The layers, lowest first
    (a module may import its own layer and any lower one):

      0  errors, text, metrics          words every part shares
      1  bindings, config, store        the binding table and dispatch, the
                                        configuration, the store interface
      2  identity, eventlog             who someone is; what happened
      3  sources, outputs, irc,         where Events come from and where
         partyline, deploy, commands,   lines go; the deploy domain; the
         http                           built-in commands; the web listener
      4  runtime                        the composition root
      5  cli                            the command line

    ``masterchief/__init__.py`` is the script API: it may import only
    ``bindings``, and only ``runtime`` and ``cli`` may import it;
(c) no module over ``MAX_LINES`` lines.

What breaks a rule today is listed below, each entry with who removes it.
The lists only shrink: an entry that no longer applies fails the test too,
so whoever fixes one also deletes its line here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "masterchief"
MAX_LINES = 600

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "text", "metrics"}),
    frozenset({"bindings", "config", "store"}),
    frozenset({"identity", "eventlog"}),
    frozenset({"sources", "outputs", "irc", "partyline", "deploy", "commands", "http"}),
    frozenset({"runtime"}),
    frozenset({"cli"}),
)
SCRIPT_API = "masterchief"
SCRIPT_API_MAY_IMPORT = frozenset({"bindings"})
SCRIPT_API_IMPORTERS = frozenset({"runtime", "cli"})

# Upward imports that exist today: (importer, imported).
ALLOWED_UPWARD: frozenset[tuple[str, str]] = frozenset()

# Import cycles that exist today, each as the set of modules in it.
ALLOWED_CYCLES: frozenset[frozenset[str]] = frozenset()

# Modules over MAX_LINES today, and who splits them.
ALLOWED_LONG: Mapping[str, str] = {}


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` below ``package``."""
    out: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The package's modules that module ``name`` (file ``path``) imports,
    wherever the import statement sits."""
    known = set(modules)
    root = name.split(".")[0]
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                pkg = ".".join([*base, *([node.module] if node.module else [])])
            else:
                pkg = node.module or ""
            targets = [
                f"{pkg}.{alias.name}" if f"{pkg}.{alias.name}" in known else pkg
                for alias in node.names
            ]
        for target in targets:
            if target != root and not target.startswith(root + "."):
                continue
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != name:
                found.add(target)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    files = module_files(package)
    return {name: imports_of(name, path, files) for name, path in files.items()}


def cycles(graph: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def area(module: str) -> str:
    """``masterchief.deploy.jobs`` -> ``deploy``; the package itself -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else module


def layer(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if area(module) in names:
            return i
    raise AssertionError(f"{module} is in no layer: add {area(module)!r} to LAYERS")


def layer_violations(graph: Mapping[str, set[str]]) -> set[tuple[str, str]]:
    """Every import that goes up a layer, or breaks the script API's rule."""
    bad: set[tuple[str, str]] = set()
    for importer, imported in sorted((a, b) for a, deps in graph.items() for b in deps):
        if importer == SCRIPT_API:
            if area(imported) not in SCRIPT_API_MAY_IMPORT:
                bad.add((importer, imported))
        elif imported == SCRIPT_API:
            if area(importer) not in SCRIPT_API_IMPORTERS:
                bad.add((importer, imported))
        elif layer(imported) > layer(importer):
            bad.add((importer, imported))
    return bad


def long_modules(package: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for path in sorted(package.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            out[path.relative_to(package.parent).as_posix()] = lines
    return out


# --- the package as it is ------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def test_every_area_has_a_layer(graph: dict[str, set[str]]) -> None:
    for module in graph:
        if module != SCRIPT_API:
            layer(module)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    found = set(cycles(graph))
    new = [sorted(c) for c in found - ALLOWED_CYCLES]
    assert not new, f"import cycles: {new}"
    gone = [sorted(c) for c in ALLOWED_CYCLES - found]
    assert not gone, f"no longer cycles: take them off ALLOWED_CYCLES: {gone}"


def test_no_import_from_a_lower_layer_to_a_higher_one(graph: dict[str, set[str]]) -> None:
    found = layer_violations(graph)
    new = sorted(found - ALLOWED_UPWARD)
    assert not new, "imports up a layer (see LAYERS at the top of this file): " + ", ".join(
        f"{a} -> {b}" for a, b in new
    )
    gone = sorted(ALLOWED_UPWARD - found)
    assert not gone, f"no longer there: take them off ALLOWED_UPWARD: {gone}"


def test_no_module_over_the_line_limit() -> None:
    found = long_modules(PACKAGE)
    new = {path: n for path, n in found.items() if path not in ALLOWED_LONG}
    assert not new, f"modules over {MAX_LINES} lines: {new}"
    gone = sorted(set(ALLOWED_LONG) - set(found))
    assert not gone, f"now within {MAX_LINES} lines: take them off ALLOWED_LONG: {gone}"


# --- the checker itself, on made-up packages -----------------------------------------


def make_package(root: Path, files: Mapping[str, str]) -> Path:
    package = root / "masterchief"
    for rel, text in {"__init__.py": "", **files}.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_a_cycle_through_type_checking_and_a_function_level_import_is_found(
    tmp_path: Path,
) -> None:
    package = make_package(
        tmp_path,
        {
            "bindings/__init__.py": "",
            "bindings/a.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from masterchief.bindings.b import B\n"
            ),
            "bindings/b.py": "def f():\n    from . import a\n    return a\n",
            "bindings/c.py": "from .a import x\n",
        },
    )
    graph = import_graph(package)
    assert graph["masterchief.bindings.b"] == {"masterchief.bindings.a"}
    assert cycles(graph) == [frozenset({"masterchief.bindings.a", "masterchief.bindings.b"})]


def test_an_upward_import_and_the_script_api_rules_are_found(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "__init__.py": "from masterchief.bindings.event import Event\nimport masterchief.store\n",
            "errors.py": "",
            "bindings/__init__.py": "",
            "bindings/event.py": "from masterchief.errors import UserError\n",
            "store/__init__.py": "",
            "identity/__init__.py": "",
            "identity/users.py": "import masterchief\nfrom ..bindings import event\n",
            "config/__init__.py": "",
            "config/engine.py": "from masterchief.deploy import kinds\n",
            "deploy/__init__.py": "",
            "deploy/kinds.py": "from masterchief.config.engine import x\n",
        },
    )
    graph = import_graph(package)
    assert layer_violations(graph) == {
        ("masterchief", "masterchief.store"),  # the script API imports bindings only
        ("masterchief.identity.users", "masterchief"),  # only runtime and cli import it
        ("masterchief.config.engine", "masterchief.deploy.kinds"),  # layer 1 -> layer 3
    }


def test_long_modules_are_counted(tmp_path: Path) -> None:
    package = make_package(tmp_path, {"text.py": "x = 1\n" * (MAX_LINES + 1), "errors.py": "\n"})
    assert long_modules(package) == {"masterchief/text.py": MAX_LINES + 1}
