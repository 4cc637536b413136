"""Each backend under sustained demand: create-to-first-output (p50, p99) and creations per second
with as many concurrent requesters as cores, pools on, against the raw tool doing the same.

    .venv/bin/python benchmarks/bench_backends.py [--backend process ...] [--seconds 15] [--quick] [--json]
    bash scripts/as-user python benchmarks/bench_backends.py --backend podman      # rootless Podman

A requester is a thread that runs ``print(1)`` over and over through ``Manager.run`` (a map's
batches and a hub's kernels reach the Manager this way), each run a fresh sandbox; the clock
of one run starts at the call and stops when its first output reaches the kernel. Its twin
runs the raw tool as often from as many threads: ``python -c`` (process), the engine's ``run
--rm --network none`` (containers), until the first line of its stdout; for Ray,
``ray.get(f.remote())`` until its result (a raw task's prints reach the driver only through
Ray's log monitor); for the broker, the same cell with the kernel on the engine itself. The
two sides take turns, ``--seconds`` each, for ``--runs`` rounds; a side's rate is its runs
finished over its time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speed_rows import Row, options, report, rounds, who
from timing import LoadWatch, Sample, interleaved, notebook_shell

CELL = "print(1)"
BACKENDS = ("process", "docker", "gvisor", "ray", "broker")
NAMES = {
    "process": "process (seccomp)",
    "docker": "container, rootful Docker",
    "gvisor": "container, Docker with gVisor",
    "podman": "container, rootless Podman",
    "ray": "Ray (local)",
    "broker": "container through the broker (Unix socket)",
}


class FirstOutput:
    """A run's output sink that notes when its first output arrived."""

    def __init__(self) -> None:
        self.at: float | None = None

    def output(self, stream: str, text: str) -> None:
        if self.at is None:
            self.at = time.perf_counter()

    def display(self, bundle: dict[str, str]) -> None:
        self.output("stdout", "")


class Phase:
    """``requesters`` threads calling ``once`` (which returns the seconds to first output) for
    ``seconds``; the first-output times and the runs finished per second, over every phase."""

    def __init__(self, once: Callable[[], float], requesters: int, seconds: float) -> None:
        self.once, self.requesters, self.seconds = once, requesters, seconds
        self.firsts: list[float] = []
        self.finished, self.spent = 0, 0.0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()

    def __call__(self) -> None:
        began = time.perf_counter()
        until = began + self.seconds
        threads = [threading.Thread(target=self._requester, args=(until,)) for _ in range(self.requesters)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.spent += time.perf_counter() - began
        if self.errors:  # a run that failed is no figure: say so, not a lower rate
            raise self.errors[0]

    def _requester(self, until: float) -> None:
        while time.perf_counter() < until:
            try:
                first = self.once()
            except BaseException as error:
                self.errors.append(error)
                return
            with self._lock:
                self.firsts.append(first * 1000)
                self.finished += 1

    def summary(self, label: str) -> dict[str, Any]:
        sample = Sample(tuple(self.firsts))
        return {
            "label": label,
            "p50": sample.median,
            "p99": sample.quantile(0.99),
            "n": len(self.firsts),
            "per_second": self.finished / self.spent,
        }


def ours(manager: Any, spec: Any) -> Callable[[], float]:
    def once() -> float:
        sink, began = FirstOutput(), time.perf_counter()
        manager.run(CELL, spec, sink=sink)
        return (sink.at or time.perf_counter()) - began

    return once


def raw_process(command: list[str]) -> Callable[[], float]:
    """``command`` run to its end; the seconds until the first line of its stdout."""

    def once() -> float:
        began = time.perf_counter()
        with subprocess.Popen(command, stdout=subprocess.PIPE) as child:
            assert child.stdout is not None
            child.stdout.readline()
            first = time.perf_counter() - began
            child.stdout.read()
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, command)
        return first

    return once


Once = Callable[[], float]


def sides(name: str, home: Path) -> tuple[Once, Once, str, Callable[[], None]]:
    """Our side, the twin, the twin's label, and what to stop afterwards, for backend ``name``."""
    from jupyter_exec import Manager, RunSpec, current_manager
    from jupyter_exec.backends.container.config import ContainerOptions
    from jupyter_exec.config import ExecConfig

    manager = current_manager()
    if name == "process":
        raw = raw_process([sys.executable, "-c", CELL])
        return ours(manager, RunSpec(backend="seccomp")), raw, "`python -c`", _nothing
    if name == "ray":
        import ray

        run = ours(manager, RunSpec(backend="ray"))
        run()  # the embedded Ray started

        @ray.remote
        def trivial() -> int:
            return 1

        def raw() -> float:
            began = time.perf_counter()
            ray.get(trivial.remote())
            return time.perf_counter() - began

        return run, raw, "`ray.get(f.remote())`, to its result", _nothing
    if name == "broker":
        from bench_broker import unix_broker

        (home / "broker.yaml").write_text("")
        broker = unix_broker(home)
        brokered = Manager(ExecConfig(broker=f"unix://{home / 'broker.sock'}"))

        def stop() -> None:
            brokered.shutdown()
            broker.terminate()
            broker.wait(30)

        spec = RunSpec(backend="container")
        return ours(brokered, spec), ours(manager, spec), "the kernel on the engine itself", stop
    runtime = ["--runtime", "runsc"] if name == "gvisor" else []
    spec = RunSpec(backend="container", placement=ContainerOptions.parse("runsc") if runtime else None)
    backend = manager.backend("container")
    kind = backend.engine.facts.kind
    cli = shutil.which(kind)
    if cli is None:
        raise SystemExit(f"the {kind} CLI is needed for the raw side: install it")
    command = [cli, "run", "--rm", *runtime, "--network", "none", backend.settings.image, "python3", "-c", CELL]
    label = f"`{kind} run --rm{' --runtime runsc' if runtime else ''}`"
    return ours(manager, spec), raw_process(command), label, _nothing


def _nothing() -> None:
    pass


def main() -> None:
    parser = options(__doc__, runs=2, quick_runs=1)
    parser.add_argument("--backend", choices=(*BACKENDS, "podman"), action="append")
    parser.add_argument("--seconds", type=float, help="seconds per side and round (default 10; 3 with --quick)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="jx-bench-backends-"))
    os.environ.setdefault("JX_DATA_DIR", str(home / "kernel"))
    os.environ["JX_RAY_ADDRESS"] = ""
    notebook_shell()  # the kernel's Manager, as a notebook's
    requesters = os.cpu_count() or 1
    seconds = args.seconds or (3 if args.quick else 10)
    rows: list[Row] = []
    for name in args.backend or BACKENDS:
        mine, raw, label, stop = sides(name, home)
        try:
            mine(), raw()  # started before the clock
            phases = {"ours": Phase(mine, requesters, seconds), "raw": Phase(raw, requesters, seconds)}
            load = LoadWatch()
            interleaved(phases, rounds(args), load=load)
        finally:
            stop()
        rows.append(
            {
                "kind": "rate",
                "table": "backends",
                "id": f"backends.{name}@{who()}",
                "work": f"{NAMES[name]}, {requesters} requesters",
                "who": who(),
                "ours": phases["ours"].summary("jupyter-exec"),
                "twin": phases["raw"].summary(label),
                "load": load.span,
                "cores": os.cpu_count(),
            }
        )
    report(rows, args)


if __name__ == "__main__":
    main()
