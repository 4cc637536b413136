"""The limits a run can ask for, as one table: each row says everything about one limit.

A row (``Limit``) names the ``Limits`` field and the policy key (the same word), the flag a
user types, how a typed value is read and written back, the help text, the kernel's default
(this table is its one owner) with the ``ExecConfig`` setting and ``JX_*`` variable that
change it, and whether the administrator's policy can set a ceiling for it. Everything that
parses, checks or defaults a limit reads this table: ``Limits.parse``, the magics' options,
``ExecConfig``'s settings, the policy's ceilings, the messages that name a flag.

``kind`` says how a ceiling applies: a ``cap`` is the most a run may use (unset means no cap,
so a ceiling caps an unset one too), a ``count`` is how many of something a run is given
(unset means none), a ``switch`` is on or off, and ``hosts`` is off, on, or a list of hosts
(``--network HOST,...``: a ``HostList``; its ceiling is a switch, or a policy's list of the
hosts a user may name). ``scope`` says what a limit belongs to once a sandbox outlives one cell: the whole
``session`` (its memory, its processes) or each ``cell`` (its wall clock); a one-off run is a
session of one cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import SpecError
from .hosts import HostList
from .units import format_duration, format_size, parse_count, parse_duration, parse_number, parse_size

__all__ = ["LIMITS", "Gpus", "Limit", "read_network", "read_switch"]

Kind = Literal["cap", "count", "switch", "hosts"]
Scope = Literal["session", "cell"]
#: ``(value as typed or stored, where it came from) -> the field's value``; a bad value raises
#: ``SpecError`` naming ``where`` (a flag, a ``JX_*`` variable, a policy file's key).
Reader = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Gpus:
    """``--gpus``: every GPU there is (``all``), a count, or device ids (``device=0,1``)."""

    number: int | None = None  # a count; None with no ids: all
    ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: object, where: str = "--gpus") -> Gpus:
        """``all``, a count like ``1``, or device ids like ``0,1`` / ``device=0`` (validated)."""
        if isinstance(value, Gpus):
            return value
        if isinstance(value, bool):
            raise SpecError(f"{where}: cannot read {value!r}; write all, a count like 1, or device ids like device=0,1")
        text = str(value).strip().lower().replace(" ", "")
        if text == "all":
            return cls()
        if text.isdigit():
            if int(text) < 1:
                raise SpecError(f"{where}: a count must be at least 1, got {value!r}; for device 0 write device=0")
            return cls(int(text))
        ids = tuple(text.removeprefix("device=").split(","))
        if all(part.isdigit() or (len(part) > 4 and part.startswith("gpu-")) for part in ids):
            return cls(ids=ids)
        raise SpecError(f"{where}: cannot read {value!r}; write all, a count like 1, or device ids like device=0,1")

    @property
    def all(self) -> bool:
        return self.number is None and not self.ids

    def count(self, there: int | None = None) -> float:
        """How many GPUs this asks for. ``all`` is every GPU there is: ``there`` where the caller
        knows how many (a broker's machine), else more than any ceiling or quota (``inf``)."""
        if self.ids:
            return float(len(self.ids))
        if self.number is not None:
            return float(self.number)
        return math.inf if there is None else float(there)

    def __str__(self) -> str:
        if self.ids:
            return "device=" + ",".join(self.ids)
        return "all" if self.number is None else str(self.number)


def read_switch(value: Any, where: str) -> bool:
    """On or off: ``true`` / ``false`` as a file or a request holds it."""
    if not isinstance(value, bool):
        raise SpecError(f"{where}: expected true or false, got {value!r}")
    return value


def read_network(value: Any, where: str) -> bool | HostList:
    """Off, on (``--network`` alone, ``true``), or a host list as typed (``index.example.org,*.example.org``)."""
    if isinstance(value, (bool, HostList)):
        return value
    if isinstance(value, str):
        return HostList.parse(value, where)
    raise SpecError(f"{where}: expected true, false or hosts like index.example.org,*.example.org, got {value!r}")


def _number(value: Any, where: str) -> float:
    return parse_number(value, where, example="1 or 0.5")


def _gpus(value: Any, where: str) -> Gpus:
    return Gpus.parse(value, where)


@dataclass(frozen=True)
class Limit:
    """One limit, everywhere it is named (see the module docstring)."""

    field: str  # the Limits field, and the policy's key
    flag: str  # what the user types
    metavar: str
    help: str  # what it is, with an example: the magics' help and ExecConfig's
    read: Reader
    show: Callable[[Any], str]  # the field's value as a user would type it
    kind: Kind = "cap"
    scope: Scope = "session"
    ceiling: bool = True  # the policy may set a ceiling for it (its key: ``field``)
    default: str | None = None  # the kernel's default, as typed ('' for none); None: the kernel has no setting
    unset: str = "none"  # what a setting of '' means, for its help

    @property
    def setting(self) -> str | None:
        """The ExecConfig trait that holds the kernel's default, named after the flag (``mem``)."""
        return None if self.default is None else self.flag.removeprefix("--").replace("-", "_")

    @property
    def variable(self) -> str | None:
        """The ``JX_*`` variable that sets the kernel's default (``JX_MEM``)."""
        return None if self.setting is None else f"JX_{self.setting.upper()}"

    def read_ceiling(self, value: Any, where: str) -> float:
        """The policy's ceiling for this limit, from its file: a cap as the limit itself is read,
        a count as a whole number (0: none at all), a switch as 1 (allowed) or 0."""
        if self.kind == "count":
            return parse_count(value, where, allow_zero=True, example="2")
        if self.kind in ("switch", "hosts"):
            return float(read_switch(value, where))
        number: float = self.read(value, where)
        return number

    def amount(self, value: Any) -> float | None:
        """How much of the ceiling's measure ``value`` asks for; None: nothing (unset, or off)."""
        if value is None or value is False:
            return None
        if self.kind == "count":
            return float(value.count())
        return 1.0 if self.kind in ("switch", "hosts") else float(value)

    def show_ceiling(self, value: float) -> str:
        """A ceiling as a user would type it (a switch: allowed or not)."""
        if self.kind in ("switch", "hosts"):
            return "allowed" if value else "not allowed"
        return f"{value:g}" if self.kind == "count" else self.show(value)

    def config_help(self) -> str:
        """The help of its ExecConfig setting."""
        return f"Default {self.help}; '' for {self.unset}."

    def option_help(self) -> str:
        """The help of its magic option."""
        return f"{self.help} (default ExecConfig.{self.setting})" if self.setting else self.help


_ROWS = (
    Limit("memory", "--mem", "SIZE", "memory limit, e.g. 512m or 2g", parse_size, format_size, default="2g"),
    Limit("cpus", "--cpus", "N", "CPU share, e.g. 1 or 0.5", _number, "{:g}".format, default=""),
    Limit(
        "timeout",
        "--timeout",
        "T",
        "wall-clock limit, e.g. 30s or 5m",
        parse_duration,
        format_duration,
        scope="cell",
        default="10m",
    ),
    Limit(
        "cpu_time",
        "--cpu-time",
        "T",
        "CPU-time limit, e.g. 10s",
        parse_duration,
        format_duration,
        default="",
    ),
    Limit(
        "pids",
        "--pids",
        "N",
        "most processes and threads at once, e.g. 256",
        parse_count,
        "{:g}".format,
        default="256",
    ),
    Limit(
        "fsize",
        "--fsize",
        "SIZE",
        "largest file the cell may write, e.g. 100m",
        parse_size,
        format_size,
        default="1g",
    ),
    Limit(
        "shm",
        "--shm",
        "SIZE",
        "size of the cell's own /dev/shm (multiprocessing, DataLoader workers), e.g. 256m; counts towards --mem",
        parse_size,
        format_size,
        unset="none of its own (seccomp: the kernel's tmpfs default, containers: DockerConfig.shm_size)",
        default="64m",
    ),
    Limit(
        "network",
        "--network",
        "HOST,...",
        "network access (off by default): alone, all of it; with hosts, only those, e.g. a.example.org,*.example.net",
        read_network,
        str,
        kind="hosts",
    ),
    Limit(
        "gpus",
        "--gpus",
        "all|N|device=IDS",
        "GPUs for the run (container: needs the NVIDIA runtime)",
        _gpus,
        str,
        kind="count",
    ),
)

#: Every limit by field, in the order the magics list them.
LIMITS: dict[str, Limit] = {row.field: row for row in _ROWS}
