"""``%%rayrun``: a cell as a Ray task. Parses, merges with config, calls the manager.

The transfer options (``--in --out --trust --env --name --quiet --timeout``) are the
ones ``%%sandbox`` declares, so both magics move values the same safe way.
"""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from jupyter_exec.backends.raycluster import RayOptions
from jupyter_exec.manager import Manager
from jupyter_exec.spec import RunSpec

from .cells import run_cell
from .options import (
    cache_options,
    common_fields,
    env_options,
    limits,
    option_group,
    parse_line,
    transfer_options,
    usage_errors,
)

__all__ = ["RayMagics"]

ray_options = option_group(
    argument(
        "--address",
        metavar="auto|IP:PORT|ray://HOST:PORT",
        help="the Ray cluster to use (default: ExecConfig.ray_address, else a local Ray started once per kernel)",
    ),
    argument("--num-cpus", metavar="N", help="CPUs the task reserves (default 1)"),
    argument("--num-gpus", metavar="N", help="GPUs the task reserves (default 0)"),
    argument("--memory", metavar="SIZE", help="memory the task reserves for scheduling, e.g. 4g (Ray does not cap it)"),
    argument(
        "--resources",
        metavar="NAME=N,...",
        help="custom resources the task reserves, as nodes declare them (ray start --resources)",
    ),
    argument("--node", metavar="ID|IP|HOST|local", help="run on this node: id (or prefix), IP, hostname or local"),
    argument("--soft", action="store_true", help="with --node: prefer that node, run elsewhere if it cannot"),
    argument("--gpu-id", metavar="I,J", help="pin these GPU ids through CUDA_VISIBLE_DEVICES"),
    argument("--retries", metavar="N", help="times Ray retries the task if its worker dies (default 0)"),
    argument(
        "--wait-for-resources",
        action="store_true",
        help="queue until the cluster has the resources (autoscaling) instead of failing at once",
    ),
)


@magics_class
class RayMagics(Magics):
    """``%%rayrun``, sharing the kernel's ``Manager`` with ``%%sandbox``."""

    def __init__(self, shell: Any, manager: Manager) -> None:
        super().__init__(shell)
        self.manager = manager

    def _spec(self, args: Any) -> RunSpec:
        options = RayOptions.parse(
            address=args.address or self.manager.config.ray_address or None,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            memory=args.memory,
            custom=args.resources,
            node=args.node,
            soft=args.soft or None,
            gpu_ids=args.gpu_id,
            retries=args.retries,
            wait_for_resources=args.wait_for_resources or None,
        )
        return RunSpec(backend="ray", limits=limits(args), placement=options, **common_fields(args))

    @magic_arguments()
    @ray_options
    @transfer_options
    @env_options
    @cache_options
    @cell_magic
    @usage_errors()
    def rayrun(self, line: str, cell: str) -> Any:
        """Run this cell as a Ray task, with the resources it asks for; output streams live."""
        args = parse_line(self.rayrun, line)
        return run_cell(self.shell, self.manager, cell, self._spec(args), quiet=args.quiet)
