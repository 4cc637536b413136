"""Every import among a package's modules, read from the source as a reader would, and its cycles.

Every statement counts: at module level, in a function body, under ``if TYPE_CHECKING``. So
does what Python runs besides the module named: importing ``pkg.sub.mod`` first runs
``pkg/sub/__init__.py``, so a module outside ``pkg.sub`` that imports ``pkg.sub.mod`` also
depends on that ``__init__`` (a module inside ``pkg.sub`` does not: its package is already
being imported). A package's ``__init__`` handing on its own submodules' names is no cycle;
a submodule importing its package's ``__init__`` back (a name defined there) is one.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Import", "cycles", "import_graph", "sources"]


@dataclass(frozen=True)
class Import:
    """``importer`` needs ``target`` because of the statement at ``line`` naming ``named``."""

    importer: str
    line: int
    where: str  # module level | in a function | under TYPE_CHECKING
    named: str  # the module the statement names
    target: str  # that module, or a package Python runs on the way to it

    def __str__(self) -> str:
        how = "" if self.target == self.named else f", through {self.target}/__init__"
        return f"{self.importer}:{self.line} ({self.where}{how})"


def sources(folder: Path, package: str) -> dict[str, Path]:
    """Module name -> file, for every module of ``package`` in ``folder`` (symlinked folders
    included: ``jupyter_exec/magics`` and ``jupyter_exec/widgets`` are committed symlinks)."""
    found = {}
    for directory, _, files in os.walk(folder, followlinks=True):
        for file in files:
            if file.endswith(".py"):
                path = Path(directory, file)
                parts = [package, *path.relative_to(folder).with_suffix("").parts]
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = path
    return found


def _statements(node: ast.AST, where: str = "module level") -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement under ``node``, with where it sits."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, where
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _statements(child, "in a function")
        elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for statement in child.body:
                yield from _statements(ast.Module([statement], []), "under TYPE_CHECKING")
            for statement in child.orelse:
                yield from _statements(ast.Module([statement], []), where)
        else:
            yield from _statements(child, where)


def _named(statement: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The modules of ``known`` a statement in ``module`` names: ``from pkg import sub`` names
    the submodule ``pkg.sub``; ``from pkg import name`` names ``pkg`` (its ``__init__``)."""

    def owner(name: str) -> str:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    if isinstance(statement, ast.Import):
        return [owner(alias.name) for alias in statement.names]
    if statement.level:
        base = (module if is_package else module.rpartition(".")[0]).split(".")
        base = base[: len(base) - statement.level + 1]
        origin = ".".join(base + ([statement.module] if statement.module else []))
    else:
        origin = statement.module or ""
    return [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else owner(origin) for a in statement.names]


def import_graph(folder: Path, package: str) -> dict[str, dict[str, Import]]:
    """Module -> {module it needs: the first import that makes it so}, for every module of
    ``package`` (see the module docstring for what counts)."""
    known = sources(folder, package)
    graph: dict[str, dict[str, Import]] = {}
    for module, path in known.items():
        needs = graph.setdefault(module, {})
        for statement, where in _statements(ast.parse(path.read_text(), str(path))):
            for named in _named(statement, module, path.stem == "__init__", known):
                if not named:
                    continue  # outside the package
                parts = named.split(".")
                on_the_way = [".".join(parts[:i]) for i in range(2, len(parts))]  # packages Python runs first
                targets = [p for p in on_the_way if p in known and not f"{module}.".startswith(f"{p}.")]
                for target in [*targets, named] if named != module else targets:
                    needs.setdefault(target, Import(module, statement.lineno, where, named, target))
    return graph


def cycles(graph: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One cycle through each group of modules that need each other (its shortest from the
    group's first module), as the imports that close it; none: []."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for needed in graph[module]:
            if needed not in index:
                connect(needed)
                low[module] = min(low[module], low[needed])
            elif needed in stack:
                low[module] = min(low[module], index[needed])
        if low[module] == index[module]:
            group = {module}
            while (member := stack.pop()) != module:
                group.add(member)
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return [_shortest_cycle(graph, group) for group in sorted(groups, key=min)]


def _shortest_cycle(graph: dict[str, dict[str, Import]], group: set[str]) -> list[Import]:
    start = min(group)
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for needed, why in sorted(graph[module].items()):
                if needed == start:
                    return [*paths[module], why]
                if needed in group and needed not in paths:
                    paths[needed] = [*paths[module], why]
                    following.append(needed)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one
