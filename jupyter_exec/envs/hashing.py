"""The identity of an environment: its normalised spec plus the content of its local files.

Ray keys its pip cache by file name, so a wheel rebuilt under the same name is served
stale. Here every local file (a wheel, a requirements file, working_dir and py_modules
trees) contributes its bytes to the hash, so changed content is a new environment.
``env_vars`` and ``setup_timeout`` are left out: they change how a run starts or how long a
build may take, not what the build makes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path

from .envspec import EnvSpec

__all__ = ["env_hash", "file_digest", "tree_files"]

_ALWAYS_EXCLUDED = (".git", "__pycache__", ".ipynb_checkpoints", "*.pyc")


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes (hex), read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gitignore_patterns(root: Path) -> list[str]:
    ignore = root / ".gitignore"
    if not ignore.is_file():
        return []
    lines = (line.strip() for line in ignore.read_text(errors="replace").splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith(("#", "!"))]


def _excluded(relative: str, name: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(name, p) or fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(relative, p + "/*")
        for p in patterns
    )


def tree_files(root: Path, excludes: tuple[str, ...] = ()) -> list[Path]:
    """Files under ``root`` (or ``root`` itself), honouring excludes and .gitignore, sorted."""
    if root.is_file():
        return [root]
    patterns = [*_ALWAYS_EXCLUDED, *excludes, *_gitignore_patterns(root)]
    found = []
    for directory, dirnames, filenames in os.walk(root):
        base = Path(directory)
        dirnames[:] = sorted(d for d in dirnames if not _excluded(str((base / d).relative_to(root)), d, patterns))
        found += [base / f for f in filenames if not _excluded(str((base / f).relative_to(root)), f, patterns)]
    return sorted(found)


def _tree_digest(root: Path, excludes: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for path in tree_files(root, excludes):
        digest.update(str(path.relative_to(root if root.is_dir() else root.parent)).encode() + b"\0")
        digest.update(file_digest(path).encode())
    return digest.hexdigest()


def env_hash(spec: EnvSpec, target: str) -> str:
    """A hex digest naming what ``spec`` builds for ``target`` (e.g. ``venv:/usr/bin/python3``)."""
    pip = sorted(f"{p}#sha256={file_digest(Path(p))}" if os.path.isabs(p) else " ".join(p.split()) for p in spec.pip)
    normalised = {
        "target": target,
        "pip": pip,
        "requirements": file_digest(spec.requirements) if spec.requirements else None,
        "image": spec.image,
        "working_dir": _tree_digest(spec.working_dir, spec.excludes) if spec.working_dir else None,
        "py_modules": [[m.name, _tree_digest(m, spec.excludes)] for m in spec.py_modules],
    }
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()[:24]
