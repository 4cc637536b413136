"""What a run asks for: ``RunSpec`` (code-independent options), ``Limits``, ``Mount`` and
``Placement`` (a backend's own typed options, e.g. Ray's resources).

One vocabulary for every backend: each limit is a row of ``limits.LIMITS`` (its flag, how it
is read, its default). Everything is validated here, before anything runs, and a bad value
raises ``SpecError`` naming the option and an example of a good one.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .envs.envspec import EnvSpec, parse_env
from .errors import SpecError
from .limits import LIMITS, Gpus, Limit

__all__ = ["CacheRequest", "Limits", "Mount", "Placement", "RunSpec", "parse_env", "parse_names"]

_SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Limits:
    """Resource limits. ``None`` means "no limit of this kind".

    A backend that cannot enforce a limit it was given refuses the run with a
    ``BackendUnavailableError`` rather than ignoring it.
    """

    memory: int | None = None  # bytes; no swap on top
    cpus: float | None = None  # share of CPUs, e.g. 0.5
    timeout: float | None = None  # wall-clock seconds, enforced from the host
    cpu_time: float | None = None  # CPU seconds (RLIMIT_CPU)
    pids: int | None = None  # processes and threads
    fsize: int | None = None  # largest file the run may write, bytes
    network: bool = False  # any network at all (off by default)
    gpus: Gpus | None = None  # all, a count or device ids
    shm: int | None = None  # size of the run's own /dev/shm (tmpfs, counts as memory), bytes

    def __post_init__(self) -> None:
        if self.gpus is not None and not isinstance(self.gpus, Gpus):  # Limits(gpus="all") as typed
            object.__setattr__(self, "gpus", Gpus.parse(self.gpus))

    @classmethod
    def parse(cls, **values: Any) -> Limits:
        """Limits from user-typed values (``memory="512m"``); ``None`` values are left unset."""
        return cls.read(values)

    @classmethod
    def read(cls, values: Mapping[str, Any], where: Callable[[Limit], str] = lambda limit: limit.flag) -> Limits:
        """Limits from typed or stored values (``as_dict``'s), each read by its row of the table; a bad
        one raises ``SpecError`` naming ``where(row)`` (default: its flag)."""
        unknown = set(values) - set(LIMITS)
        if unknown:
            raise SpecError(f"unknown limit(s) {sorted(unknown)}; known: {sorted(LIMITS)}")
        return cls(**{k: LIMITS[k].read(v, where(LIMITS[k])) for k, v in values.items() if v is not None})

    def merged_over(self, defaults: Limits) -> Limits:
        """These limits, with unset fields taken from ``defaults``."""
        return dataclasses.replace(
            defaults,
            **{
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None and getattr(self, f.name) != f.default
            },
        )

    def only(self, fields: Iterable[str] | None) -> Limits:
        """These limits with only ``fields`` kept (None: all of them)."""
        if fields is None:
            return self
        kept = frozenset(fields)
        return Limits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in kept})

    def as_dict(self) -> dict[str, Any]:
        """Field name to value, as plain JSON values (GPUs as typed); ``read`` takes it back."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Gpus) else value


@dataclass(frozen=True)
class Mount:
    """A host path the run may see: ``HOST[:TARGET][:ro|rw]``, read-only unless ``rw``."""

    source: Path
    target: str
    read_only: bool = True

    @classmethod
    def parse(cls, text: str, base_dir: Path) -> Mount:
        parts = text.split(":")
        mode = "ro"
        if parts[-1] in ("ro", "rw") and len(parts) > 1:
            mode = parts.pop()
        if len(parts) > 2 or not parts[0]:
            raise SpecError(f"--mount: cannot read {text!r}; write HOST[:TARGET][:ro|rw], e.g. data:/data:ro")
        source = (base_dir / os.path.expanduser(parts[0])).resolve()
        if not source.exists():
            raise SpecError(f"--mount: {source} does not exist; create it or fix the path")
        target = parts[1] if len(parts) == 2 else str(source)
        if not target.startswith("/"):
            raise SpecError(f"--mount: the target {target!r} must be an absolute path like /data")
        return cls(source, target, mode == "ro")


def parse_names(text: str | None, option: str) -> tuple[str, ...]:
    """``"a, b"`` to ``("a", "b")``, each a Python identifier."""
    if not text:
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise SpecError(f"{option}: {bad[0]!r} is not a variable name; write {option} a,b")
    return names


@dataclass(frozen=True)
class Placement:
    """A backend's own options for one run (Ray: address, resources, node), parsed once in
    the magic and read by that backend only. Each backend that has options subclasses it."""

    def describe(self) -> dict[str, Any]:
        """A JSON-able view for the store."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class CacheRequest:
    """``--cache``: serve the run from the cache of identical runs when it can, and keep it there
    when it succeeds. ``mounts``: how read-only mounts enter the key, ``content`` (every file's
    bytes) or ``mtime`` (size and modification time: cheaper, and blind to a same-size change
    within the clock's resolution); ``network``: a ``--network`` run may be served too."""

    mounts: str = "content"
    network: bool = False

    def __post_init__(self) -> None:
        if self.mounts not in ("content", "mtime"):
            raise SpecError(f"--cache-mounts: {self.mounts!r} is not content or mtime; write --cache-mounts mtime")


@dataclass(frozen=True)
class RunSpec:
    """Everything about a run except its code."""

    backend: str = "auto"
    limits: Limits = field(default_factory=Limits)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    trust: bool = False
    name: str | None = None
    placement: Placement | None = None  # the backend's own options (Ray: resources, node); None: its defaults
    runtime_env: EnvSpec | None = None  # packages, files, env vars (envs/; Ray applies it natively)
    cache: CacheRequest | None = None  # --cache: None runs it always
    session: str | None = None  # --session NAME: run in that sandbox session, which outlives the cell
    fork: str | None = None  # --fork A: the session starts as a fork of session A

    def __post_init__(self) -> None:
        for flag, name in (("--session", self.session), ("--fork", self.fork)):
            if name is not None and not _SESSION_NAME.fullmatch(name):
                raise SpecError(
                    f"{flag} {name!r}: a session name is letters, digits, '-', '_' or '.' "
                    "(at most 64, starting with a letter or digit), e.g. --session data"
                )
        if self.fork is not None and self.session is None:
            raise SpecError(f"--fork {self.fork} needs --session NAME: the session that starts as its fork")

    def describe(self) -> dict[str, Any]:
        """A JSON-able view for the store."""
        return {
            "backend": self.backend,
            "limits": self.limits.as_dict(),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "env": sorted(self.env),
            "mounts": [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in self.mounts],
            "trust": self.trust,
            "name": self.name,
            "placement": self.placement.describe() if self.placement else {},
            "runtime_env": self.runtime_env.describe() if self.runtime_env else None,
            "cache": dataclasses.asdict(self.cache) if self.cache else None,
            "session": self.session,
            "fork": self.fork,
        }
