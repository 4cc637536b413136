"""Hints for errors that are a sandbox's wall, not a bug in the cell: no network, a read-only
path, a module or a command the image lacks.

A sandbox refuses what it does not allow in the words of the operating system (``PermissionError:
[Errno 13] Permission denied``, ``Temporary failure in name resolution``), which do not say that
the sandbox did it or what to pass instead. ``hint`` reads the error the sandbox described (its
type, errno and file name, and those of the exceptions behind it: never what the cell printed)
against the run's spec and the policy, and gives the one line that does. The walls are the
table ``WALLS``, one row each; the first row that matches gives the hint.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from .errors import RemoteError
from .limits import LIMITS
from .policy import Policy
from .spec import RunSpec

__all__ = ["WALLS", "Wall", "hint"]


@dataclass(frozen=True)
class Run:
    """What a hint may say about the run: its spec, the image it ran on and the policy."""

    spec: RunSpec
    image: str | None
    policy: Policy

    @property
    def where(self) -> str:
        return f"the image {self.image}" if self.image else "the sandbox's Python"


Cause = dict[str, Any]  # one exception as the sandbox described it: type, errno, filename; and the traceback


@dataclass(frozen=True)
class Wall:
    """One wall: ``hits`` says whether an exception (one of the error's causes) is it, ``hint``
    words it for the run."""

    name: str
    hits: Callable[[Cause, RunSpec], bool]
    hint: Callable[[Cause, Run], str]


_NO_NETWORK_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAFNOSUPPORT}
_RESOLVER_ERRNOS = {-2, -3, -5}  # EAI_NONAME, EAI_AGAIN, EAI_NODATA: no resolver in an offline sandbox
_DENIED = {errno.EACCES, errno.EPERM}


def _network_hint(cause: Cause, run: Run) -> str:
    flag = LIMITS["network"].flag
    ceiling = run.policy.ceilings.get("network")
    if ceiling is not None and ceiling.value < 1:
        return f"the sandbox has no network, and the administrator's policy ({ceiling.source}) does not allow {flag}"
    return f"the sandbox has no network; pass {flag} to give this run one"


def _no_network(cause: Cause, spec: RunSpec) -> bool:
    if spec.limits.network:
        return False
    number, kind = cause.get("errno"), cause.get("type")
    if kind == "gaierror":
        return number in _RESOLVER_ERRNOS
    # socket() refused by the process sandbox's filter: a PermissionError with no file name, in socket.py
    refused = number in _DENIED and not cause.get("filename") and "socket.py" in cause["traceback"]
    return number in _NO_NETWORK_ERRNOS or refused


def _read_only(cause: Cause, spec: RunSpec) -> bool:
    return bool(cause.get("filename")) and (
        cause.get("errno") == errno.EROFS or (cause.get("errno") in _DENIED and not _writable(cause, spec))
    )


def _writable(cause: Cause, spec: RunSpec) -> bool:
    path = PurePosixPath(cause["filename"])
    return any(not m.read_only and path.is_relative_to(m.target) for m in spec.mounts)


def _read_only_hint(cause: Cause, run: Run) -> str:
    """EROFS is a write; a refusal (EACCES, EPERM) may be a read or a write: the error does not say."""
    path, folder = cause["filename"], PurePosixPath(cause["filename"]).parent
    remedy = (
        f"to write to {path}: --mount {folder}:rw"
        if cause.get("errno") == errno.EROFS
        else f"to read {path}: --mount {folder}; to write to it: --mount {folder}:rw"
    )
    return f"the sandbox sees the system read-only, its own scratch directory and only what you --mount; {remedy}"


_MODULE = re.compile(r"No module named '([A-Za-z_][\w]*)'")


def _missing_module(cause: Cause, spec: RunSpec) -> bool:
    return cause.get("type") == "ModuleNotFoundError" and _MODULE.search(cause.get("message") or "") is not None


def _module_hint(cause: Cause, run: Run) -> str:
    match = _MODULE.search(cause.get("message") or "")
    assert match is not None
    module = match.group(1)
    image = " or --image an image that has it" if run.image else ""
    return f"{module} is not installed in {run.where}: add --pip {module} (if that is its package's name){image}"


def _missing_command(cause: Cause, spec: RunSpec) -> bool:
    """A program subprocess could not find (``open("data.csv")`` is a missing file, not this)."""
    filename = cause.get("filename") or ""
    started = "subprocess.py" in cause["traceback"]
    return cause.get("errno") == errno.ENOENT and started and bool(filename) and "/" not in filename


def _command_hint(cause: Cause, run: Run) -> str:
    image = "; use --image with an image that has it" if run.image else ""
    return f"no command {cause['filename']!r} in {run.where}{image}"


WALLS: tuple[Wall, ...] = (
    Wall("network", _no_network, _network_hint),
    Wall("read-only path", _read_only, _read_only_hint),
    Wall("missing module", _missing_module, _module_hint),
    Wall("missing command", _missing_command, _command_hint),
)


def hint(error: RemoteError, spec: RunSpec, image: str | None, policy: Policy) -> str | None:
    """The hint for ``error`` of a run of ``spec`` on ``image`` (None: no image) under ``policy``;
    None when it hit none of the walls."""
    causes = [{**cause, "traceback": error.remote_traceback} for cause in error.causes]
    causes[0]["message"] = error.remote_message  # the error itself; the causes behind it are read by errno
    run = Run(spec, image, policy)
    for wall in WALLS:
        for cause in causes:
            if wall.hits(cause, spec):
                return wall.hint(cause, run)
    return None
