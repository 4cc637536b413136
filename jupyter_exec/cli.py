"""The ``jupyter-exec`` command."""

from __future__ import annotations

import argparse
import sys

from .doctor import diagnose

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter-exec", description="Run notebook cells in sandboxes.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="say which backends work here, and how to fix those that do not")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        text, ok = diagnose()
        print(text)
        return 0 if ok else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
