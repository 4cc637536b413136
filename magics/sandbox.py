"""``%%sandbox``: parse, merge with config, call the manager. Nothing else."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from jupyter_exec.backends.container import ContainerOptions
from jupyter_exec.backends.names import canonical
from jupyter_exec.envs import EnvSpec
from jupyter_exec.errors import SpecError
from jupyter_exec.manager import Manager
from jupyter_exec.spec import Mount, RunSpec
from jupyter_exec.trace.explore import run_in_trace

from .cells import run_cell
from .options import (
    cache_options,
    common_fields,
    env_options,
    limit_options,
    limits,
    parse_line,
    trace_options,
    transfer_options,
    usage_errors,
)

__all__ = ["SandboxMagics"]


@magics_class
class SandboxMagics(Magics):
    """``%%sandbox``, on the kernel's ``Manager``."""

    def __init__(self, shell: Any, manager: Manager) -> None:
        super().__init__(shell)
        self.manager = manager

    def _spec(self, args: Any) -> RunSpec:
        base_dir = Path(os.getcwd())
        fields = common_fields(args, base_dir)
        if args.image:
            fields["runtime_env"] = dataclasses.replace(fields["runtime_env"] or EnvSpec(), image=args.image)
        return RunSpec(
            backend=_backend(args),
            placement=ContainerOptions.parse(args.runtime) if args.runtime else None,
            limits=limits(args),
            mounts=tuple(Mount.parse(m, base_dir) for m in args.mount or ()),
            session=args.session,
            fork=args.fork,
            **fields,
        )

    @magic_arguments()
    @limit_options
    @transfer_options
    @env_options
    @cache_options
    @trace_options
    @argument(
        "--session",
        metavar="NAME",
        help="run in sandbox session NAME, started by its first cell and kept for the next ones: their globals, "
        "imports and files live on (%%jx sessions, %%jx end NAME)",
    )
    @argument(
        "--fork",
        metavar="A",
        help="with --session B: B starts as a fork of session A, a copy of its live state (A untouched); "
        "once B lives, its cells run in it",
    )
    @argument(
        "--bg",
        action="store_true",
        help="return at once; the cell follows the run, outputs are bound when it ends (%%jx wait N for its result)",
    )
    @cell_magic
    @usage_errors()
    def sandbox(self, line: str, cell: str) -> Any:
        """Run this cell in a sandbox: a fresh process or container with limits, no network."""
        args = parse_line(self.sandbox, line)
        return run_cell(
            self.shell,
            self.manager,
            cell,
            self._spec(args),
            quiet=args.quiet,
            background=args.bg,
            runner=self._trace_run(args),
        )

    def _trace_run(self, args: Any) -> Callable[..., Any] | None:
        """With ``--trace``: a ``manager.run`` that records the run as a node of that trace (in
        front or, with ``--bg``, in the background, beside other writers of the same trace)."""
        if not args.trace:
            if args.parent or args.metric or args.maximize is not None or args.from_state:
                raise UsageError("--parent, --metric, --maximize, --minimize and --from-state need --trace NAME")
            return None
        return functools.partial(
            run_in_trace,
            self.manager,
            trace=args.trace,
            parent=args.parent or "latest",
            metric=args.metric,
            maximize=args.maximize,
            from_state=args.from_state,
        )


def _backend(args: Any) -> str:
    """The backend the options name: ``--image`` and ``--runtime`` imply the container backend,
    and ``--runtime`` on another backend is refused (a runtime is never ignored)."""
    if args.runtime and args.backend not in (None, "auto") and canonical(args.backend) != "container":
        raise SpecError(f"--runtime {args.runtime} is for the container backend; drop --backend {args.backend}")
    if args.backend and args.backend != "auto":
        return str(args.backend)
    return "container" if args.image or args.runtime else "auto"
