"""Values across library versions, in a real kernel: the kernel on numpy 2 / pandas >= 2.2,
the default image (the offline base: Debian's numpy 1.24 / pandas 1.5) on the other side.
DataFrames, Series, arrays and plain values go in and come back equal; what cannot cross is
one line naming the package, both versions and the fix; the README's first example and a
map of a notebook's function run on the default backend."""

from __future__ import annotations

import ast

import pytest
from conftest import NO_NAMESPACES, require
from values import SEEN, round_trip

from jupyter_exec.backends.container import ContainerBackend
from jupyter_exec.backends.container.runtimes import GVISOR, missing_args
from jupyter_exec.config import ExecConfig

pytestmark = pytest.mark.kernel


@pytest.fixture
def docker_kernel(kernel):
    if NO_NAMESPACES:  # the no-namespace pass and the hub-like container, as test_container_lockdown.py skips
        pytest.skip("no namespaces: no rootless engine can start here; the first pass tests it")
    availability = ContainerBackend.availability()
    require(availability.ok, f"Docker backend: {availability.reason} — {availability.fix}")
    return kernel


def _kernel_versions(kernel) -> tuple[int, tuple[int, int]]:
    numpy_major, pandas_version = kernel.eval("(int(np.__version__.split('.')[0]), pd.__version__)")
    return numpy_major, tuple(int(p) for p in pandas_version.split(".")[:2])


@pytest.mark.ordinary_user  # as jx-user (scripts/test-as-user): the user's rootless Podman
def test_every_kind_of_value_crosses_into_an_older_numpy_and_pandas(docker_kernel):
    """The acceptance: numpy 2 / pandas >= 2.2 in the kernel, numpy 1 / pandas 1.5 in the image."""
    versions, seen = round_trip(docker_kernel, "%%sandbox --backend container")
    numpy_major, pandas_version = _kernel_versions(docker_kernel)
    assert numpy_major >= 2 and pandas_version >= (2, 2), "the kernel's venv has numpy 2 and pandas >= 2.2"
    assert versions.startswith("1.") and " 1.5" in versions, f"the base image has numpy 1 / pandas 1.5: {versions}"
    assert seen == SEEN


def test_every_kind_of_value_crosses_gvisor(docker_kernel):
    runtimes = ContainerBackend(ExecConfig(pool_size=0)).engine.facts.runtimes
    require(not missing_args(GVISOR, runtimes), "gVisor (runsc) registered with the engine (scripts/setup.d/35)")
    versions, seen = round_trip(docker_kernel, "%%sandbox --backend container --runtime runsc")
    assert versions.startswith("1.") and seen == SEEN


@pytest.mark.ordinary_user
def test_every_kind_of_value_crosses_the_process_sandbox(kernel):
    versions, _ = round_trip(kernel, "%%sandbox --backend seccomp")
    assert versions == kernel.eval("f'{np.__version__} {pd.__version__}'")  # the kernel's own Python


def test_the_readmes_first_example_on_the_default_backend(docker_kernel):
    docker_kernel.run(
        "import pandas as pd\ndf = pd.DataFrame({'x': [1.0, 2.0, 3.0], 'name': ['a', 'b', 'c']})", check=True
    )
    cell = docker_kernel.run(
        "%%sandbox --mem 512m --timeout 30 --in df --out summary\nsummary = df.describe()\nprint('rows:', len(df))",
        check=True,
    )
    assert cell.stdout == "rows: 3\n"
    assert docker_kernel.last_run()["backend"] == "container"
    assert docker_kernel.eval("(float(summary.loc['mean', 'x']), list(summary.columns))") == (2.0, ["x"]), cell


def test_a_notebook_function_maps_on_the_default_backend(docker_kernel):
    """cloudpickle travels with the bootstrap: the base image has none of its own."""
    cell = docker_kernel.run(
        "import jupyter_exec\ndef square(x):\n    return x * x\njupyter_exec.map(square, range(40), max_parallel=4)",
        check=True,
        timeout=180,
    )
    assert ast.literal_eval(cell.result_text) == [x * x for x in range(40)]
    assert "[jupyter-exec] map: 40/40 done\n" in cell.stderr
    assert docker_kernel.last_run()["backend"] == "container"


def test_a_string_dtype_array_into_numpy_1_is_one_line(docker_kernel):
    docker_kernel.run("import numpy as np\nwords = np.array(['a', 'b'], dtype=np.dtypes.StringDType())", check=True)
    cell = docker_kernel.run("%%sandbox --backend container --in words\nprint('ran')")
    assert "ran" not in cell.stdout and cell.error is not None
    message = _one_line(cell.error)
    assert message.startswith(f"--in words: a numpy StringDType array made with numpy {_numpy(docker_kernel)}")
    assert "cannot be read with numpy 1." in message and "numpy 1 has no StringDType" in message
    assert "--image" in message and "jupyter-exec images build base" in message


def _numpy(kernel) -> str:
    return kernel.eval("np.__version__")


def _one_line(error: dict) -> str:
    """The message of a TransferError from the sandbox, checked to be one line."""
    assert error["ename"] == "TransferError", error
    message = error["evalue"].removeprefix("TransferError: ")
    assert "\n" not in message.strip(), message
    return message


def test_a_pickle_that_cannot_load_there_is_one_line(docker_kernel):
    """An object of the kernel's numpy 2 that has no data form (an object array inside it) is
    pickled, and numpy 1 cannot load what numpy 2 pickled."""
    docker_kernel.run("import numpy as np\nclass Box:\n    pass\nbox = Box()\nbox.a = np.arange(3)", check=True)
    cell = docker_kernel.run("%%sandbox --backend container --in box\nprint('ran')")
    assert "ran" not in cell.stdout, cell
    message = _one_line(cell.error)
    assert message.startswith(
        f"--in box: a pickle made with numpy {_numpy(docker_kernel)} (in the kernel) cannot be read with numpy 1."
    )
    assert "No module named 'numpy._core'" in message


def test_a_map_whose_work_cannot_load_stops_after_the_first_batch(docker_kernel):
    """A module the image lacks: every batch would fail the same way, so the map stops at once
    with that one line, and the progress line counts the failures."""
    (docker_kernel.cwd / "sklearn_stand_in.py").write_text("def twice(x):\n    return 2 * x\n")
    cell = docker_kernel.run(
        "import jupyter_exec, sklearn_stand_in\n"
        "def use(x):\n    return sklearn_stand_in.twice(x)\n"
        "jupyter_exec.map(use, range(40), max_parallel=4, batch_size=1)",
        timeout=180,
    )
    message = _one_line(cell.error)
    assert "the map stopped" in message and "sklearn_stand_in" in message and "--pip sklearn_stand_in" in message
    runs = docker_kernel.records().runs(60)
    the_map = next(r["id"] for r in runs if r["name"] == "map")
    batches = [r for r in runs if (r["name"] or "").startswith(f"map {the_map}[")]
    assert 1 <= len(batches) <= 4, "no batch starts once the first has failed so"
