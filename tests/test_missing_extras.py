"""A plain install: what needs a missing extra says so in one line naming the pip install.

Each case runs an IPython shell in a fresh interpreter where the extra's modules are
absent (``sys.modules[name] = None``, Python's own way of making an import fail), and
reads what a user would see.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_SHELL = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
from IPython.testing.globalipapp import start_ipython
shell = start_ipython()
shell.run_line_magic("load_ext", "jupyter_exec")
shell.run_cell({cell!r})
"""


@pytest.mark.parametrize(
    ("extra", "blocked", "cell"),
    [
        ("ray", ["ray"], "%%rayrun\nprint('ran')"),
        ("docker", ["docker"], "%%sandbox --backend docker\nprint('ran')"),
        ("widgets", ["anywidget", "ipywidgets"], "import jupyter_exec.widgets"),
        ("server", ["jupyter_server"], "import jupyter_exec.server"),
        ("data", ["numpy", "pandas", "pyarrow"], "%%sandbox --backend seccomp\nimport numpy\nnumpy.arange(3)"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(tmp_path, extra, blocked, cell):
    done = subprocess.run(
        [sys.executable, "-c", _SHELL.format(blocked=blocked, cell=cell)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JX_DATA_DIR": str(tmp_path / "data")},
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    wanted = [line for line in said if f"pip install 'jupyter-exec[{extra}]'" in line]
    assert len(wanted) == 1 and "ran" not in said, said
    assert not any("Traceback" in line or "ModuleNotFoundError" in line for line in said), said
