"""The ``jupyter-exec`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .broker import cli as broker_cli
from .doctor import diagnose
from .errors import JupyterExecError

__all__ = ["main"]

_ENGINE_HELP = "the container engine's address (default: the one the container backend uses)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter-exec", description="Run notebook cells in sandboxes.")
    commands = parser.add_subparsers(dest="command", required=True)
    doctor = commands.add_parser("doctor", help="say which backends work here, and how to fix those that do not")
    doctor.add_argument(
        "--fix-runtime",
        nargs="?",
        const="runsc",
        metavar="RUNTIME",
        help="print the daemon.json entry that registers a container runtime (default runsc: gVisor) and how "
        "to reload it",
    )
    images = commands.add_parser("images", help="build, copy and list the sandbox images of a container engine")
    image_commands = images.add_subparsers(dest="images_command", required=True)
    build = image_commands.add_parser("build", help="build jupyter-exec/NAME:latest from dockerfiles/NAME")
    build.add_argument("name", help="base, datascience, gpu or ray")
    build.add_argument(
        "--offline",
        action="store_true",
        help="make the base from this machine's Debian mirror (debootstrap), no registry needed",
    )
    build.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="FILE",
        help="CA bundle to trust for pip during the build (TLS-intercepting proxies)",
    )
    build.add_argument("--force", action="store_true", help="rebuild even when the image is up to date")
    build.add_argument("--rootfs-cache", type=Path, metavar="DIR", help="where the debootstrap tarball is kept")
    build.add_argument("--engine", metavar="URL", help=_ENGINE_HELP)
    copy = image_commands.add_parser(
        "copy", help="copy an image from one engine to another (docker save | podman load), e.g. to a rootless Podman"
    )
    copy.add_argument("name", help="base, datascience, gpu, ray, or a full tag")
    copy.add_argument("--from", dest="source", required=True, metavar="URL", help="the engine that has it")
    copy.add_argument("--to", dest="target", metavar="URL", help=_ENGINE_HELP)
    listing = image_commands.add_parser("list", help="list the jupyter-exec images an engine has")
    listing.add_argument("--engine", metavar="URL", help=_ENGINE_HELP)
    envs = commands.add_parser("envs", help="list, garbage-collect or remove cached runtime environments")
    env_commands = envs.add_subparsers(dest="envs_command", required=True)
    env_commands.add_parser("list", help="the cached envs, most recently used first")
    build = env_commands.add_parser("build", help="build (or find) an env ahead of time, with progress")
    build.add_argument(
        "--backend", default="seccomp", help="whose env to build: seccomp/local (venv) or container (image)"
    )
    build.add_argument("--pip", action="append", metavar="REQ[,REQ]", help="requirements or local wheels (repeatable)")
    build.add_argument("--requirements", metavar="FILE", help="a requirements file")
    build.add_argument("--env-spec", metavar="FILE", help="a runtime env in YAML or JSON (Ray's field names)")
    gc = env_commands.add_parser("gc", help="remove least-recently-used envs beyond the size cap, and old ones")
    gc.add_argument("--max-size", metavar="SIZE", help="size cap, e.g. 5g (default: ExecConfig.envs_max_size)")
    gc.add_argument("--max-age", metavar="AGE", help="remove envs unused this long, e.g. 7d")
    remove = env_commands.add_parser("rm", help="remove one env")
    remove.add_argument("hash", help="the env's hash (a unique prefix will do)")
    _store_parser(commands)
    broker_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "broker":
        return broker_cli.run(args)
    if args.command == "images":
        return _images(args)
    if args.command == "envs":
        return _envs(args)
    if args.command == "store":
        return _store(args)
    if args.command == "doctor":
        if args.fix_runtime:
            from .backends.container.runtimes import REQUIRED_ARGS, fix_text

            if args.fix_runtime not in REQUIRED_ARGS:
                print(f"jupyter-exec doctor: no entry for runtime {args.fix_runtime!r}; known: runsc", file=sys.stderr)
                return 1
            print(fix_text(args.fix_runtime))
            return 0
        text, ok = diagnose()
        print(text)
        return 0 if ok else 1
    return 2


def _images(args: argparse.Namespace) -> int:
    from .backends.container import images
    from .backends.container.engine import Engine
    from .reports import text_table
    from .units import format_bytes

    def engine(url: str | None) -> Engine:
        return Engine(url) if url else images.default_engine()

    def progress(line: str) -> None:
        print(line, flush=True)

    try:
        if args.images_command == "build":
            images.build(
                args.name,
                offline=args.offline,
                ca_bundle=args.ca_bundle,
                force=args.force,
                rootfs_cache=args.rootfs_cache,
                progress=progress,
                engine=engine(args.engine),
            )
        elif args.images_command == "copy":
            images.copy(args.name, Engine(args.source), engine(args.target), progress=progress)
        else:
            rows = [
                (
                    row.tag,
                    row.image_id or "-",
                    format_bytes(row.size) if row.image_id else "-",
                    row.created or "-",
                    row.state,
                )
                for row in images.list_images(engine(args.engine))
            ]
            print(text_table(("IMAGE", "ID", "SIZE", "CREATED", "STATE"), rows))
    except JupyterExecError as error:
        print(f"jupyter-exec images: {error}", file=sys.stderr)
        return 1
    return 0


def _envs(args: argparse.Namespace) -> int:
    from .backends.factory import backend_class, env_builder_for
    from .config import ExecConfig, application_config
    from .envs import EnvCache, EnvSpec
    from .units import parse_duration, parse_size

    config = ExecConfig(config=application_config())
    cache = EnvCache(config.envs_dir, config.store_path, env_builder_for)
    _close_orphans(config.store_path)
    try:
        if args.envs_command == "list":
            for row in cache.index.all():
                print(
                    f"{row['hash']}  {row['status']:8} {row['size'] / 2**20:8.1f} MB  uses {row['uses']:<5} "
                    f"builds {row['builds']:<3} {row['target']}"
                )
        elif args.envs_command == "build":
            spec = EnvSpec.from_options(base_dir=Path.cwd(), pip=args.pip, requirements=args.requirements)
            if args.env_spec:
                spec = spec.inherit(EnvSpec.from_file(Path(args.env_spec).resolve()))
            config.pool_size = 0  # a backend made only for its env builder starts nothing
            builder = backend_class(args.backend)(config).env_builder(spec)
            if builder is None:
                raise JupyterExecError(f"the {args.backend} backend builds no envs of its own (Ray builds them itself)")
            built = cache.ensure(spec, builder, lambda line: print(line, flush=True))
            print(f"{built.hash}  {built.image or built.python or built.path}")
        elif args.envs_command == "gc":
            removed = cache.gc(
                parse_size(args.max_size or config.envs_max_size, "--max-size"),
                parse_duration(args.max_age or config.envs_max_age, "--max-age"),
            )
            print(f"removed {len(removed)} env(s)" + "".join(f"\n  {h}" for h in removed))
        else:
            matches = [r["hash"] for r in cache.index.all() if r["hash"].startswith(args.hash)]
            if len(matches) != 1:
                raise JupyterExecError(f"{len(matches)} envs match {args.hash!r}; `jupyter-exec envs list` shows them")
            cache.remove(matches[0])
            print(f"removed {matches[0]}")
    except JupyterExecError as error:
        print(f"jupyter-exec envs: {error}", file=sys.stderr)
        return 1
    return 0


def _store_parser(commands: Any) -> None:
    store = commands.add_parser("store", help="check, vacuum or recover the run store")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    check = store_commands.add_parser(
        "check", help="integrity, sizes, row counts, oldest and newest run, free space (changes nothing)"
    )
    check.add_argument("path", nargs="?", type=Path, help="a store file (default: this user's store)")
    vacuum = store_commands.add_parser("vacuum", help="fold the journal in and give free pages back to the disk")
    vacuum.add_argument("path", nargs="?", type=Path, help="a store file (default: this user's store)")
    recover = store_commands.add_parser(
        "recover", help="copy the rows still readable in a damaged store file into the store"
    )
    recover.add_argument("damaged", type=Path, help="the damaged file, e.g. runs.sqlite3.corrupt-20250101-120000")
    recover.add_argument("--into", type=Path, metavar="FILE", help="the store to copy into (default: this user's)")
    recover.add_argument(
        "--no-sqlite3", action="store_true", help="read pages in Python only, even if the sqlite3 command is installed"
    )


def _store(args: argparse.Namespace) -> int:
    from .config import ExecConfig, application_config
    from .store.health import inspect, recover, vacuum
    from .units import format_bytes

    config = ExecConfig(config=application_config())
    try:
        if args.store_command == "check":
            health = inspect(args.path or config.store_path, min_free=0 if args.path else config.min_free_bytes())
            if health.ok and not args.path:
                _close_orphans(config.store_path)
            print(health.report())
            return 0 if health.ok else 1
        if args.store_command == "vacuum":
            before, after = vacuum(args.path or config.store_path)
            print(f"{args.path or config.store_path}: {format_bytes(before)} -> {format_bytes(after)}")
            return 0
        into = (args.into or config.store_path).resolve()
        if not args.damaged.is_file():
            raise JupyterExecError(f"no file {args.damaged}; `jupyter-exec store check` lists damaged stores kept")
        if args.damaged.resolve() == into:
            raise JupyterExecError(f"{into} is the store itself: name the damaged copy, or pass --into NEW_FILE")
        print(recover(args.damaged, into, use_sqlite3=not args.no_sqlite3).report())
    except JupyterExecError as error:
        print(f"jupyter-exec store: {error}", file=sys.stderr)
        return 1
    return 0


def _close_orphans(path: Path) -> None:
    """Finish the runs of kernels that died, as a kernel starting would: whoever opens the store
    next sees them ``failed``, never running forever."""
    from ._proc import pid_alive
    from .store.records import RunRecords

    if path.exists():
        RunRecords(path).close_orphans(pid_alive)


if __name__ == "__main__":
    sys.exit(main())
