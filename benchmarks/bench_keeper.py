"""What the keeper costs a container's create: through it, against straight to the engine.

    .venv/bin/python benchmarks/bench_keeper.py [--runs 60]          # rootful Docker
    bash scripts/as-user python benchmarks/bench_keeper.py           # rootless Podman (jx-user)

The engine is the one the container backend picks (``auto``); the image is the backend's.
Creates through the keeper and straight to the engine are called in turn (each container is
removed after the timing, untimed). The first create of a process also starts its keeper:
that figure is one sample. Warm cells never create: ``bench_container.py`` measures them.
"""

from __future__ import annotations

import argparse
import os
import time

from timing import interleaved

LABEL = {"jupyter-exec.bench": "keeper"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()

    from jupyter_exec.backends.container import ContainerBackend, keepers
    from jupyter_exec.config import ExecConfig

    backend = ContainerBackend(ExecConfig(pool_size=0))
    engine, image = backend.engine, backend.settings.image
    api = engine.client.api
    api.version()  # the client's own first call is not the keeper's
    started = time.perf_counter()
    keepers.create(engine, image, ["true"], labels=LABEL)
    first = (time.perf_counter() - started) * 1000
    try:
        times = interleaved(
            {
                "relayed": lambda: keepers.create(engine, image, ["true"], labels=LABEL),
                "direct": lambda: api.create_container(image, ["true"], labels=LABEL),
            },
            args.runs,
        )
        relayed, direct = times["relayed"].median, times["direct"].median
    finally:
        for container in api.containers(all=True, filters={"label": "jupyter-exec.bench=keeper"}):
            api.remove_container(container["Id"], force=True)
    facts = engine.facts
    print(
        f"engine: {'rootless' if facts.rootless else 'rootful'} {facts.kind} {facts.version}, storage {facts.storage}"
    )
    print(f"create, straight to the engine: {direct:6.1f} ms   (load average {os.getloadavg()[0]:.1f})")
    print(f"create, through the keeper:     {relayed:6.1f} ms   {relayed - direct:+.1f} ms")
    print(f"first create, starting the keeper: {first:6.1f} ms (one sample)")


if __name__ == "__main__":
    main()
