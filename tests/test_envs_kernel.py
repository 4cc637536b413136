"""Runtime envs through a real kernel: ``--pip`` builds once, content changes rebuild, files arrive."""

from __future__ import annotations

import pytest
from conftest import make_wheel

pytestmark = pytest.mark.kernel


def test_same_pip_list_builds_once(kernel, notebook_dir):
    wheel = make_wheel(notebook_dir, "jxonce", "1.0", "WHO = 'first build'\n")
    first = kernel.run(f"%%sandbox --backend seccomp --pip {wheel}\nimport jxonce\njxonce.WHO", check=True)
    assert first.result_text == "'first build'"
    assert "installing" in first.stdout and "Installed 1 package" in first.stdout  # progress shown (not as an error)
    assert "[jupyter-exec]" not in first.stderr
    second = kernel.run(f"%%sandbox --backend seccomp --pip {wheel}\nimport jxonce, numpy\njxonce.WHO", check=True)
    assert second.result_text == "'first build'"
    assert "[jupyter-exec]" not in second.stdout + second.stderr  # no install work at all
    kernel.run("envs = %jx envs", check=True)
    counts = kernel.eval("[(r.builds, r.uses) for r in envs.itertuples() if 'jxonce' in r.spec]")
    assert counts == [(1, 2)]


def test_rebuilt_wheel_with_the_same_name_is_a_new_env(kernel, notebook_dir):
    (notebook_dir / "v1").mkdir()
    wheel = make_wheel(notebook_dir / "v1", "jxstale", "1.0", "VERSION = 'old'\n")
    cell = kernel.run(f"%%sandbox --backend seccomp --pip {wheel}\nimport jxstale\njxstale.VERSION", check=True)
    assert cell.result_text == "'old'"
    make_wheel(notebook_dir / "v1", "jxstale", "1.0", "VERSION = 'new'\n")  # same name and version
    cell = kernel.run(f"%%sandbox --backend seccomp --pip {wheel}\nimport jxstale\njxstale.VERSION", check=True)
    assert cell.result_text == "'new'"


def test_failing_env_is_a_clear_error_and_nothing_runs(kernel):
    cell = kernel.run("%%sandbox --backend seccomp --pip jx-no-such-package-zz9==1.0\nprint('ran')")
    assert cell.error["ename"] == "EnvBuildError" and "last lines of" in cell.error["evalue"]
    assert "ran" not in cell.stdout
    assert kernel.last_run()["status"] == "failed"


def test_working_dir_py_modules_env_spec_and_kernel_default(kernel, notebook_dir):
    project = notebook_dir / "project"
    (project / "helpers").mkdir(parents=True)
    (project / "config.txt").write_text("from working_dir")
    (project / "secret.key").write_text("left out")
    (project / "helpers" / "__init__.py").write_text("def greet():\n    return 'hi from py_modules'\n")
    (notebook_dir / "env.yaml").write_text("env_vars: {STAGE: test}\nexcludes: ['*.key']\n")
    code = (
        "import os, helpers\n"
        "(open('config.txt').read(), os.path.exists('secret.key'), helpers.greet(), os.environ['STAGE'])"
    )
    cell = kernel.run(
        f"%%sandbox --backend seccomp --working-dir project --py-modules project/helpers --env-spec env.yaml\n{code}",
        check=True,
    )
    assert cell.result_text == "('from working_dir', False, 'hi from py_modules', 'test')"
    kernel.run("%jx env --env-spec env.yaml", check=True)
    try:
        cell = kernel.run("%%sandbox --backend seccomp\nimport os\nos.environ['STAGE']", check=True)
        assert cell.result_text == "'test'"
    finally:
        kernel.run("%jx env clear", check=True)
    bad = kernel.run("%%sandbox --backend seccomp --pip numpy>>1\nprint('ran')")
    assert bad.stderr.startswith("UsageError: --pip: 'numpy>>1' is not a requirement") and bad.stderr.count("\n") == 1
