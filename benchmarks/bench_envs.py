"""Runtime-env cache: a cell with a cached env against the same cell without one, and a cold
build against plain ``uv``.

    .venv/bin/python benchmarks/bench_envs.py [--runs 20] [--quick] [--json]

1. Hit: ``Manager.run`` of a trivial seccomp cell with ``--pip`` (env cached) against the same
   cell without an env, in turn, each after the same pause (the pools refill in it). Target:
   the env adds <= 20 ms.
2. Cold build: ``EnvCache.ensure`` of a small pip list (three local wheels, so the figure
   measures our work, not the network) against ``uv venv`` + ``uv pip install`` of the same
   list into a fresh venv, in turn. Target <= 1.2x.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from speed_rows import options, pair, report, rounds
from timing import LoadWatch, interleaved

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import make_wheel

PAUSE = 0.3


def main() -> None:
    args = options(__doc__, runs=20, quick_runs=3).parse_args()
    work = Path(tempfile.mkdtemp(prefix="jx-bench-envs-"))
    os.environ["JX_DATA_DIR"] = str(work / "data")

    from jupyter_exec import Manager, RunSpec
    from jupyter_exec.backends.factory import env_builder_for
    from jupyter_exec.envs import EnvCache, EnvSpec, VenvBuilder

    wheels = [str(make_wheel(work, f"jxbench{i}", "1.0", f"N = {i}\n")) for i in range(3)]
    env = EnvSpec.from_options(base_dir=work, pip=wheels)
    manager = Manager()
    plain, with_env = RunSpec(backend="seccomp"), RunSpec(backend="seccomp", runtime_env=env)
    manager.run("x = 1", with_env)  # build once, warm both pools
    manager.run("x = 1", plain)
    hits_load = LoadWatch()
    hits = interleaved(
        {"env": lambda: manager.run("x = 1", with_env), "plain": lambda: manager.run("x = 1", plain)},
        rounds(args),
        pause=PAUSE,
        load=hits_load,
    )
    manager.shutdown()

    cache = EnvCache(work / "cold", work / "cold.sqlite3", env_builder_for)
    builder = VenvBuilder()

    def cold_build() -> None:
        built = cache.ensure(env, builder)
        cache.remove(built.hash)

    def raw_uv() -> None:
        target = work / "raw-venv"
        shutil.rmtree(target, ignore_errors=True)
        uv = str(Path(sys.executable).with_name("uv"))
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(target)], check=True)
        subprocess.run(
            [uv, "pip", "install", "--quiet", "--python", str(target / "bin" / "python"), *wheels], check=True
        )

    builds_load = LoadWatch()
    builds = interleaved({"ours": cold_build, "uv": raw_uv}, rounds(args), load=builds_load)
    shutil.rmtree(work, ignore_errors=True)
    rows = [
        pair(
            "parts",
            "envs.hit",
            f"a trivial seccomp cell through `Manager.run`, {PAUSE:g} s after the last",
            ("with a cached `--pip` env (three wheels)", hits["env"]),
            ("without an env", hits["plain"]),
            hits_load,
        ),
        pair(
            "parts",
            "envs.build",
            "a fresh venv with three local wheels",
            ("`EnvCache.ensure`, cold", builds["ours"]),
            ("`uv venv` + `uv pip install`", builds["uv"]),
            builds_load,
        ),
    ]
    report(rows, args)


if __name__ == "__main__":
    main()
