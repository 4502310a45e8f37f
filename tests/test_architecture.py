"""The layers of ARCHITECTURE.md, checked: imports point only downward, and never in a circle.

Every ``import`` of every module counts, those inside functions and under
``TYPE_CHECKING`` too: a deferred import still ties two modules together.
"""

from __future__ import annotations

import ast
import gc
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


def _parse(path: Path) -> ast.Module:
    """``ast.parse``, with the garbage collector held off while it builds the tree.

    CPython 3.11 (3.11.7 here) keeps one recursion count for all the trees
    it builds (see gh-106905). A collection in the middle of ours can run a
    finalizer whose report formats a traceback, which parses a line of
    source for its carets and resets that count: ours then fails with
    ``SystemError: AST constructor recursion depth mismatch`` (seen once in
    CI, while a leaked socket was being collected).
    """
    source = path.read_text(encoding="utf-8")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if was_enabled:
            gc.enable()


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports (dotted, relative to the package)."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    here = [part for part in here if part]
    found = set()
    for node in ast.walk(_parse(path)):
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
        tree = _parse(path)
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


class _ParsesWhenCollected:
    """Garbage whose finalizer parses, as a traceback's report does on 3.11."""

    def __init__(self) -> None:
        self.cycle = self  # only the collector frees it, at a moment of its choosing

    def __del__(self) -> None:
        def deeper(levels: int) -> object:
            return deeper(levels - 1) if levels else ast.parse("x = (1 + 2)")

        deeper(20)


def test_parsing_survives_a_collection_that_parses() -> None:
    threshold = gc.get_threshold()
    gc.collect()  # so that the garbage below is young, and freed by the first collections
    for _ in range(200):
        _ParsesWhenCollected()
    # The next collection comes ~1000 allocations on: past the parser's own,
    # well inside the ~10,000 nodes of the tree being built.
    gc.set_threshold(1200, 1, 1)
    try:
        tree = _parse(PACKAGE / "core" / "hub.py")
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
    assert any(isinstance(node, ast.ClassDef) for node in tree.body)
