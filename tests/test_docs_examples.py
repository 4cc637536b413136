"""Every example in README.md and docs/*.md runs as a reader would run it, and shows what it says.

The ```python blocks of each page are read from the page itself (a changed doc changes what
runs here), split into the cells a reader would type: a cell ends at a blank line, and a
``%%`` line starts one. The cells of one page run in order in one fresh kernel with a store
of its own, so the names a page's examples assume come from the set-up cell the page shows.
Each page runs on the default backend of a fresh set-up (``auto``: the container, once an
engine and the base image are there) and again on the process sandbox (``JX_BACKEND=seccomp``).

A cell must not fail unless ``CHECKS`` says how it fails, and what each check names must be a
cell of its page (so a check cannot outlive its example). Left out, with the reason: a block
whose first line names a file (``# jupyterhub_config.py``), which is a file, not cells; cells
that ask for a GPU where there is none; and cells that name a Ray cluster's address where no
cluster is given (``JX_TEST_RAY_ADDRESS``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CellResult, Kernel, require

pytestmark = pytest.mark.kernel

REPO = Path(__file__).parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FILE_BLOCK = re.compile(r"#\s*[\w./-]+\.py\b")
_GPU = re.compile(r"--num-gpus|--gpus|--gpu-id|num_gpus=")
_CLUSTER = re.compile(r"--address ray://")


@dataclass
class Cell:
    page: str
    source: str
    skipped: str = ""  # why it does not run here


def cells_of(page: Path) -> list[Cell]:
    """The page's python blocks as the cells a reader would type, in order."""
    found: list[Cell] = []
    for block in re.findall(r"^```python\n(.*?)^```", page.read_text(), re.M | re.S):
        if _FILE_BLOCK.match(block):
            continue
        current: list[str] = []
        for line in [*block.splitlines(), ""]:
            if (not line.strip() or line.startswith("%%")) and current:
                found.append(Cell(page.name, "\n".join(current)))
                current = []
            if line.strip():
                current.append(line)
    for cell in found:
        if _GPU.search(cell.source) and not shutil.which("nvidia-smi"):
            cell.skipped = "asks for a GPU, and there is none here"
        elif _CLUSTER.search(cell.source) and not os.environ.get("JX_TEST_RAY_ADDRESS"):
            cell.skipped = "names a Ray cluster, and none is given (JX_TEST_RAY_ADDRESS)"
    return found


Check = Callable[[CellResult, Kernel], None]


def failure(cell: CellResult) -> str | None:
    """How the cell failed as the notebook shows it: its error, or a UsageError (IPython prints
    that on stderr); None if it did not."""
    if cell.error is not None:
        return f"{cell.error['ename']}: {cell.error['evalue']}"
    usage = re.search(r"^UsageError: .*", cell.stderr, re.M)
    return usage.group(0) if usage else None


def prints(*texts: str) -> Check:
    def check(cell: CellResult, kernel: Kernel) -> None:
        assert failure(cell) is None, failure(cell)
        for text in texts:
            assert text in cell.stdout, (text, cell.stdout)

    return check


def raises(ename: str, *texts: str) -> Check:
    """The cell fails with ``ename`` (as the notebook shows it), its shown error naming ``texts``."""

    def check(cell: CellResult, kernel: Kernel) -> None:
        assert cell.error is not None and cell.error["ename"] == ename, cell.error
        shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(cell.error["traceback"]))
        for text in texts:
            assert text in shown, (text, shown)

    return check


def holds(expression: str, expected: object) -> Check:
    """The cell succeeds and ``expression``, evaluated in the kernel after it, is ``expected``."""

    def check(cell: CellResult, kernel: Kernel) -> None:
        assert failure(cell) is None, failure(cell)
        assert kernel.eval(expression) == expected, expression

    return check


#: (page, the start of a cell) -> what the cell must show. Cells not named must succeed.
CHECKS: dict[tuple[str, str], Check] = {
    ("README.md", "%%sandbox --mem 512m --timeout 30 --in df --out summary"): holds(
        "(float(summary.loc['count', 'x']), float(summary.loc['mean', 'x']))", (1000.0, 499.5)
    ),
    ("README.md", "%%sandbox --backend seccomp --timeout 5"): raises(
        "PermissionError", "hint: the sandbox has no network; pass --network"
    ),
    ("README.md", "%%sandbox --cache --in df,fit --out model"): holds("model", {"slope": 2.0}),
    ("README.md", "scores = jupyter_exec.map("): holds("[score['alpha'] for score in scores]", [0.01, 0.1, 1.0]),
    ("README.md", "%jx runs"): prints("rows: 1000", "[jupyter-exec] run 1 succeeded", "ok   seccomp"),
    ("sandbox.md", "%%sandbox --mem 512m --timeout 30 --in df --out summary"): holds(
        "float(summary.loc['max', 'x'])", 999.0
    ),
    ("envs.md", "%%sandbox --pip tabulate==0.9.0"): prints("hello from helpers 0.9.0 ['notes.txt']"),
    ("envs.md", "%jx env --env-spec env.yaml"): prints('"env_vars": [\n    "STAGE"\n  ]'),
    ("sandbox.md", "%jx runs"): prints("rows: 1000", "[jupyter-exec] run 1 succeeded", "ok   seccomp"),
    ("sandbox.md", "params = ["): holds("(scores, squares[:4], len(squares))", ([1, 4, 9], [0, 1, 4, 9], 1000)),
    ("sandbox.md", "%%sandbox --cache --in df,fit --out model"): holds("model", {"mean": 499.5}),
    ("traces.md", "%jx tree tuning"): prints("trace 'tuning': minimise loss, 2 nodes"),
    ("traces.md", "scores = jupyter_exec.map("): holds("len(scores)", 3),
    ("traces.md", "trace = explore("): holds("len(trace.nodes) >= 2 and trace.sota() is not None", True),
    ("rayrun.md", "scores = jupyter_exec.map("): holds("list(scores)", [0, 1, 4, 9]),
}


def _runnable(page: Path) -> bool:
    return any(not cell.skipped for cell in cells_of(page))


@pytest.mark.parametrize("backend", ["auto", "seccomp"])
@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=lambda p: p.name)
def test_the_examples_run_as_a_reader_runs_them(page: Path, backend: str, tmp_path: Path) -> None:
    cells = cells_of(page)
    if page.name == "rayrun.md" and backend != "auto":
        pytest.skip("%%rayrun runs on Ray whatever the sandbox backend")
    if backend == "auto":
        import docker

        try:
            docker.from_env().images.get("jupyter-exec/base:latest")
        except Exception as error:
            require(False, f"auto picks the container on a fresh set-up: {error}")
    named = {snippet for name, snippet in CHECKS if name == page.name}
    unknown = [s for s in named if not any(c.source.startswith(s) for c in cells)]
    assert not unknown, f"checks name no cell of {page.name}: {unknown}"
    env = {} if backend == "auto" else {"JX_BACKEND": backend}
    (tmp_path / "notebook").mkdir()
    kernel = Kernel(tmp_path / "data", tmp_path / "notebook", env=env)
    failures = []
    try:
        for cell in cells:
            if cell.skipped:
                continue
            shown = kernel.run(cell.source, timeout=300)
            check = next(
                (c for (name, s), c in CHECKS.items() if name == page.name and cell.source.startswith(s)), None
            )
            try:
                if check is not None:
                    check(shown, kernel)
                else:
                    assert failure(shown) is None, failure(shown)
            except (AssertionError, ValueError, SyntaxError) as error:  # a check, or what it read
                failures.append(f"--- {page.name} ({backend}), the cell:\n{cell.source}\n--- failed: {error}")
        if backend == "auto":
            first = kernel.records().runs(1000)[-1] if kernel.records().runs(1) else None
            assert first is None or first["backend"] in ("container", "ray"), first
    finally:
        kernel.shutdown()
    assert not failures, "\n".join(failures)
