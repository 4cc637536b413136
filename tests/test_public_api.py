"""The public names are a promise, and the layers keep their shape: pin both."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from imports import Import, cycles, import_graph

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


def _graph() -> dict[str, dict[str, Import]]:
    return import_graph(ROOT, "jupyter_exec")


def _needs(module: str) -> set[str]:
    return set(_graph()[module])


def _cycle_message(found: list[list[Import]]) -> str:
    return "\n".join(" -> ".join(map(str, cycle)) + f" -> {cycle[0].importer}" for cycle in found)


def test_no_import_cycle_of_any_kind_among_jupyter_exec_modules():
    graph = _graph()
    assert len(graph) > 100 and "jupyter_exec.magics.cells" in graph, sorted(graph)  # the whole package read
    found = cycles(graph)
    assert not found, "import cycles:\n" + _cycle_message(found)


def _plant(tmp_path: Path, files: dict[str, str]) -> list[list[Import]]:
    for name, text in {"__init__.py": "", **files}.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    return cycles(import_graph(tmp_path / "pkg", "pkg"))


# A cycle of each kind, and the import the checker must name in it.
PLANTED = {
    "module level": ({"a.py": "from pkg import b\n", "b.py": "import pkg.a\n"}, "pkg.b:1 (module level)"),
    "in a function": (
        {"a.py": "import pkg.b\n", "b.py": "import os\n\n\ndef f():\n    from .a import x\n"},
        "pkg.b:5 (in a function)",
    ),
    "under TYPE_CHECKING": (
        {
            "a.py": "from pkg.b import B\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n",
        },
        "pkg.b:3 (under TYPE_CHECKING)",
    ),
    "a submodule importing its package's __init__": (
        {"sub/__init__.py": "from .m import thing\nOTHER = 1\n", "sub/m.py": "from . import OTHER\nthing = OTHER\n"},
        "pkg.sub.m:1 (module level)",
    ),
    "through a package's __init__": (
        {"a.py": "from pkg.sub.m import thing\n", "sub/__init__.py": "from pkg.a import helper\n", "sub/m.py": ""},
        "pkg.a:1 (module level, through pkg.sub/__init__)",
    ),
}


@pytest.mark.parametrize("kind", PLANTED)
def test_the_checker_finds_a_planted_cycle_of_each_kind(tmp_path, kind):
    files, closing = PLANTED[kind]
    found = _plant(tmp_path, files)
    assert len(found) == 1 and closing in map(str, found[0]), _cycle_message(found)


def test_a_package_handing_on_its_submodules_names_is_no_cycle(tmp_path):
    files = {
        "sub/__init__.py": "from .m import thing\nfrom .n import other\n",
        "sub/m.py": "from pkg.sub.n import other\nfrom pkg import c\nthing = other\n",
        "sub/n.py": "other = 1\n",
        "c.py": "import json\n",
        "d.py": "from pkg.sub import thing\n",
    }
    assert _plant(tmp_path, files) == []


def test_the_policy_and_the_core_sit_below_what_they_must_not_know():
    graph = _graph()
    # the policy names backends by their names alone; the names module imports nothing at all
    assert {m for m in graph["jupyter_exec.policy"] if m.startswith("jupyter_exec.backends")} <= {
        "jupyter_exec.backends",
        "jupyter_exec.backends.names",
    }
    for bare in ("backends/names.py", "backends/__init__.py", "broker/__init__.py", "backends/broker/__init__.py"):
        statements = [n for n in ast.walk(ast.parse((ROOT / bare).read_text())) if isinstance(n, ast.stmt)]
        assert all(
            isinstance(n, ast.ImportFrom) and n.module == "__future__"
            for n in statements
            if "Import" in type(n).__name__
        ), bare
    # no core module imports the notebook's side, but the %load_ext hook (inside its functions)
    ui = ("jupyter_exec.magics", "jupyter_exec.widgets")
    for module, needs in graph.items():
        if module.startswith(ui):
            continue
        reaching = [str(why) for target, why in needs.items() if target.startswith(ui)]
        if module == "jupyter_exec":
            reaching = [r for r in reaching if "(in a function" not in r]
        assert not reaching, reaching


def test_the_backends_are_registered_by_their_names_and_import_no_broker_side():
    from jupyter_exec.backends import names
    from jupyter_exec.backends.factory import BACKENDS

    assert tuple(BACKENDS) == names.NAMES
    assert all(cls.name == name for name, cls in BACKENDS.items())
    for module, needs in _graph().items():
        if module.startswith("jupyter_exec.backends"):
            assert not [str(w) for t, w in needs.items() if t.startswith("jupyter_exec.broker")], module


def test_the_manager_imports_no_concrete_backend():
    backends = {m for m in _needs("jupyter_exec.manager") if m.startswith("jupyter_exec.backends")}
    assert backends <= {
        "jupyter_exec.backends",
        "jupyter_exec.backends.base",
        "jupyter_exec.backends.factory",
        "jupyter_exec.backends.runs",
    }, backends


def test_backends_never_import_ipython_and_base_is_the_contract_alone():
    for path in (ROOT / "backends").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) IPython", path.read_text(), re.M), path
    above = {"jupyter_exec.manager", "jupyter_exec.current", "jupyter_exec.server", "jupyter_exec.broker"}
    needed = _needs("jupyter_exec.backends.base")
    assert not {m for m in needed if m.startswith((*above, "jupyter_exec.backends.", "jupyter_exec.magics"))}, needed


def _architecture(section: str) -> str:
    text = (REPO / "docs" / "architecture.md").read_text()
    return text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]


def test_the_layer_diagram_holds_every_module_and_every_import_goes_down():
    diagram = re.search(r"```\n(.*?)```", _architecture("Layers"), re.S)
    assert diagram
    floors = [
        [name.strip() for name in re.sub(r"\([^)]*\)", "", floor).replace("\n", " ").split(",")]
        for floor in re.split(r"\n\s*\|\s*\n\s*v\s*\n", diagram.group(1))
    ]
    assert len(floors) > 5, floors

    def floor(module: str) -> int:
        name = module.removeprefix("jupyter_exec.") if module != "jupyter_exec" else module
        found = [(len(n), i) for i, names in enumerate(floors) for n in names if name == n or name.startswith(n + ".")]
        assert found, f"{module} is on no floor of docs/architecture.md's layer diagram"
        return max(found)[1]

    upward = [
        f"{why} imports {target}, a floor above"
        for module, needs in _graph().items()
        for target, why in needs.items()
        if floor(target) < floor(module)
    ]
    assert not upward, upward


def test_the_contract_table_has_every_member_of_the_backend_contract():
    from jupyter_exec.backends.base import ExecutorBackend

    table = _architecture("The backend contract")
    members = {*vars(ExecutorBackend), *ExecutorBackend.__annotations__}
    for name in sorted(m for m in members if not m.startswith("_")):
        called = name not in ExecutorBackend.__annotations__  # a method, not a declared attribute
        assert (f"`{name}(" if called else f"`{name}`") in table, name


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
