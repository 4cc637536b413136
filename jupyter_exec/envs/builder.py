"""What a runtime-env builder is: the one protocol every target's builder implements.

A builder makes an env for one kind of target (a venv for the process backends, a
derived image for containers) in an empty directory, describes a built one, and
deletes one. ``EnvCache`` holds no knowledge of targets: it calls these methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .envspec import EnvSpec

__all__ = ["BuiltEnv", "EnvBuilder", "Progress"]

#: Receives one line of build progress at a time ("installing six==1.16.0").
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltEnv:
    """A ready environment, as a run uses it."""

    hash: str
    path: Path
    python: str | None  # the interpreter to run with (venv targets)
    sys_path: tuple[str, ...]  # py_modules locations, first on sys.path
    working_dir: Path | None  # copied into the run's working directory
    image: str | None = None  # container targets


class EnvBuilder(Protocol):
    """Makes, describes and deletes environments for one target.

    ``target`` is ``KIND:DETAIL`` (``venv:/usr/bin/python3``, ``docker:IMAGE``): part of
    the env's hash, and what ``backends.factory.env_builder_for`` reads back to find the
    builder that deletes an env.
    """

    target: str

    def build(self, spec: EnvSpec, path: Path, log: Path, progress: Progress) -> BuiltEnv: ...

    def describe(self, spec: EnvSpec, hash_: str, path: Path) -> BuiltEnv: ...

    def delete(self, path: Path) -> None: ...
