"""Every example notebook runs top to bottom in a real kernel (as the README's first command does),
and shows what its text says it shows.

A notebook runs in a scratch copy of ``notebooks/`` (the files it makes stay out of the
repository) with a store of its own. Cells tagged ``raises-exception`` must fail: with an
error output, or with a ``UsageError``, which IPython prints on stderr instead. Each
notebook's own check then reads the outputs a user would read.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from conftest import kernel_manager
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


class Executed:
    """An executed notebook, read the way a user reads it."""

    def __init__(self, notebook: nbformat.NotebookNode, data_dir: Path) -> None:
        self.cells = [c for c in notebook.cells if c.cell_type == "code"]
        self.data_dir = data_dir

    def cell(self, snippet: str, nth: int = 0) -> nbformat.NotebookNode:
        """The ``nth`` code cell whose source is ``snippet``, else the ``nth`` that contains it."""
        found = [c for c in self.cells if c.source == snippet] or [c for c in self.cells if snippet in c.source]
        assert len(found) > nth, f"no code cell #{nth} with {snippet!r}"
        return found[nth]

    @staticmethod
    def stream(cell: nbformat.NotebookNode, name: str) -> str:
        return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)

    def stdout(self, snippet: str, nth: int = 0) -> str:
        return self.stream(self.cell(snippet, nth), "stdout")

    def stderr(self, snippet: str, nth: int = 0) -> str:
        return self.stream(self.cell(snippet, nth), "stderr")

    def result(self, snippet: str, nth: int = 0, mime: str = "text/plain") -> str:
        results = [o for o in self.cell(snippet, nth).outputs if o.output_type == "execute_result"]
        assert results, f"cell with {snippet!r} has no Out"
        return results[0].data.get(mime, "")

    def error(self, snippet: str) -> str:
        errors = [o for o in self.cell(snippet).outputs if o.output_type == "error"]
        assert errors, f"cell with {snippet!r} raised nothing"
        return errors[0].ename

    def query(self, sql: str, *params: object) -> list[sqlite3.Row]:
        with sqlite3.connect(self.data_dir / "runs.sqlite3") as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, params).fetchall()


def _seconds(wall_time: str) -> float:
    """IPython's ``%%time`` wall time ("15.3 ms", "1.2 s", "1min 3s") in seconds."""
    text = re.search(r"Wall time: ([^\n]+)", wall_time).group(1).strip()
    if "min" in text:
        minutes, seconds = re.match(r"(\d+)min (\d+)s", text).groups()
        return int(minutes) * 60 + int(seconds)
    number, unit = text.split()
    return float(number) * {"s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}[unit]


def check_quickstart(nb: Executed) -> None:
    assert "hello from Python" in nb.stdout("print('hello from Python'")
    assert "computed {'mean': 5.5" in nb.stdout("--in numbers --out stats")
    assert "step 4" in nb.stdout("print('step', step")
    assert nb.error("--timeout 2") == "TaskTimeoutError"
    # no network: refused as the backend words it (the resolver's gaierror in a container, PermissionError
    # under seccomp), and a line under it says why
    refused = next(o for o in nb.cell("socket.create_connection").outputs if o.output_type == "error")
    assert re.search(r"gaierror|PermissionError", refused.evalue), refused.evalue
    assert "hint: the sandbox has no network; pass --network" in "\n".join(refused.traceback)
    # the notebook's folder: not in the sandbox, then there once mounted
    assert nb.result("glob.glob(here + '/*.ipynb')   #") == "[]"
    assert "'quickstart.ipynb'" in nb.result("sorted(os.path.basename(path)")


def check_ray(nb: Executed) -> None:
    first = "hello from a Ray worker"
    printed = nb.stdout(first)  # Ray's start is information, not an error: before what the cell printed
    assert "starting a local Ray for this kernel" in printed and "[jupyter-exec]" not in nb.stderr(first)
    assert re.search(r"local Ray ready in \d+ s \(\d+ CPU, ", printed)
    assert re.search(r"^hello from a Ray worker, pid ", printed, re.M) and nb.result(first) == "42"

    assert nb.stdout("--in temperatures") == "summarised 7 readings\n"
    assert nb.result("--in temperatures") == "[15.2, 16.4]"
    assert nb.result("summary") == "{'mean': 14.09, 'max': 16.4}"
    assert nb.stdout("print('step', step") == "".join(f"step {i}\n" for i in range(5))
    assert nb.result("--num-cpus 2") == "{'CPU': 2.0}"

    refused = nb.stderr("--num-cpus 512")
    assert refused.startswith("UsageError: ") and "no node of the Ray cluster can ever run this task" in refused
    assert "asks for 512 CPU" in refused and re.search(r"the cluster has node \w+ \([^)]+\): \d+ CPU", refused)
    assert "this never runs" not in nb.stdout("--num-cpus 512")

    assert nb.error("--timeout 2") == "TaskTimeoutError" and "still working 0\n" in nb.stdout("--timeout 2")
    assert "[jupyter-exec] map: 400/400 done\n" in nb.stderr("jupyter_exec.map(collatz_steps")
    assert (
        nb.stdout("jupyter_exec.map(collatz_steps") == "the longest run below 400 starts at 327 and takes 143 steps\n"
    )

    runs = nb.query("SELECT status, name, details FROM runs WHERE backend='ray' ORDER BY id")
    cells = [r for r in runs if r["name"] != "map"]
    assert [r["status"] for r in cells] == ["succeeded"] * 4 + ["failed", "timeout"]  # refused, then cancelled
    batch = [r for r in runs if r["name"] == "map"]  # the map: one batch row counting its items
    assert [(r["status"], json.loads(r["details"])["items"]) for r in batch] == [("succeeded", 400)]
    node = json.loads(cells[0]["details"])["node_id"][:12]
    assert nb.result("%jx runs", mime="text/html").count(f"<td>{node}</td>") >= 4


def check_experiments(nb: Executed) -> None:
    tree = nb.stdout("%jx tree tuning").splitlines()
    assert tree[0].startswith("trace 'tuning': minimise loss, 3 nodes, best #3 loss=9.437"), tree
    assert re.fullmatch(r"#1  succeeded  loss=1\.09419", tree[1]), tree
    assert re.fullmatch(r"├─ #2  succeeded  loss=345\.038", tree[2]), tree
    assert re.fullmatch(r"└─ #3  succeeded  loss=9\.437\d*e-14  ★ SOTA", tree[3]), tree

    def best(snippet: str, nodes: int, nth: int = 0) -> float:
        found = re.search(
            rf"best of {nodes} nodes: node \d+, lr=[\d.]+, loss=([^,]+), depth (\d+)\n", nb.stdout(snippet, nth)
        )
        assert found and int(found.group(2)) >= 1, nb.stdout(snippet, nth)  # improved on where it started
        return float(found.group(1))

    assert "explore 'lr-sota': 12/12 done, 0 running · best loss=" in nb.stdout("trace='lr-sota'")
    first = best("trace='lr-sota'", 12)
    assert nb.stdout("%jx tree lr-sota").startswith("trace 'lr-sota': minimise loss, 12 nodes, best #")
    assert "explore 'lr-mcts': 12/12 done, 0 running · best loss=" in nb.stdout("trace='lr-mcts'")
    best("trace='lr-mcts'", 12)
    assert "param.lr" in nb.result("trace='lr-mcts'", mime="text/html")
    resumed = nb.stdout("trace='lr-sota'", 1)
    assert "explore 'lr-sota': 12/20 done, 2 running" in resumed and "20/20 done, 0 running" in resumed
    assert f"had 12 nodes (best loss {first:.3g}), now best of 20 nodes" in resumed, resumed
    assert best("trace='lr-sota'", 20, nth=1) <= first

    nodes = nb.query("SELECT trace, id, parent, status FROM trace_nodes ORDER BY id")
    counts = {name: sum(n["trace"] == name for n in nodes) for name in ("tuning", "lr-sota", "lr-mcts")}
    assert counts == {"tuning": 3, "lr-sota": 20, "lr-mcts": 12} and {n["status"] for n in nodes} == {"succeeded"}
    sota = [n for n in nodes if n["trace"] == "lr-sota"]
    assert any(n["parent"] in {m["id"] for m in sota[:12]} for n in sota[12:])  # carried on from the stored tree


def check_environments(nb: Executed) -> None:
    first, again = nb.cell("greetings.hello('sandbox')"), nb.cell("greetings.hello('again')")
    built = nb.stream(first, "stdout")  # information, not an error
    assert re.search(r"\[jupyter-exec\] env \w{8}: building for ", built), built
    assert "Installed 1 package" in built and re.search(r"env \w{8}: ready in [\d.]+ s", built)
    assert nb.result("greetings.hello('sandbox')") == "'Hello, sandbox!'"
    assert nb.result("greetings.hello('again')") == "'Hello, again!'"
    assert "[jupyter-exec]" not in nb.stream(again, "stderr")  # a cache hit: nothing built
    cold, warm = _seconds(nb.stream(first, "stdout")), _seconds(nb.stream(again, "stdout"))
    assert warm < cold / 2, (cold, warm)  # the env found, not built: a fraction of the first run

    assert nb.result("project = Path('project')") == "['config.json', 'data', 'data/readings.csv', 'notes.tmp']"
    shown = nb.stdout("--working-dir project").splitlines(keepends=True)
    printed = "".join(line for line in shown if not line.startswith("[jupyter-exec] "))  # its env's build aside
    assert printed == "files here: ['config.json', 'data']\n"  # notes.tmp left out
    assert nb.result("--working-dir project") == "['tue', 'wed']"
    listed = nb.result("envs = %jx envs")
    assert listed.count(" ready ") == 2 and "building" not in listed and "failed" not in listed
    assert nb.result("greetings.hello('default env')") == "'Bonjour, default env!'"
    assert "[jupyter-exec]" not in nb.stderr("greetings.hello('default env')")
    assert '"GREETING"' in nb.stdout("%jx env --env-spec")
    assert nb.stdout("%jx env clear") == "no default runtime env\n"
    envs = nb.query("SELECT spec, uses, builds, status FROM envs ORDER BY created")
    assert [(e["uses"], e["builds"], e["status"]) for e in envs] == [(3, 1, "ready"), (1, 1, "ready")]


def check_sessions(nb: Executed) -> None:
    assert nb.stdout("random.seed(7)").startswith("loaded 200000 readings")
    mean = float(nb.result("round(statistics.mean(readings), 3)"))
    assert 19.5 < mean < 20.5
    assert nb.stdout("warm = [r for r in readings").startswith("warm readings: ")
    share = float(nb.result("share = round("))
    assert nb.stdout("print('back in the notebook:', share)") == f"back in the notebook: {share}\n"
    assert nb.stderr("--session data --mem 2g").startswith("UsageError: --mem: session data runs with --mem 1g")
    assert "ran" not in nb.stdout("--session data --mem 2g")
    listed = nb.result("%jx sessions")
    assert "data" in listed and "seccomp" in listed
    assert nb.stdout("%jx fork data hot") == "session hot forked from data\nsession cold forked from data\n"
    hot, cold = (float(nb.result(f"--session {name}\nreadings")) for name in ("hot", "cold"))
    assert abs(hot - (mean + 5)) < 0.01 and abs(cold - (mean - 5)) < 0.01
    assert float(nb.result("# the parent is as it was")) == mean
    depths = nb.result("tree = explore(")
    assert depths.startswith("[(0, 0.0), (1, ") and depths.count("(") == 4, depths
    assert nb.stdout("%jx end hot") == "session hot ended\nsession cold ended\nsession data ended\n"
    runs = nb.query("SELECT spec, status FROM runs ORDER BY id")
    sessions = [json.loads(run["spec"]).get("session") for run in runs]
    assert sessions.count("data") == 5 and sessions.count("hot") == 1 and sessions.count("cold") == 1


CHECKS: dict[str, Callable[[Executed], None]] = {
    "quickstart.ipynb": check_quickstart,
    "ray.ipynb": check_ray,
    "experiments.ipynb": check_experiments,
    "environments.ipynb": check_environments,
    "sessions.ipynb": check_sessions,
}


@pytest.mark.kernel
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=[] if p.name == "ray.ipynb" else [pytest.mark.ordinary_user]) for p in NOTEBOOKS],
    ids=lambda p: p.name,
)
def test_notebook_executes(path, tmp_path, monkeypatch):
    assert path.name in CHECKS, "a new example notebook needs its checks here"
    data_dir, workdir = tmp_path / "data", tmp_path / "notebooks"
    shutil.copytree(path.parent, workdir)
    monkeypatch.setenv("JX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("JX_RAY_ADDRESS", "")  # the embedded local Ray, whatever the machine says
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, km=kernel_manager(), timeout=600, resources={"metadata": {"path": str(workdir)}}).execute()
    assert_shows_what_it_says(path.name, notebook, data_dir)


def assert_shows_what_it_says(name: str, notebook: nbformat.NotebookNode, data_dir: Path) -> None:
    """Only the cells tagged ``raises-exception`` failed, and notebook ``name``'s own check holds."""
    executed = Executed(notebook, data_dir)
    for cell in executed.cells:
        failed = any(o.output_type == "error" for o in cell.outputs) or executed.stream(cell, "stderr").startswith(
            "UsageError: "
        )
        expected = "raises-exception" in cell.metadata.get("tags", [])
        assert failed == expected, f"{'no' if expected else 'an'} error in cell:\n{cell.source}\n{cell.outputs}"
    CHECKS[name](executed)
