"""The ``jupyter-exec`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .doctor import diagnose
from .errors import JupyterExecError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter-exec", description="Run notebook cells in sandboxes.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="say which backends work here, and how to fix those that do not")
    images = commands.add_parser("images", help="build and list the Docker sandbox images")
    image_commands = images.add_subparsers(dest="images_command", required=True)
    build = image_commands.add_parser("build", help="build jupyter-exec/NAME:latest from dockerfiles/NAME")
    build.add_argument("name", help="base, datascience, gpu or ray")
    build.add_argument("--offline", action="store_true",
                       help="make the base from this machine's Debian mirror (debootstrap), no registry needed")
    build.add_argument("--ca-bundle", type=Path, metavar="FILE",
                       help="CA bundle to trust for pip during the build (TLS-intercepting proxies)")
    build.add_argument("--force", action="store_true", help="rebuild even when the image is up to date")
    build.add_argument("--rootfs-cache", type=Path, metavar="DIR", help="where the debootstrap tarball is kept")
    image_commands.add_parser("list", help="list the jupyter-exec images this Docker daemon has")
    args = parser.parse_args(argv)
    if args.command == "images":
        return _images(args)
    if args.command == "doctor":
        text, ok = diagnose()
        print(text)
        return 0 if ok else 1
    return 2


def _images(args: argparse.Namespace) -> int:
    from . import images
    try:
        if args.images_command == "build":
            images.build(args.name, offline=args.offline, ca_bundle=args.ca_bundle, force=args.force,
                         rootfs_cache=args.rootfs_cache, progress=lambda line: print(line, flush=True))
        else:
            for row in images.list_images():
                print(f"{row.tag:40} {row.size_mb:8.0f} MB  {row.created}  {row.source_hash}")
    except JupyterExecError as error:
        print(f"jupyter-exec images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
