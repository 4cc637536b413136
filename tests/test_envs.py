"""Runtime envs: specs, hashes, the cache (build once, retry failures, LRU GC) and the venv builder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from conftest import make_wheel

from jupyter_exec import Manager, RunSpec
from jupyter_exec.backends.factory import env_builder_for
from jupyter_exec.config import ExecConfig
from jupyter_exec.envs import EnvCache, EnvSpec, VenvBuilder
from jupyter_exec.envs.hashing import env_hash
from jupyter_exec.errors import EnvBuildError, SpecError


def test_spec_validation(tmp_path):
    with pytest.raises(SpecError, match="--pip: 'numpy>>1' is not a requirement"):
        EnvSpec.from_options(base_dir=tmp_path, pip=["numpy>>1"])
    with pytest.raises(SpecError, match=r"--pip: .*missing\.whl does not exist"):
        EnvSpec.from_options(base_dir=tmp_path, pip=["./missing.whl"])
    with pytest.raises(SpecError, match=r"--working-dir: .*does not exist"):
        EnvSpec.from_options(base_dir=tmp_path, working_dir="nowhere")
    (tmp_path / "bad.yaml").write_text("pip: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        EnvSpec.from_file(tmp_path / "bad.yaml")
    (tmp_path / "odd.json").write_text(json.dumps({"pip": ["six"], "conda": ["x"]}))
    with pytest.raises(SpecError, match=r"unknown field\(s\) \['conda'\]"):
        EnvSpec.from_file(tmp_path / "odd.json")
    (tmp_path / "ok.yaml").write_text("pip: [six==1.16.0]\nenv_vars: {A: '1'}\nconfig: {setup_timeout: 2m}\n")
    spec = EnvSpec.from_file(tmp_path / "ok.yaml")
    assert spec.pip == ("six==1.16.0",) and spec.env_vars == {"A": "1"} and spec.setup_timeout == 120


def test_children_inherit_like_ray(tmp_path):
    parent = EnvSpec(pip=("a",), env_vars={"X": "1", "Y": "1"}, excludes=("*.csv",))
    child = EnvSpec(pip=("b",), env_vars={"Y": "2"})
    merged = child.inherit(parent)
    assert merged.pip == ("b",) and merged.env_vars == {"X": "1", "Y": "2"} and merged.excludes == ("*.csv",)
    assert EnvSpec(env_vars={"Z": "3"}).inherit(parent).pip == ("a",)


def test_hash_follows_content_not_names(tmp_path):
    wheel = make_wheel(tmp_path, "jxhash", "1.0", "V = 1\n")
    spec = EnvSpec.from_options(base_dir=tmp_path, pip=[str(wheel)])
    first = env_hash(spec, "venv:x")
    assert env_hash(spec, "venv:x") == first
    make_wheel(tmp_path, "jxhash", "1.0", "V = 2\n")  # same file name, new bytes
    assert env_hash(spec, "venv:x") != first
    assert env_hash(spec, "venv:y") != env_hash(spec, "venv:x")
    assert env_hash(EnvSpec(pip=("a", "b")), "t") == env_hash(EnvSpec(pip=("b", "a"), env_vars={"A": "1"}), "t")


def test_working_dir_hash_honours_excludes_and_gitignore(tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "main.py").write_text("x = 1\n")
    (project / ".gitignore").write_text("data/\n*.log\n")
    spec = EnvSpec.from_options(base_dir=tmp_path, working_dir="project", excludes=["*.tmp"])
    before = env_hash(spec, "t")
    for ignored in ("data/big.bin", "run.log", "scratch.tmp"):
        (project / ignored).write_text("changes nothing")
    assert env_hash(spec, "t") == before
    (project / "main.py").write_text("x = 2\n")
    assert env_hash(spec, "t") != before


def test_to_ray_runtime_env(tmp_path):
    (tmp_path / "req.txt").write_text("# pinned\nsix==1.16.0\n\n")
    spec = EnvSpec.from_options(
        base_dir=tmp_path,
        pip=["attrs"],
        requirements="req.txt",
        working_dir=".",
        env_vars={"A": "1"},
        setup_timeout="5m",
    )
    assert spec.to_ray_runtime_env() == {
        "pip": ["attrs", "six==1.16.0"],
        "working_dir": str(tmp_path),
        "env_vars": {"A": "1"},
        "config": {"setup_timeout_seconds": 300},
    }


@pytest.fixture
def cache(tmp_path):
    return EnvCache(tmp_path / "envs", tmp_path / "db.sqlite3", env_builder_for)


def test_failed_build_is_not_cached_and_shows_the_log(cache, tmp_path):
    spec = EnvSpec.from_options(base_dir=tmp_path, pip=["jx-no-such-package-zz9==1.0"])
    for attempt in (1, 2):
        with pytest.raises(EnvBuildError) as caught:
            cache.ensure(spec, VenvBuilder())
        assert "last lines of" in str(caught.value) and "jx-no-such-package-zz9" in caught.value.log_tail
        row = cache.index.get(env_hash(spec, VenvBuilder().target))
        assert row["status"] == "failed" and row["builds"] == attempt  # tried again, not reused


def test_gc_evicts_least_recently_used_and_skips_envs_in_use(cache, tmp_path):
    builder = VenvBuilder()
    wheels = [make_wheel(tmp_path, f"jxgc{i}", "1.0", "") for i in range(3)]
    specs = [EnvSpec.from_options(base_dir=tmp_path, pip=[str(wheel)]) for wheel in wheels]
    built = [cache.ensure(spec, builder) for spec in specs]  # used in order 0, 1, 2
    cache.ensure(specs[0], builder)  # 0 is now the most recent
    with cache.lease(built[1].hash):
        removed = cache.gc(max_bytes=1)  # everything is over the cap
    assert removed == [built[2].hash, built[0].hash]
    assert [r["hash"] for r in cache.index.all()] == [built[1].hash]
    assert built[1].path.is_dir() and not built[2].path.exists()


def _manager(tmp_path) -> Manager:
    config = ExecConfig()
    config.data_dir = str(tmp_path / "data")
    return Manager(config)


def test_four_kernels_asking_at_once_build_once(tmp_path):
    wheel = make_wheel(tmp_path, "jxshared", "1.0", "def answer():\n    return 42\n")
    spec = RunSpec(backend="seccomp", runtime_env=EnvSpec.from_options(base_dir=tmp_path, pip=[str(wheel)]))
    managers = [_manager(tmp_path) for _ in range(4)]
    results, errors = [], []

    def run(manager: Manager) -> None:
        try:
            results.append(manager.run("import jxshared\njxshared.answer()", spec).value)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(m,)) for m in managers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and results == [42, 42, 42, 42]
    [row] = managers[0].envs.index.all()
    assert row["builds"] == 1 and row["uses"] == 4 and row["status"] == "ready"
    for manager in managers:
        manager.shutdown()


def test_cli_builds_with_progress_then_finds_it_cached(tmp_path):
    wheel = make_wheel(tmp_path, "jxcli", "1.0", "")
    env = {**os.environ, "JX_DATA_DIR": str(tmp_path / "data")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jupyter_exec.cli", "envs", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )

    first = cli("build", "--pip", str(wheel))
    assert first.returncode == 0 and "installing" in first.stdout and "Installed 1 package" in first.stdout
    second = cli("build", "--pip", str(wheel))
    assert second.returncode == 0 and "installing" not in second.stdout
    assert first.stdout.splitlines()[-1] == second.stdout.splitlines()[-1]  # the same env
    bad = cli("build", "--pip", "jxcli>>1")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "is not a requirement" in bad.stderr
    listed = cli("list").stdout
    assert "ready" in listed and "builds 1" in listed and "uses 2" in listed
