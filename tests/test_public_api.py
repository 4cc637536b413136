"""The public names are a promise, and the layers keep their shape: pin both."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import jupyter_exec
from jupyter_exec.status import FINAL, Status

ROOT = Path(jupyter_exec.__file__).parent
REPO = ROOT.parent

PUBLIC = {
    "BackendUnavailableError",
    "EnvBuildError",
    "EnvSpec",
    "JupyterExecError",
    "Limits",
    "Manager",
    "MapError",
    "Mount",
    "NodeFailedError",
    "PolicyError",
    "RemoteError",
    "ResourceLimitError",
    "RunResult",
    "RunSpec",
    "SpecError",
    "Status",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "TransferError",
    "current_manager",
    "explore",
    "load_ipython_extension",
    "map",
    "unload_ipython_extension",
}


def test_public_names_are_exactly_these():
    assert set(jupyter_exec.__all__) == PUBLIC
    for name in jupyter_exec.__all__:
        assert hasattr(jupyter_exec, name), name
    assert (ROOT / "py.typed").is_file()


def test_magics_and_widgets_live_under_one_namespace():
    import importlib.util

    assert importlib.util.find_spec("jupyter_exec.magics") is not None
    assert importlib.util.find_spec("jupyter_exec.widgets") is not None
    assert importlib.util.find_spec("magics") is None or "site-packages" not in str(
        importlib.util.find_spec("magics").origin
    )


# ---- the layers ---------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the jupyter_exec modules it imports when it is imported (top level, not
    inside functions or ``if TYPE_CHECKING``), read from the source as a reader would."""
    sources = {}
    for path in ROOT.rglob("*.py"):
        if path.resolve().is_relative_to(ROOT.resolve()) or path.parts[-2] in ("magics", "widgets"):
            sources[_module_name(path)] = path
    for folder in ("magics", "widgets"):  # the top-level folders, installed under jupyter_exec
        for path in (REPO / folder).glob("*.py"):
            sources[f"jupyter_exec.{folder}" + ("" if path.stem == "__init__" else f".{path.stem}")] = path
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("jupyter_exec"):
                    found.add(target)
                    found.update(f"{target}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("jupyter_exec"))
        graph[name] = {m for m in found if m in sources and m != name}
    return graph


def test_no_import_cycles_among_jupyter_exec_modules():
    graph = _imports()
    assert len(graph) > 60, sorted(graph)  # the reader found the whole package
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported.startswith(module + "."):  # a package importing its own modules is not a cycle
                continue
            if state.get(imported) == 1 and not module.startswith(imported + "."):
                cycle = [*stack[stack.index(imported) :], imported]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_manager_imports_no_concrete_backend():
    imported = _imports()["jupyter_exec.manager"]
    backends = {m for m in imported if m.startswith("jupyter_exec.backends")}
    assert backends <= {"jupyter_exec.backends", "jupyter_exec.backends.base", "jupyter_exec.backends.factory"}, (
        backends
    )


def test_backends_never_import_ipython_and_base_imports_nothing_above_it():
    for path in (ROOT / "backends").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) IPython", path.read_text(), re.M), path
    above = {
        "jupyter_exec.manager",
        "jupyter_exec.session",
        "jupyter_exec.magics",
        "jupyter_exec.widgets",
        "jupyter_exec.server",
        "jupyter_exec.backends.factory",
    }
    assert not _imports()["jupyter_exec.backends.base"] & above


# ---- shared words -------------------------------------------------------------------------


def test_final_statuses_are_the_same_in_the_side_panel_and_the_run_widget():
    final = sorted(status.value for status in FINAL)
    tokens = (REPO / "labextension" / "src" / "tokens.ts").read_text()
    ts = re.search(r"FINAL_STATUSES\s*=\s*(\[[^\]]*\])", tokens)
    js = re.search(r"const FINAL\s*=\s*(\[[^\]]*\])", (REPO / "widgets" / "run.js").read_text())
    assert ts and js
    assert sorted(json.loads(ts.group(1).replace("'", '"'))) == final
    assert sorted(json.loads(js.group(1))) == final
    assert {s.value for s in Status} - {s.value for s in FINAL} == {"queued", "running"}
