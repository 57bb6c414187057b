"""The package's layers, read from its import statements: imports point downward only, and no circles."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rnnexp"
# Bottom to top; a module may import its own layer and those below it (ARCHITECTURE.md).
LAYERS = [
    {"rnnexp.errors", "rnnexp.cli"},
    {"rnnexp.config"},
    {"rnnexp.data", "rnnexp.engine"},
    {"rnnexp.training"},
    {"rnnexp.tracking"},
    {
        "rnnexp.run",
        "rnnexp.generate",
        "rnnexp.evaluate",
        "rnnexp.check_gradients",
        "rnnexp.ngram",
        "rnnexp.repair",
        "rnnexp.ui",
        "rnnexp.callbacks",
        "rnnexp.__init__",
    },
]
# data and engine share a floor but stay independent of each other.
SEPARATE = {("rnnexp.data", "rnnexp.engine"), ("rnnexp.engine", "rnnexp.data")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The rnnexp modules a file imports, at any depth (a function-level import counts too).

    `from rnnexp.data import cache` imports the module rnnexp.data.cache; `from rnnexp.data import
    load_corpus` imports the package rnnexp.data (its __init__).
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnexp"):
            for alias in node.names:
                member = f"{node.module}.{alias.name}"
                found.add(member if member in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("rnnexp")}
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {target for target in imports(path, set(paths)) if target in paths and target != name}
        for name, path in paths.items()
    }


def find_circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first search, as the modules along it."""
    state: dict[str, str] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return circles


def layer(module: str) -> tuple[int, str]:
    for index, members in enumerate(LAYERS):
        for member in members:
            if module == member or module.startswith(member + "."):
                return index, member
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and ARCHITECTURE.md")


def test_every_import_points_to_the_same_layer_or_below() -> None:
    upward = []
    for module, targets in graph().items():
        for target in targets:
            (own, own_group), (their, their_group) = layer(module), layer(target)
            if their > own or (own_group, their_group) in SEPARATE:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_there_is_no_import_circle() -> None:
    assert find_circles(graph()) == []


def test_the_circle_search_finds_a_circle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_circles(edges) == [["a", "b", "c", "a"]]
