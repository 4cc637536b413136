"""What the magics share: option groups declared once, line parsing, and turning the
user's mistakes into one-line ``UsageError``s.

Options are declared once per group and stacked, so ``%%sandbox``, ``%%rayrun`` and
``%jx env`` take them the same way and help text never drifts. ``usage_errors`` is the
one place where a ``SpecError`` (or another error that is the user's to fix) becomes a
``UsageError``: one line, no traceback. Errors of a run render themselves.
"""

from __future__ import annotations

import argparse
import functools
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument

from jupyter_exec.envs import EnvSpec
from jupyter_exec.errors import BackendUnavailableError, JupyterExecError, MissingExtraError, SpecError, TaskError
from jupyter_exec.limits import LIMITS
from jupyter_exec.spec import CacheRequest, Limits, parse_env, parse_names

__all__ = [
    "cache_options",
    "common_fields",
    "env_options",
    "limit_argument",
    "limit_options",
    "limits",
    "option_group",
    "parse_line",
    "runtime_env",
    "trace_options",
    "transfer_options",
    "usage_errors",
]

F = TypeVar("F", bound=Callable[..., Any])


def usage_errors(*kinds: type[JupyterExecError]) -> Callable[[F], F]:
    """A magic whose errors of ``kinds`` (default: a bad spec, a backend that cannot run it)
    reach the user as a one-line ``UsageError``; a run's own ``TaskError`` renders itself."""
    caught = kinds or (SpecError, BackendUnavailableError, MissingExtraError)

    def decorate(magic: F) -> F:
        @functools.wraps(magic)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return magic(*args, **kwargs)
            except TaskError:
                raise
            except caught as error:
                raise UsageError(str(error)) from None

        return wrapper  # type: ignore[return-value]

    return decorate


class _MagicWithParser(Protocol):
    """A magic decorated with IPython's ``magic_arguments``, which gives it its parser."""

    parser: argparse.ArgumentParser

    def __hash__(self) -> int: ...  # the parsed lines are cached per magic


def parse_line(magic: _MagicWithParser, line: str) -> argparse.Namespace:
    """The magic's options, parsed once per distinct line: re-running a cell skips argparse.

    The line is split as a shell splits it, quotes removed (``--excludes '*.csv'`` is the
    pattern ``*.csv``; IPython's own ``parse_argstring`` keeps the quotes in the value) and a
    ``# comment`` left out, as the docs' examples end their lines.
    """
    return argparse.Namespace(**vars(_parsed_line(magic, line)))


def without_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` after a space, outside quotes), as a
    shell reads it; the rest exactly as typed."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


@functools.lru_cache(maxsize=64)
def _parsed_line(magic: _MagicWithParser, line: str) -> argparse.Namespace:
    try:
        argv = shlex.split(without_comment(line))
    except ValueError:
        raise UsageError(f"unbalanced quotes in the options: {line}") from None
    return magic.parser.parse_args(argv)


def option_group(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def limit_argument(field: str) -> Callable[[F], F]:
    """The option of limit ``field``, as its row of the limits table says (flag, help); its value
    lands in ``args.limit_FIELD`` (apart from a backend's own options: Ray's ``--memory``)."""
    limit = LIMITS[field]
    dest = f"limit_{field}"
    if limit.kind == "switch":
        return argument(limit.flag, dest=dest, action="store_true", default=None, help=limit.option_help())
    return argument(limit.flag, dest=dest, metavar=limit.metavar, help=limit.option_help())


def limits(args: Any) -> Limits:
    """The limits the options in ``args`` ask for (of those the magic takes: None for the others)."""
    return Limits.parse(**{field: getattr(args, f"limit_{field}", None) for field in LIMITS})


transfer_options = option_group(
    argument(
        "--in",
        dest="inputs",
        metavar="A,B",
        help="notebook variables to send in (as data; a function or object pickled)",
    ),
    argument("--out", dest="outputs", metavar="X,Y", help="variables to bring back, as data"),
    argument(
        "--trust",
        action="store_true",
        help="allow results to come back as pickle and HTML unsanitised (only for code you trust)",
    ),
    argument("--env", action="append", metavar="K=V", help="environment variable for the run (repeatable)"),
    argument("--name", help="a name for this run in %%jx runs"),
    argument("--quiet", action="store_true", help="do not stream output into the cell (it is still logged)"),
    limit_argument("timeout"),
)

limit_options = option_group(
    argument("--backend", help="auto (default), container (also called docker), seccomp or local"),
    argument(
        "--image",
        metavar="NAME",
        help="the container image the cell runs in (default DockerConfig.image; implies --backend container); "
        "--pip envs are built on it",
    ),
    argument(
        "--runtime",
        metavar="NAME",
        help="the container's OCI runtime, e.g. runsc for gVisor (default DockerConfig.runtime, else the "
        "engine's; implies --backend container)",
    ),
    *(limit_argument(field) for field in LIMITS if field != "timeout"),  # --timeout: with the transfer options
    argument(
        "--mount",
        action="append",
        metavar="HOST[:TARGET][:ro|rw]",
        help="a host path the cell may see, read-only unless :rw (repeatable)",
    ),
)

env_options = option_group(
    argument(
        "--pip",
        action="append",
        metavar="REQ[,REQ]",
        help="packages for the run, built once into a cached env (repeatable; local wheels allowed)",
    ),
    argument("--requirements", metavar="FILE", help="a requirements file for the run's env"),
    argument("--env-spec", metavar="FILE", help="a runtime env in YAML or JSON (Ray's field names)"),
    argument("--working-dir", metavar="DIR", help="a directory copied in as the run's working directory"),
    argument("--py-modules", action="append", metavar="PATH", help="a local package put on sys.path (repeatable)"),
    argument(
        "--excludes",
        action="append",
        metavar="PATTERN",
        help="files left out of --working-dir and --py-modules (repeatable; .gitignore is honoured too)",
    ),
)


trace_options = option_group(
    argument("--trace", metavar="NAME", help="record the run as a node of experiment trace NAME (%%jx tree NAME)"),
    argument(
        "--parent",
        metavar="ID|best|latest|root",
        help="the node the run extends: an id, the best, the latest accepted (default) or a new root",
    ),
    argument("--metric", metavar="NAME", help="the number in the cell's result that ranks nodes (default: score)"),
    argument(
        "--maximize",
        dest="maximize",
        action="store_const",
        const=True,
        default=None,
        help="larger metric is better (the default for a new trace)",
    ),
    argument("--minimize", dest="maximize", action="store_const", const=False, help="smaller metric is better"),
    argument(
        "--from-state",
        action="store_true",
        help="run in a fork of the parent node's live session: the cell sees what its ancestors' cells defined",
    ),
)


cache_options = option_group(
    argument(
        "--cache",
        action="store_true",
        help="serve the cell from the cache of identical runs (same code, inputs, env, image, limits, "
        "mounted files) without running it, and keep it there when it succeeds (%%jx cache)",
    ),
    argument(
        "--cache-mounts",
        metavar="content|mtime",
        help="with --cache: read-only mounts enter the key by their files' content (default) or, "
        "cheaper, by size and modification time",
    ),
    argument("--cache-network", action="store_true", help="with --cache: a --network cell may be cached too"),
)


def cache_request(args: Any) -> CacheRequest | None:
    """The cache options as a ``CacheRequest`` (None without ``--cache``; the others need it)."""
    if not args.cache:
        if args.cache_mounts or args.cache_network:
            raise SpecError("--cache-mounts and --cache-network go with --cache")
        return None
    return CacheRequest(mounts=args.cache_mounts or "content", network=args.cache_network)


def common_fields(args: Any, base_dir: Path | None = None) -> dict[str, Any]:
    """The RunSpec fields every cell magic takes the same way: transfer, env and cache options.
    Relative env paths are taken from ``base_dir`` (default: the current directory)."""
    return {
        "cache": cache_request(args),
        "inputs": parse_names(args.inputs, "--in"),
        "outputs": parse_names(args.outputs, "--out"),
        "env": parse_env(args.env),
        "trust": args.trust,
        "name": args.name,
        "runtime_env": runtime_env(args, base_dir),
    }


def runtime_env(args: Any, base_dir: Path | None = None) -> EnvSpec | None:
    """The EnvSpec the env options describe (``--env-spec`` first, options on top), or None."""
    if not (args.pip or args.requirements or args.env_spec or args.working_dir or args.py_modules or args.excludes):
        return None  # most cells: nothing to resolve
    base_dir = base_dir or Path.cwd()
    from_options = EnvSpec.from_options(
        base_dir=base_dir,
        pip=args.pip,
        requirements=args.requirements,
        working_dir=args.working_dir,
        py_modules=args.py_modules,
        excludes=args.excludes,
    )
    if args.env_spec:
        return from_options.inherit(EnvSpec.from_file((base_dir / args.env_spec).resolve()))
    return None if from_options.is_empty() else from_options
