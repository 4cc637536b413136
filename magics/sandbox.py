"""``%%sandbox`` and ``%jx``: parse, merge with config, call the manager. Nothing else.

Options are declared once per group and stacked, so later magics (``%%rayrun``) reuse
them and help text never drifts. User mistakes raise ``UsageError`` (one line, no
traceback); errors from the run render themselves.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shlex
from pathlib import Path
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..cancel_watch import cancel_elsewhere
from ..config import ExecConfig
from ..doctor import diagnose
from ..errors import JupyterExecError, SpecError, TaskError
from ..manager import Manager
from ..policy import policy_report
from ..store import COLUMNS
from ..envs import EnvSpec
from ..spec import Limits, Mount, RunSpec, parse_env, parse_names
from .cells import background_runs, probe_widgets, run_cell, widgets_wanted

__all__ = ["ExecMagics"]


def parse_line(magic: Callable, line: str) -> argparse.Namespace:
    """The magic's options, parsed once per distinct line: re-running a cell skips argparse.

    The line is split as a shell splits it, quotes removed (``--excludes '*.csv'`` is the
    pattern ``*.csv``): IPython's own ``parse_argstring`` keeps the quotes in the value.
    """
    return argparse.Namespace(**vars(_parsed_line(magic, line)))


@functools.lru_cache(maxsize=64)
def _parsed_line(magic: Callable, line: str) -> argparse.Namespace:
    try:
        argv = shlex.split(line)
    except ValueError:
        raise UsageError(f"unbalanced quotes in the options: {line}") from None
    return magic.parser.parse_args(argv)


def _stack(*decorators: Callable) -> Callable:
    def apply(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function
    return apply


transfer_options = _stack(
    argument("--in", dest="inputs", metavar="A,B", help="notebook variables to send in (pickled)"),
    argument("--out", dest="outputs", metavar="X,Y", help="variables to bring back, as data"),
    argument("--trust", action="store_true",
             help="allow results to come back as pickle and HTML unsanitised (only for code you trust)"),
    argument("--env", action="append", metavar="K=V", help="environment variable for the run (repeatable)"),
    argument("--name", help="a name for this run in %%jx runs"),
    argument("--quiet", action="store_true", help="do not stream output into the cell (it is still logged)"),
    argument("--timeout", metavar="T", help="wall-clock limit, e.g. 30s or 5m"),
)

limit_options = _stack(
    argument("--backend", help="auto (default), docker, seccomp or local"),
    argument("--image", metavar="NAME",
             help="the Docker image the cell runs in (default DockerConfig.image; implies --backend docker); "
                  "--pip envs are built on it"),
    argument("--mem", metavar="SIZE", help="memory limit, e.g. 512m or 2g"),
    argument("--cpus", metavar="N", help="CPU share, e.g. 1 or 0.5"),
    argument("--cpu-time", metavar="T", help="CPU-time limit, e.g. 10s"),
    argument("--pids", metavar="N", help="most processes and threads at once"),
    argument("--fsize", metavar="SIZE", help="largest file the cell may write, e.g. 100m"),
    argument("--shm", metavar="SIZE",
             help="size of the cell's own /dev/shm (multiprocessing, DataLoader workers), e.g. 256m; "
                  "counts towards --mem (default ExecConfig.shm)"),
    argument("--network", action="store_true", help="allow network access (off by default)"),
    argument("--gpus", metavar="all|N|device=IDS", help="GPUs for the run (docker: needs the NVIDIA runtime)"),
    argument("--mount", action="append", metavar="HOST[:TARGET][:ro|rw]",
             help="a host path the cell may see, read-only unless :rw (repeatable)"),
)

env_options = _stack(
    argument("--pip", action="append", metavar="REQ[,REQ]",
             help="packages for the run, built once into a cached env (repeatable; local wheels allowed)"),
    argument("--requirements", metavar="FILE", help="a requirements file for the run's env"),
    argument("--env-spec", metavar="FILE", help="a runtime env in YAML or JSON (Ray's field names)"),
    argument("--working-dir", metavar="DIR", help="a directory copied in as the run's working directory"),
    argument("--py-modules", action="append", metavar="PATH", help="a local package put on sys.path (repeatable)"),
    argument("--excludes", action="append", metavar="PATTERN",
             help="files left out of --working-dir and --py-modules (repeatable; .gitignore is honoured too)"),
)


trace_options = _stack(
    argument("--trace", metavar="NAME", help="record the run as a node of experiment trace NAME (%%jx tree NAME)"),
    argument("--parent", metavar="ID|best|latest|root",
             help="the node the run extends: an id, the best, the latest accepted (default) or a new root"),
    argument("--metric", metavar="NAME", help="the number in the cell's result that ranks nodes (default: score)"),
    argument("--maximize", dest="maximize", action="store_const", const=True, default=None,
             help="larger metric is better (the default for a new trace)"),
    argument("--minimize", dest="maximize", action="store_const", const=False, help="smaller metric is better"),
)


def common_fields(args: Any, base_dir: Path | None = None) -> dict[str, Any]:
    """The RunSpec fields every cell magic takes the same way: transfer and env options.
    Relative env paths are taken from ``base_dir`` (default: the current directory)."""
    return {"inputs": parse_names(args.inputs, "--in"), "outputs": parse_names(args.outputs, "--out"),
            "env": parse_env(args.env), "trust": args.trust, "name": args.name,
            "runtime_env": runtime_env(args, base_dir)}


def runtime_env(args: Any, base_dir: Path | None = None) -> EnvSpec | None:
    """The EnvSpec the env options describe (``--env-spec`` first, options on top), or None."""
    if not (args.pip or args.requirements or args.env_spec or args.working_dir or args.py_modules or args.excludes):
        return None                     # most cells: nothing to resolve
    base_dir = base_dir or Path.cwd()
    from_options = EnvSpec.from_options(
        base_dir=base_dir, pip=args.pip, requirements=args.requirements, working_dir=args.working_dir,
        py_modules=args.py_modules, excludes=args.excludes)
    if args.env_spec:
        return from_options.inherit(EnvSpec.from_file((base_dir / args.env_spec).resolve()))
    return None if from_options.is_empty() else from_options


@magic_arguments()
@env_options
def jx_env(line: str) -> None:
    """%jx env [options]: the runtime env every run of this kernel inherits."""


def _kernel_id() -> str | None:
    try:
        from ipykernel.connect import get_connection_file
        name = Path(get_connection_file()).stem
    except (ImportError, RuntimeError, AttributeError):
        return None
    return name.removeprefix("kernel-")


@magics_class
class ExecMagics(Magics):
    """The magics of one shell, sharing one ``Manager``."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.manager = Manager(ExecConfig(parent=shell), kernel_id=_kernel_id())
        probe_widgets()

    def _spec(self, args: Any) -> RunSpec:
        base_dir = Path(os.getcwd())
        try:
            fields = common_fields(args, base_dir)
            if args.image:
                fields["runtime_env"] = dataclasses.replace(fields["runtime_env"] or EnvSpec(), image=args.image)
            return RunSpec(
                backend=args.backend or ("docker" if args.image else "auto"),
                limits=Limits.parse(memory=args.mem, cpus=args.cpus, timeout=args.timeout,
                                    cpu_time=args.cpu_time, pids=args.pids, fsize=args.fsize,
                                    network=args.network or None, gpus=args.gpus, shm=args.shm),
                mounts=tuple(Mount.parse(m, base_dir) for m in args.mount or ()),
                **fields,
            )
        except SpecError as error:
            raise UsageError(str(error)) from None

    @magic_arguments()
    @limit_options
    @transfer_options
    @env_options
    @trace_options
    @argument("--bg", action="store_true",
              help="return at once with a handle; outputs are bound when the run ends (%%jx wait N)")
    @cell_magic
    def sandbox(self, line: str, cell: str) -> Any:
        """Run this cell in a sandbox: a fresh process or container with limits, no network."""
        args = parse_line(self.sandbox, line)
        return run_cell(self.shell, self.manager, cell, self._spec(args), quiet=args.quiet, background=args.bg,
                        runner=self._trace_run(args))

    def _trace_run(self, args: Any) -> Callable[..., Any] | None:
        """With ``--trace``: a ``manager.run`` that records the run as a node of that trace."""
        if not args.trace:
            if args.parent or args.metric or args.maximize is not None:
                raise UsageError("--parent, --metric, --maximize and --minimize need --trace NAME")
            return None
        if args.bg:
            raise UsageError("--trace runs in front: drop --bg (to grow a trace several runs at a time, use "
                             "jupyter_exec.explore(propose, trace=NAME, max_parallel=K))")
        from ..trace.explore import run_in_trace
        return functools.partial(run_in_trace, self.manager, trace=args.trace, parent=args.parent or "latest",
                                 metric=args.metric, maximize=args.maximize)

    @line_magic
    def jx(self, line: str) -> Any:
        """%jx runs | show N | logs N | cancel N | wait N [SECONDS] | tree [NAME] | resources | doctor | policy |
        envs | env"""
        command, _, rest = line.strip().partition(" ")
        handler = getattr(self, f"_jx_{command}", None)
        if handler is None:
            raise UsageError(f"%jx {command}: unknown command; use one of: runs, show N, logs N, cancel N, wait N, "
                             "tree, resources, doctor, policy, envs, env")
        try:
            return handler(rest.strip())
        except TaskError:
            raise                   # a run's own error (from %jx wait) renders itself
        except JupyterExecError as error:
            raise UsageError(str(error)) from None

    def _run_id(self, text: str, command: str) -> int:
        if not text.isdigit():
            raise UsageError(f"%jx {command} needs a run id, e.g. %jx {command} 12 (see %jx runs)")
        return int(text)

    def _jx_runs(self, rest: str) -> Any:
        """The newest runs; ``node`` is where a Ray run ran (its node id's first 12 characters, as --node takes)."""
        rows = self.manager.store.runs(limit=int(rest) if rest.isdigit() else 50, columns=(*COLUMNS, "details"))
        for row in rows:
            row["node"] = (json.loads(row.pop("details") or "{}").get("node_id") or "")[:12] or None
        try:
            import pandas
        except ImportError:
            return rows
        frame = pandas.DataFrame(rows)
        if not frame.empty:
            frame["created"] = pandas.to_datetime(frame["created"], unit="s")
            columns = [c for c in frame.columns if c != "node"]
            columns.insert(columns.index("isolation") + 1, "node")
            frame = frame[columns].set_index("id")
        return frame

    def _jx_show(self, rest: str) -> None:
        row = self.manager.store.get(self._run_id(rest, "show"))
        if row is None:
            raise UsageError(f"no run {rest}; `%jx runs` lists them")
        for key in ("spec", "details"):
            row[key] = json.loads(row[key]) if row[key] else None
        print(json.dumps(row, indent=2, default=str))

    def _jx_logs(self, rest: str) -> None:
        print(self.manager.log_text(self._run_id(rest, "logs")), end="")

    def _jx_cancel(self, rest: str) -> None:
        """Cancel a run of this kernel at once; a run of another kernel through a request in the store."""
        run_id = self._run_id(rest, "cancel")
        if self.manager.cancel(run_id):
            print(f"run {run_id} cancelled")
        else:
            print(cancel_elsewhere(self.manager.store, run_id))

    def _jx_wait(self, rest: str) -> Any:
        """Wait for a --bg run (at most SECONDS); its value, or its error raised."""
        run_text, _, seconds = rest.partition(" ")
        run = background_runs(self.manager).get(self._run_id(run_text, "wait"))
        try:
            return run.wait(float(seconds) if seconds.strip() else None).value
        except TimeoutError as error:
            raise UsageError(str(error)) from None
        except ValueError:
            raise UsageError(f"%jx wait N [SECONDS]: {seconds!r} is not a number of seconds") from None

    def _jx_tree(self, rest: str) -> Any:
        """The experiment tree NAME (default: the latest): a widget, or text without a widget frontend."""
        from ..trace.explore import trace_store
        from ..trace.view import render
        store = trace_store(self.manager)
        names = store.names()
        if not names or (rest and rest not in names):
            raise UsageError(f"no trace {rest!r}; traces here: {', '.join(names) or 'none yet (see explore)'}")
        trace = store.open(rest or names[0])
        if widgets_wanted(self.manager):
            from ..widgets import TreeWidget
            return TreeWidget.of(trace, self.manager)
        print(render(trace))
        return None

    def _jx_resources(self, rest: str) -> Any:
        """What each backend can offer now."""
        from ..resources import resources_report
        report = resources_report(self.manager)
        if widgets_wanted(self.manager):
            from ..widgets import ResourcesWidget
            return ResourcesWidget(backends=report)
        from ..resources import format_report
        print(format_report(report))
        return None

    def _jx_envs(self, rest: str) -> Any:
        """The runtime-env cache: what is built, how big, when last used."""
        rows = self.manager.envs.index.all()
        try:
            import pandas
        except ImportError:
            return rows
        frame = pandas.DataFrame(rows, columns=["hash", "status", "target", "size", "uses", "builds", "last_used",
                                                "created", "spec", "build_log"])
        for column in ("last_used", "created"):
            frame[column] = pandas.to_datetime(frame[column], unit="s")
        return frame.set_index("hash")

    def _jx_env(self, rest: str) -> None:
        """Set (options), clear (``clear``) or show (nothing) the kernel's default runtime env."""
        if rest == "clear":
            self.manager.default_env = None
        elif rest:
            try:
                self.manager.default_env = runtime_env(parse_line(jx_env, rest), Path(os.getcwd()))
            except SpecError as error:
                raise UsageError(str(error)) from None
        current = self.manager.default_env
        print(json.dumps(current.describe(), indent=2) if current else "no default runtime env")

    def _jx_doctor(self, rest: str) -> None:
        print(diagnose(self.manager.policy)[0])

    def _jx_policy(self, rest: str) -> None:
        """The administrator's policy this kernel holds (read when the extension loaded): where it
        came from, its ceilings and allow-lists."""
        print(policy_report(self.manager.policy))

