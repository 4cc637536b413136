"""The broker's wire format, shared by the kernel's client, the admin CLI and the broker.

A request is one JSON document, ``{"v": 1, "op": NAME, ...}``: one line on the Unix socket,
the body of ``POST {prefix}api/v1`` over HTTP. The answer is JSON lines, each an event
``{"t": KIND, ...}``::

    run        accepted {run}, [queued {why}], running, out {s, x} | display {data} | sample {...}, end {...}
    any other  reply {...} | error {status, kind, message}

A run with ``session`` runs in that sandbox session of its kernel, at the broker; ``sessions``
lists a kernel's sessions there and ``end`` ends one (or, without a name, all of them).
``lifeline`` is a kernel's hold on its sessions: answered ``reply {held}`` and then kept open
(a ``beat`` now and then); when it drops, the broker ends that kernel's sessions.

Everything a cell prints travels inside a JSON string the broker writes, so nothing it prints
can start a line of its own: output and control cannot be confused (as with the bootstrap's
own channel, which the broker reads). ``parse_run`` checks a run request field by field: the
broker trusts no client, so a hand-made request is held to what the magic would send.

The documents are typed below (``RunDoc`` and the other requests; ``Event``), so what the
client sends and what the broker answers are built one way; what either side receives is
JSON from another process, and is checked (the broker) or read defensively (the client).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from jupyter_exec.errors import (
    BackendUnavailableError,
    JupyterExecError,
    NodeFailedError,
    PolicyError,
    ResourceLimitError,
    SpecError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    remote_error,
)
from jupyter_exec.runner.protocol import Envelope
from jupyter_exec.spec import Limits, RunSpec, parse_env, parse_names
from jupyter_exec.status import Status

__all__ = [
    "OPS",
    "VERSION",
    "Accepted",
    "BrokerError",
    "CancelDoc",
    "Display",
    "End",
    "ErrorEvent",
    "Event",
    "IdentityDoc",
    "LifelineDoc",
    "Out",
    "Queued",
    "Reply",
    "Request",
    "RunDoc",
    "RunRequest",
    "Running",
    "Sample",
    "SessionsDoc",
    "decode",
    "encode",
    "end_event",
    "error_event",
    "failure",
    "outcome_parts",
    "parse_defaults",
    "parse_request",
    "parse_run",
    "raise_for",
    "session_name",
]

VERSION = 1
OPS = ("hello", "run", "cancel", "runs", "show", "logs", "resources", "identity", "sessions", "end", "lifeline")
_TASK_ERRORS: dict[str, type[TaskError]] = {
    cls.__name__: cls for cls in (TaskError, TaskCancelledError, TaskTimeoutError, NodeFailedError)
}


# ---- the requests (``v`` is added by the transport) ----------------------------------------


class RunDoc(TypedDict):
    """Run a cell: the spec as data, the limits asked for apart from the kernel's defaults."""

    op: Literal["run"]
    code: str
    inputs: str | None  # encoded by runner.transfer, opened only inside the sandbox
    outputs: list[str]
    trust: bool
    env: dict[str, str]
    limits: dict[str, Any]  # Limits.as_dict()
    defaults: dict[str, Any]  # the kernel's default limits, Limits.as_dict()
    runtime: str | None
    image: str | None
    pip: list[str]
    name: str | None
    kernel: str
    client_run: int
    session: str | None  # the kernel's sandbox session the cell runs in


class SessionsDoc(TypedDict):
    """List (``sessions``) or end (``end``: one by ``session``, or all with None) a kernel's sessions."""

    op: Literal["sessions", "end"]
    kernel: str
    session: str | None


class LifelineDoc(TypedDict):
    """Hold ``kernel``'s sessions at the broker for as long as this connection is open."""

    op: Literal["lifeline"]
    kernel: str


class CancelDoc(TypedDict):
    op: Literal["cancel"]
    run: int  # the broker's number of the run (``accepted``)


class IdentityDoc(TypedDict):
    """What decides a run's result at the broker besides its code and spec (``--cache``)."""

    op: Literal["identity"]
    image: str | None
    runtime: str | None


class _Op(TypedDict):
    op: Literal["hello", "resources"]


class _RunsDoc(TypedDict, total=False):
    op: Literal["runs"]
    user: str | None  # an administrator's question about another user
    finished: bool
    limit: int


Request = RunDoc | CancelDoc | IdentityDoc | SessionsDoc | LifelineDoc | _Op | _RunsDoc


# ---- the events (``t`` names the kind) ---------------------------------------------------------


class Accepted(TypedDict):
    t: Literal["accepted"]
    run: int


class Queued(TypedDict):
    t: Literal["queued"]
    why: str  # what the run waits for


class Running(TypedDict):
    t: Literal["running"]
    started: float  # time.time() at the broker


class Out(TypedDict):
    t: Literal["out"]
    s: str  # stdout | stderr
    x: str


class Display(TypedDict):
    t: Literal["display"]
    data: dict[str, str]  # a sanitized display bundle


class Sample(TypedDict):
    t: Literal["sample"]
    memory: int | None  # bytes
    cpu_seconds: float | None


class End(TypedDict):
    """How a run ended (``end_event``; ``outcome_parts`` rebuilds it in the kernel)."""

    t: Literal["end"]
    status: str
    envelope: dict[str, Any] | None  # the raw Envelope: its values are decoded in the kernel
    error: dict[str, Any] | None  # class, message, and status or remote type and traceback
    exit_code: int | None
    peak_memory: int | None
    cpu_seconds: float | None
    details: dict[str, Any]
    connections: NotRequired[list[dict[str, Any]]]  # a host-list run's, as the broker's proxy saw them


class ErrorEvent(TypedDict, total=False):
    t: Literal["error"]
    status: int  # as in HTTP
    kind: str  # the error's class, rebuilt in the kernel by ``raise_for``
    message: str
    source: str | None  # a PolicyError's policy file
    fix: str  # a BackendUnavailableError's


Reply = dict[str, Any]  # {"t": "reply", ...}: the answer of an op other than run
Event = Accepted | Queued | Running | Out | Display | Sample | End | ErrorEvent | Reply


class BrokerError(JupyterExecError):
    """A request the broker answers with an error: ``status`` as in HTTP (400 bad request, 403
    refused by the policy, 404 no such run of yours, 413 too large, 429 too many)."""

    def __init__(self, status: int, message: str, kind: str = "BrokerError") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


def encode(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as error:
        raise BrokerError(400, f"not a JSON document ({error})") from None
    if not isinstance(event, dict):
        raise BrokerError(400, 'expected a JSON object like {"v": 1, "op": "hello"}')
    return event


def error_event(error: BaseException) -> ErrorEvent:
    """The error event for ``error``: a refusal keeps its kind (and a policy's file)."""
    if isinstance(error, BrokerError):
        return {"t": "error", "status": error.status, "kind": error.kind, "message": str(error)}
    if isinstance(error, PolicyError):
        return {"t": "error", "status": 403, "kind": "PolicyError", "message": str(error), "source": error.source}
    if isinstance(error, SpecError):
        return {"t": "error", "status": 400, "kind": "SpecError", "message": str(error)}
    if isinstance(error, BackendUnavailableError):
        return {
            "t": "error",
            "status": 503,
            "kind": "BackendUnavailableError",
            "message": error.reason,
            "fix": error.fix,
        }
    return {"t": "error", "status": 500, "kind": type(error).__name__, "message": str(error)}


def raise_for(event: Mapping[str, Any]) -> None:
    """Raise what an error event says, as the error a local run would raise."""
    if event.get("t") != "error":
        return
    kind, message = event.get("kind"), str(event.get("message", ""))
    if kind == "PolicyError":
        raise PolicyError(message, event.get("source"))
    if kind == "SpecError":
        raise SpecError(message)
    if kind == "BackendUnavailableError":
        raise BackendUnavailableError("container", f"the broker: {message}", str(event.get("fix", "")))
    raise BrokerError(int(event.get("status", 500)), message, str(kind))


def parse_request(event: dict[str, Any]) -> str:
    """The request's op, after checking its version."""
    if event.get("v") != VERSION:
        raise BrokerError(
            400, f"protocol version {event.get('v')!r}: this broker speaks {VERSION}; upgrade jupyter-exec"
        )
    op = event.get("op")
    if op not in OPS:
        raise BrokerError(400, f"unknown op {op!r}; one of: {', '.join(OPS)}")
    return str(op)


@dataclass(frozen=True)
class RunRequest:
    """One run as the broker gets it; every field checked by ``parse_run``."""

    code: str
    limits: Limits
    inputs: str | None = None  # encoded by the kernel (runner.transfer), opened only inside the sandbox
    outputs: tuple[str, ...] = ()
    trust: bool = False
    env: dict[str, str] = field(default_factory=dict)
    runtime: str | None = None
    image: str | None = None
    pip: tuple[str, ...] = ()
    name: str | None = None
    kernel: str = ""
    client_run: int | None = None
    session: str | None = None


def session_name(doc: Mapping[str, Any]) -> str | None:
    """A request's session name, checked as ``--session`` is; ``BrokerError`` (400) otherwise."""
    name = _text(dict(doc), "session", most=64)
    if name is not None:
        try:
            RunSpec(session=name)
        except SpecError as error:
            raise BrokerError(400, str(error), "SpecError") from None
    return name


def _text(doc: dict[str, Any], key: str, *, optional: bool = True, most: int = 200) -> str | None:
    value = doc.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > most:
        raise BrokerError(400, f"{key}: expected a string of at most {most} characters, got {value!r:.60}")
    return value


def _limits(raw: Any) -> Limits:
    """Limits as ``Limits.as_dict`` writes them (whole bytes, seconds, a bool, GPUs as text), each
    read by its row of the limits table."""
    if not isinstance(raw, dict):
        raise BrokerError(400, 'limits: expected an object like {"memory": 536870912}')
    try:
        return Limits.read(raw, lambda limit: f"limits.{limit.field}")
    except SpecError as error:
        raise BrokerError(400, f"limits: {error}" if str(error).startswith("unknown") else str(error)) from None


def parse_defaults(raw: Any) -> Limits:
    """The kernel's default limits (``ExecConfig.mem`` ...), sent apart from the asked ones: the
    broker lowers a default above a ceiling to it, where an asked limit above one is refused."""
    return _limits(raw or {})


def failure(error: BaseException) -> TaskError:
    """``error`` (a run that could not start or went wrong at the broker) as a ``TaskError``."""
    if isinstance(error, TaskError):
        return error
    if isinstance(error, BackendUnavailableError):
        return NodeFailedError(f"the broker could not run it: {error.reason} ({error.fix})")
    return NodeFailedError(f"the broker could not run it: {type(error).__name__}: {error}")


def parse_run(doc: dict[str, Any], max_code: int) -> RunRequest:
    """A run request, checked; ``BrokerError`` (400) names the first bad field."""
    code = doc.get("code")
    if not isinstance(code, str) or len(code) > max_code:
        raise BrokerError(400, f"code: expected the cell's text, at most {max_code} characters")
    for unsupported in ("mounts", "working_dir", "py_modules"):
        if doc.get(unsupported):
            raise BrokerError(
                400,
                f"{unsupported.replace('_', '-')}: the broker runs cells away from your files, so none of them can "
                "be mounted or copied in; send data with --in",
                "SpecError",
            )
    inputs = doc.get("inputs")
    if inputs is not None and not _is_json_object(inputs):  # it goes into the request as JSON, unquoted
        raise BrokerError(400, "inputs: expected the JSON text of an object (values by name) or null")
    env = doc.get("env") or {}
    pip = doc.get("pip") or []
    outputs = doc.get("outputs") or []
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise BrokerError(400, "env: expected an object of strings")
    if not isinstance(pip, list) or not all(isinstance(p, str) and p and len(p) < 500 for p in pip):
        raise BrokerError(400, "pip: expected a list of requirement strings")
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise BrokerError(400, "outputs: expected a list of variable names")
    client_run = doc.get("client_run")
    try:
        parse_env([f"{k}={v}" for k, v in env.items()])
        names = parse_names(",".join(outputs), "--out")
    except SpecError as error:
        raise BrokerError(400, str(error), "SpecError") from None
    return RunRequest(
        code=code,
        limits=_limits(doc.get("limits") or {}),
        inputs=inputs,
        outputs=names,
        trust=doc.get("trust") is True,
        env=dict(env),
        runtime=_text(doc, "runtime"),
        image=_text(doc, "image"),
        pip=tuple(pip),
        name=_text(doc, "name"),
        kernel=_text(doc, "kernel") or "",
        client_run=client_run if isinstance(client_run, int) and not isinstance(client_run, bool) else None,
        session=session_name(doc),
    )


def end_event(
    status: Status,
    envelope: Envelope | None,
    error: BaseException | None,
    *,
    exit_code: int | None = None,
    peak_memory: int | None = None,
    cpu_seconds: float | None = None,
    details: dict[str, Any] | None = None,
    connections: list[dict[str, Any]] | None = None,
) -> End:
    """How a run ended, for the client: the raw envelope (its values are decoded in the kernel,
    with the kernel's ``--trust``) and the error as class, message and remote traceback."""
    described: dict[str, Any] | None = None
    if error is not None:
        described = {"class": type(error).__name__, "message": str(error)}
        if isinstance(error, TaskError):
            described["class"] = next(c.__name__ for c in type(error).__mro__ if c.__module__ == TaskError.__module__)
            described["status"] = error.status
        remote = envelope.error if envelope is not None else None
        if remote is not None and described["class"] == "RemoteError":
            described.update(
                type=remote["type"], message=remote["message"], traceback=remote["traceback"], base=remote.get("base")
            )
    end: End = {
        "t": "end",
        "status": status,
        "envelope": None if envelope is None else envelope.__dict__,
        "error": described,
        "exit_code": exit_code,
        "peak_memory": peak_memory,
        "cpu_seconds": cpu_seconds,
        "details": details or {},
    }
    if connections:
        end["connections"] = connections
    return end


def outcome_parts(event: Mapping[str, Any]) -> tuple[Status, Envelope | None, TaskError | None]:
    """The status, envelope and error an end event carries, rebuilt on the kernel's side."""
    status = Status(event["status"])
    raw = event.get("envelope")
    envelope = Envelope(**raw) if isinstance(raw, dict) else None
    described = event.get("error")
    if not described:
        return status, envelope, None
    cls, message = described.get("class"), str(described.get("message", ""))
    error: TaskError
    if cls == "RemoteError":
        remote = envelope.error if envelope is not None else None
        error = remote_error(
            str(described.get("type")),
            message,
            str(described.get("traceback", "")),
            base=described.get("base"),
            causes=remote.get("causes") if remote else None,  # what the hints read (walls.py)
        )
    elif cls == "ResourceLimitError":
        error = ResourceLimitError(message, status=Status(described.get("status", Status.OOM)))
    else:
        error = _TASK_ERRORS.get(str(cls), NodeFailedError)(message)
    return status, envelope, error


def _is_json_object(text: object) -> bool:
    try:
        return isinstance(text, str) and isinstance(json.loads(text), dict)
    except ValueError:
        return False
