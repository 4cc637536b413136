"""Runtime-env cache: what a hit adds to a run, and a cold build against plain ``uv``.

    .venv/bin/python benchmarks/bench_envs.py [--runs 20]

1. Hit overhead: median ``Manager.run`` of a trivial seccomp cell with ``--pip`` (env
   cached) minus the same cell without an env. Target ≤ 20 ms.
2. Cold build: ``EnvCache.ensure`` of a small pip list (three local wheels, so the figure
   measures our work, not the network) against ``uv venv`` + ``uv pip install`` of the same
   list into a fresh venv. Target ≤ 1.2×.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import median_ms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import make_wheel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    work = Path(tempfile.mkdtemp(prefix="jx-bench-envs-"))
    os.environ["JX_DATA_DIR"] = str(work / "data")

    from jupyter_exec import Manager, RunSpec
    from jupyter_exec.backends.factory import env_builder_for
    from jupyter_exec.envs import EnvCache, EnvSpec, VenvBuilder

    wheels = [str(make_wheel(work, f"jxbench{i}", "1.0", f"N = {i}\n")) for i in range(3)]
    env = EnvSpec.from_options(base_dir=work, pip=wheels)
    manager = Manager()
    plain, with_env = RunSpec(backend="seccomp"), RunSpec(backend="seccomp", runtime_env=env)
    pool = manager.backend("seccomp").pool

    def settle() -> None:
        deadline = time.monotonic() + 5
        while pool.idle_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)

    manager.run("x = 1", with_env)  # build once, warm both pools
    manager.run("x = 1", plain)
    base = median_ms(lambda: manager.run("x = 1", plain), runs, settle)
    hit = median_ms(lambda: manager.run("x = 1", with_env), runs, settle)
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

    raw_times, our_times = [], []
    for _ in range(runs):  # interleaved, so load on the machine hits both alike
        raw_times.append(median_ms(raw_uv, 1))
        our_times.append(median_ms(cold_build, 1))
    raw, ours = statistics.median(raw_times), statistics.median(our_times)
    print(f"trivial seccomp cell, no env:          {base:7.1f} ms")
    print(
        f"trivial seccomp cell, cached --pip env: {hit:7.1f} ms   hit overhead {hit - base:+.1f} ms (target <= 20 ms)"
    )
    print(f"uv venv + uv pip install (3 wheels):    {raw:7.1f} ms")
    print(f"EnvCache cold build (same list):        {ours:7.1f} ms   ratio {ours / raw:.2f}x (target <= 1.2x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
