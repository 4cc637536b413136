"""The CodeRunner's wire format, kernel side: the request out, the envelope back.

A request is one JSON document written to the bootstrap's stdin. The bootstrap answers
with JSON lines on its protocol channel: ``ready``, ``confined``, any number of
``display``, and one ``result`` (the envelope). ``ProtocolReader`` turns those bytes
into calls on an ``OutputSink`` and an ``Envelope``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jupyter_exec.errors import RemoteError, TransferError, described_error

from .plans import Plan
from .sanitize import sanitize_bundle
from .transfer import decode, kernel_reads_arrow

__all__ = [
    "BOOTSTRAP_PATH",
    "FORKSERVER_PATH",
    "Envelope",
    "OutputSink",
    "ProtocolReader",
    "build_request",
    "ship_runner",
]

BOOTSTRAP_PATH = Path(__file__).with_name("bootstrap.py")
_SHIPPED = ("bootstrap.py", "codec.py", "confine.py", "netrelay.py")  # what a target without jupyter-exec runs
FORKSERVER_PATH = Path(__file__).with_name("forkserver.py")  # the process sandbox's template
MAX_MESSAGE = 1 << 30


def ship_runner(folder: Path) -> None:
    """Put what runs a cell in ``folder`` (readable by anyone) for a target that has no
    jupyter-exec (a container image): the bootstrap with its codec, confinement and network
    relay, and in ``lib/`` this kernel's own cloudpickle, so a function pickled here loads
    there whatever the image has (none, or another version)."""
    import cloudpickle

    for name in _SHIPPED:
        shutil.copyfile(BOOTSTRAP_PATH.with_name(name), folder / name)
        (folder / name).chmod(0o644)
    package = Path(cloudpickle.__file__).parent
    target = folder / "lib" / package.name
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (folder / "lib", *target.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    target.chmod(0o755)


class OutputSink(Protocol):
    """Where a run's live output goes: the notebook, a widget, a test.

    ``stream`` is ``stdout`` or ``stderr`` (the cell's), or ``info``: jupyter-exec's own lines
    about the run (a local Ray starting, an env being built), shown but never styled as an
    error, and not the cell's output (no ``first_output`` in its timeline, not cached)."""

    def output(self, stream: str, text: str) -> None: ...

    def display(self, bundle: dict[str, str]) -> None: ...


def build_request(
    code: str,
    *,
    inputs: str | None,
    outputs: tuple[str, ...],
    trust: bool,
    env: dict[str, str],
    cwd: str | None,
    confine: Plan | None = None,
    sys_path: tuple[str, ...] = (),
    working_dir: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The request document. ``inputs`` (``pack_inputs``'s JSON text) goes in as JSON, not as a
    string: a big array is neither escaped nor parsed twice. ``sys_path`` goes first on the
    cell's ``sys.path``; ``working_dir`` (a directory in the target) is copied into ``cwd``
    before the cell runs; ``extra`` holds what one backend's target alone reads (Ray: the run
    id and its relay)."""
    rest = json.dumps(
        {
            "outputs": list(outputs),
            "trust": trust,
            "arrow": kernel_reads_arrow(),
            "env": env,
            "cwd": cwd,
            "confine": confine,
            "sys_path": list(sys_path),
            "working_dir": working_dir,
            "code": code,
            **(extra or {}),
        }
    )
    return b"".join((b'{"inputs":', (inputs or "null").encode(), b",", rest[1:].encode()))


@dataclass
class Envelope:
    """What the bootstrap reported: result data, error, resource usage (all raw JSON)."""

    value: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    untransferable: str | None = None
    confine_error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    confine_notes: list[str] = field(default_factory=list)

    def remote_error(self, **context: Any) -> RemoteError | None:
        return None if self.error is None else described_error(self.error, **context)

    def decoded_outputs(self, trust: bool) -> dict[str, Any]:
        if self.untransferable:
            raise TransferError(
                f"--out {self.untransferable} cannot come back as data; "
                "pass --trust to pickle it (only if you trust the cell's code)"
            )
        return {name: decode(value, trust) for name, value in self.outputs.items()}

    def decoded_value(self, trust: bool) -> Any:
        """The last expression's value: data if it had a data form, else its display."""
        if not self.value:
            return None
        if "data" in self.value:
            return decode(self.value["data"], trust)
        return DisplayedValue(sanitize_bundle(self.value["display"], trust))


class DisplayedValue:
    """A value that could not come back as data, shown by its (sanitised) display bundle."""

    def __init__(self, bundle: dict[str, str]) -> None:
        self.bundle = bundle

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, str]:
        return self.bundle

    def __repr__(self) -> str:
        return self.bundle.get("text/plain", "")


class ProtocolReader:
    """Feeds protocol bytes; displays go to the sink as they come, the result is kept."""

    def __init__(self, sink: OutputSink, trust: bool) -> None:
        self.sink, self.trust = sink, trust
        self.buffer = bytearray()
        self.ready = False
        self.envelope: Envelope | None = None
        self.notes: list[str] = []
        self.exit_status: int | None = None  # the cell process's wait status, when an init reported it

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_MESSAGE:
            raise TransferError("the sandbox sent more than 1 GiB of result data")
        while (end := self.buffer.find(b"\n")) >= 0:
            line, self.buffer = bytes(self.buffer[:end]), self.buffer[end + 1 :]
            self._handle(json.loads(line))

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "ready":
            self.ready = True
        elif kind == "exit":
            self.exit_status = int(message["status"])
        elif kind == "confined":
            self.notes = list(message.get("notes", []))
        elif kind == "display" and self.envelope is None:
            self.sink.display(sanitize_bundle(message.get("data", {}), self.trust))
        elif kind == "result" and self.envelope is None:
            self.envelope = Envelope(
                value=message.get("value"),
                outputs=message.get("outputs", {}),
                error=message.get("error"),
                untransferable=message.get("untransferable"),
                confine_error=message.get("confine_error"),
                usage=message.get("usage", {}),
                confine_notes=self.notes,
            )
