"""The layers of ARCHITECTURE.md, checked: imports point only downward, and never in a circle.

Every ``import`` of every module counts, those inside functions and under
``TYPE_CHECKING`` too: a deferred import still ties two modules together.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import autosync_jupyter

PACKAGE = Path(autosync_jupyter.__file__).parent

#: Floors from the bottom up; a module may import its own layer and the
#: floors below, never a layer beside it or above it.
FLOORS: list[set[str]] = [
    {"vocabulary"},
    {"crdt"},
    {"core", "storage", "auth"},
    {"runtime"},
    {"jupyter"},
    {"serverext"},
    {"cli", ""},  # "" is the package's own __init__: the public facade
    {"__main__"},
]
#: The modules at the root of the package: words every layer uses.
VOCABULARY = {"errors", "ids", "wording", "version", "nesting"}
FLOOR = {layer: number for number, layer_set in enumerate(FLOORS) for layer in layer_set}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports (dotted, relative to the package)."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    here = [part for part in here if part]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("autosync_jupyter"):
                target = node.module.removeprefix("autosync_jupyter").lstrip(".")
            else:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}".lstrip(".")
                found.add(submodule if submodule in modules else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("autosync_jupyter"):
                    found.add(alias.name.removeprefix("autosync_jupyter").lstrip("."))
    return {target for target in found if target in modules and target != name}


def _layer(name: str) -> str:
    top = name.split(".")[0]
    return "vocabulary" if top in VOCABULARY else top


GRAPH = {name: _imports(name, path, _modules()) for name, path in _modules().items()}


def test_every_module_belongs_to_a_floor() -> None:
    assert sorted({_layer(name) for name in GRAPH} - FLOOR.keys()) == []


def test_there_are_no_import_cycles() -> None:
    try:
        order = list(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert len(order) == len(GRAPH)


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_only_downward(name: str) -> None:
    layer = _layer(name)
    wrong = sorted(
        target
        for target in GRAPH[name]
        if _layer(target) != layer and FLOOR[_layer(target)] >= FLOOR[layer]
    )
    assert wrong == [], f"{name or 'autosync_jupyter'} imports {wrong}: not below its floor"


def test_nothing_imports_the_package_facade() -> None:
    assert sorted(name for name, targets in GRAPH.items() if "" in targets) == []


def test_the_sans_io_core_has_no_io() -> None:
    """The sync rules import no event loop, socket, thread or file machinery."""
    io_modules = {"asyncio", "socket", "threading", "ssl", "selectors", "os", "pathlib"}
    for name, path in _modules().items():
        if _layer(name) != "core":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and not node.level
        }
        assert sorted(imported & io_modules) == [], name
