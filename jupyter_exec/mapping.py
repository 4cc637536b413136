"""``jupyter_exec.map``: one function or cell over many inputs, through the kernel's Manager.

Today it fans out on Ray (the backend with ``fans_out``): items go in batches, a
progress line counts them, results come back in order as data, and the map is recorded
as one batch run in the store (``%jx runs``, the side panel). The first item that
raises stops the map and its error is raised here, naming the item.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .backends.raycluster.options import RayOptions
from .envs import EnvSpec
from .session import current_manager
from .spec import RunSpec, parse_env

__all__ = ["map"]


def map(
    work: Callable[[Any], Any] | str,
    items: Iterable[Any],
    *,
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    memory: str | int | None = None,
    retries: int = 0,
    env: dict[str, str] | None = None,
    pip: list[str] | None = None,
    working_dir: str | None = None,
    trust: bool = False,
    batch_size: int | None = None,
    max_in_flight: int | None = None,
    wait_for_resources: bool = False,
    progress: bool = True,
) -> list[Any]:
    """``[work(item) for item in items]``, run on Ray; ``work`` may also be cell code whose
    last expression is the result, with the item bound to ``item``.

    Defaults: the kernel's Ray connection (or ``ExecConfig.ray_address``, or a local Ray),
    one CPU per task, as many tasks at once as the cluster has CPUs for.
    """
    manager = current_manager()
    options = RayOptions.parse(
        address=address or manager.config.ray_address or None,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        memory=memory,
        retries=retries,
        wait_for_resources=wait_for_resources,
    )
    env_vars = parse_env([f"{k}={v}" for k, v in (env or {}).items()])
    runtime_env = (
        EnvSpec.from_options(base_dir=Path.cwd(), pip=pip, working_dir=working_dir) if pip or working_dir else None
    )
    spec = RunSpec(backend="ray", env=env_vars, trust=trust, placement=options, runtime_env=runtime_env)
    return manager.map(
        work,
        list(items),
        spec,
        batch_size=batch_size,
        max_parallel=max_in_flight,
        progress=_progress if progress else None,
    )


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()
