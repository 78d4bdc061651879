"""The package's import graph has no cycles.

Every module of ``gpuconv/`` is parsed with :mod:`ast` (nothing is imported), and every
``import`` statement in it, at module level or inside a function, class, ``if`` or ``try``,
becomes an edge to the gpuconv module it names: absolute (``import gpuconv.x``,
``from gpuconv.x import y``) and relative (``from .x import y``, ``from .. import x``), where
``from package import name`` leads to the submodule ``package.name`` when there is one and
to the package itself otherwise. The parent packages that Python imports first are not
edges (an ``__init__`` importing its own submodules is no cycle). Modules named by a string
and imported on first use (the backend registry, the array-library adapters) are not edges
either: loading by name is how a lower layer reaches a higher one.

A function-level import that only breaks a cycle at run time still counts: the modules
depend on each other all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gpuconv"


def module_name(path: Path) -> str:
    """``gpuconv/_backends/__init__.py`` -> ``gpuconv._backends``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, source: str, known: set[str], is_package: bool) -> set[str]:
    """The gpuconv modules that module ``name`` (whose text is ``source``) imports."""

    def existing(dotted: str) -> str | None:
        # "gpuconv.bench.measure" (a name in a module) -> "gpuconv.bench"
        parts = dotted.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        return ".".join(parts) or None

    targets: set[str | None] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(existing(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # The package a relative import starts from: the module's own package,
                # one level up per extra dot.
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                if node.module:
                    base = [*base, *node.module.split(".")]
                base_name = ".".join(base)
            else:
                base_name = node.module or ""
            for alias in node.names:
                submodule = f"{base_name}.{alias.name}"
                targets.add(submodule if submodule in known else existing(base_name))
    return {target for target in targets if target and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {
        name: imported_modules(name, path.read_text(), known, path.name == "__init__.py")
        for name, path in modules.items()
    }


def knots(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of two or more modules that all reach each other (sorted names)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each knot of :func:`knots`, as ``[a, b, ..., a]``."""
    cycles = []
    for group in knots(graph):
        members = set(group)
        # A shortest way from the group's first module back to itself, inside the group.
        start = group[0]
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            following = []
            for node in frontier:
                for successor in sorted(graph[node] & members):
                    if successor == start:
                        cycle = [*paths[node], start]
                        break
                    if successor not in paths:
                        paths[successor] = [*paths[node], successor]
                        following.append(successor)
                if cycle:
                    break
            frontier = following
        cycles.append(cycle)
    return cycles


def test_no_import_cycles_between_gpuconv_modules():
    graph = import_graph()
    report = [
        f"  {' -> '.join(cycle)}   (modules in this knot: {', '.join(group)})"
        for cycle, group in zip(find_cycles(graph), knots(graph))
    ]
    assert not report, "import cycles between gpuconv modules:\n" + "\n".join(report)


def test_the_emulator_imports_nothing_else_of_gpuconv():
    # A unit of its own: it runs CUDA C++ and knows nothing of convolution.
    graph = import_graph()
    emulator = {name for name in graph if name.split(".")[:2] == ["gpuconv", "_emulator"]}
    assert emulator
    outside = {name: sorted(graph[name] - emulator) for name in emulator if graph[name] - emulator}
    assert not outside, f"the emulator imports other gpuconv modules: {outside}"


def test_the_graph_sees_every_kind_of_import():
    known = {
        "gpuconv",
        "gpuconv._plan",
        "gpuconv._registry",
        "gpuconv.pkg",
        "gpuconv.pkg.a",
        "gpuconv.pkg.b",
        "gpuconv.pkg.sub",
        "gpuconv.pkg.sub.c",
    }
    source = (
        "import os\n"
        "from . import b\n"  # a sibling submodule
        "from .sub import c as renamed\n"  # a submodule of a subpackage
        "from .. import _plan\n"  # one level up
        "def later():\n"
        "    import gpuconv._registry\n"  # absolute, inside a function
        "    from gpuconv import convolve\n"  # a name from the package itself
        "    from .sub import helper\n"  # a name from a subpackage's __init__
    )
    assert imported_modules("gpuconv.pkg.a", source, known, is_package=False) == {
        "gpuconv.pkg.b",
        "gpuconv.pkg.sub.c",
        "gpuconv._plan",
        "gpuconv._registry",
        "gpuconv",
        "gpuconv.pkg.sub",
    }
    # In a package's __init__, "." is the package itself.
    assert imported_modules("gpuconv.pkg", "from . import a\nfrom .a import x\n", known, True) == {
        "gpuconv.pkg.a"
    }


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"b"}, "b": set()}, []),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b", "a"], ["c", "d", "c"]]),
    ],
)
def test_cycles_are_found_and_printed(graph, expected):
    assert sorted(find_cycles(graph)) == expected


def test_the_package_graph_is_parsed():
    graph = import_graph()
    assert "gpuconv._registry" in graph["gpuconv._convolve"]
    assert "gpuconv.kernels" in graph["gpuconv"]
