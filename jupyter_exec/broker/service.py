"""The broker: every request, whichever server took it, answered for one identity.

The Unix-socket server (``unix``) knows a caller by its uid, the HTTP server (``hub``) by
the hub token it checked; both hand ``Broker.handle`` an ``Identity``, the request document
and a ``Channel`` to answer on. Runs are ``runs.serve_run``'s; the rest is here: ``hello``
(who you are to the broker, your policy and quotas), ``runs``, ``show`` and ``logs`` (your
runs; everyone's for an administrator), ``cancel`` and ``resources``. A user asking about a
run of another user is told there is no such run of theirs (404), the same answer as for a
run that does not exist, and that run goes on. Every request is counted against its user's
rate and written to the audit log.
"""

from __future__ import annotations

import fcntl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jupyter_exec.admission import BackendFacts, admit
from jupyter_exec.backends.container import ContainerBackend, ContainerOptions
from jupyter_exec.config import ExecConfig
from jupyter_exec.envs.spec import EnvSpec
from jupyter_exec.errors import JupyterExecError, PolicyError
from jupyter_exec.policy import policy_report
from jupyter_exec.spec import Limits, RunSpec

from . import wire
from .audit import AuditLog
from .quotas import RateLimiter, Scheduler
from .records import Records
from .rules import Rules, read_rules
from .sandboxes import Sandboxes
from .wire import BrokerError

__all__ = ["Broker", "Channel", "Identity", "Live", "Settings"]

_CLOSE_WAIT = 15.0  # seconds a stopping broker gives its runs to end and be recorded


@dataclass(frozen=True)
class Identity:
    """Who a request is from: a Unix account (by uid) or a hub user (by token)."""

    user: str
    groups: tuple[str, ...] = ()
    admin: bool = False
    via: str = "unix"  # unix | hub


class Channel(Protocol):
    """Where one request's events go. ``send`` raises ``OSError`` once the client is gone."""

    def send(self, event: dict[str, Any]) -> None: ...

    def gone(self) -> bool: ...


@dataclass(frozen=True)
class Settings:
    """How a broker runs (the ``jupyter-exec broker`` options)."""

    data_dir: Path
    policy: Path | None = None
    audit: Path | None = None
    audit_max_bytes: int = 50 << 20
    audit_backups: int = 5
    max_request: int = 64 << 20  # bytes of one request (code and --in values)
    log_max_bytes: int = 16 << 20  # of each run's log kept by the broker
    idle_after: float = 600.0  # seconds before an idle user's warm containers go


@dataclass(eq=False)
class Live:
    """A run the broker is running or holding: enough to cancel it."""

    cancel: threading.Event = field(default_factory=threading.Event)
    stop: Any = None  # set once started: stops the run's container


class Broker:
    """One broker (see the module docstring). ``close`` stops it."""

    def __init__(self, settings: Settings, config: ExecConfig | None = None) -> None:
        self.settings = settings
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings.data_dir.chmod(0o700)  # users' logs, envs and records: nobody else's to read
        self._lock_file = open(settings.data_dir / "broker.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JupyterExecError(
                f"another broker runs on {settings.data_dir}; stop it, or give this one its own --data-dir"
            ) from None
        self.config = config or ExecConfig(data_dir=str(settings.data_dir))
        self.rules = self._read_rules()
        self.logs_dir = settings.data_dir / "logs"
        self.logs_dir.mkdir(mode=0o700, exist_ok=True)
        self.audit = AuditLog(
            settings.audit or settings.data_dir / "audit.jsonl", settings.audit_max_bytes, settings.audit_backups
        )
        self.records = Records(settings.data_dir / "broker.sqlite3")
        for row in self.records.recover():
            self.audit.write(
                op="run",
                user=row["user"],
                decision="ran",
                run=row["id"],
                status=row["status"],
                reason=row["error"],
                image=row["image"],
                runtime=row["runtime"],
                code_hash=row["code_hash"],
                duration=row["duration"],
            )
        ContainerBackend.reap()  # containers of a broker that died, should any have outlived it
        self.scheduler = Scheduler(self.rules.capacity)
        self.limiter = RateLimiter()
        self.sandboxes = Sandboxes(self.config, settings.data_dir, settings.idle_after)
        self.live: dict[int, Live] = {}
        self.live_lock = threading.Lock()

    def _read_rules(self) -> Rules:
        return read_rules(self.settings.policy) if self.settings.policy else Rules("(no policy file)")

    def reload(self) -> str:
        """Read the policy file again (SIGHUP). A file that no longer reads refuses every run."""
        try:
            self.rules = self._read_rules()
        except PolicyError as error:
            self.rules = Rules(str(self.settings.policy), broken=str(error))
            return f"policy reloaded, BROKEN (every run is refused until it is fixed): {error}"
        self.scheduler.capacity = self.rules.capacity
        return f"policy reloaded from {self.rules.source}"

    def handle(self, identity: Identity, doc: dict[str, Any], channel: Channel) -> None:
        """Answer one request on ``channel``; errors become an error event (the broker goes on)."""
        op = "?"
        try:
            op = wire.parse_request(doc)
            self.limiter.take(identity.user, self.rules.for_user(identity.user, identity.groups)[1].rate)
            if op == "run":
                from .runs import serve_run

                serve_run(self, identity, doc, channel)
                return
            reply = getattr(self, f"_{op}")(identity, doc)
            self.audit.write(op=op, user=identity.user, decision="allowed", run=doc.get("run"))
            channel.send({"t": "reply", **reply})
        except (BrokerError, JupyterExecError) as error:
            self.audit.write(op=op, user=identity.user, decision="refused", reason=str(error), run=doc.get("run"))
            try:
                channel.send(wire.error_event(error))
            except OSError:
                pass

    def owned(self, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
        """The run ``doc`` names, if it is the caller's (or the caller is an administrator); else 404."""
        run_id = doc.get("run")
        row = self.records.get(run_id) if isinstance(run_id, int) and not isinstance(run_id, bool) else None
        if row is None or not (identity.admin or row["user"] == identity.user):
            raise BrokerError(404, f"no run {run_id!r} of yours; `runs` lists them")
        return row

    def _hello(self, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
        policy, quotas = self.rules.for_user(identity.user, identity.groups)
        return {
            "user": identity.user,
            "groups": list(identity.groups),
            "admin": identity.admin,
            "version": wire.VERSION,
            "image": self.sandboxes.image(),
            "policy": policy_report(policy),
            "quotas": quotas.__dict__,
        }

    def _runs(self, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
        user = doc.get("user") or None
        if not identity.admin and user not in (None, identity.user):
            raise BrokerError(403, "only an administrator lists other users' runs")
        limit = _whole(doc.get("limit"), 50)
        who = user if identity.admin else identity.user
        return {"runs": self.records.listing(who, finished=bool(doc.get("finished")), limit=max(1, min(limit, 1000)))}

    def _show(self, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
        return {"run": self.owned(identity, doc)}

    def _logs(self, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
        row = self.owned(identity, doc)
        offset = max(0, _whole(doc.get("offset"), 0))
        path = self.logs_dir / f"{row['id']}.log"
        try:
            with open(path, "rb") as log:
                log.seek(offset)
                data = log.read(1 << 20)
        except FileNotFoundError:
            data = b""
        return {"text": data.decode(errors="replace"), "next_offset": offset + len(data)}

    def _cancel(self, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
        row = self.owned(identity, doc)
        with self.live_lock:
            live = self.live.get(row["id"])
        if live is None:
            return {"cancelled": False, "status": row["status"]}
        live.cancel.set()
        if live.stop is not None:
            live.stop()
        return {"cancelled": True, "status": row["status"]}

    def _identity(self, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
        """What decides a run's result here besides its code and spec, for the kernel's cache of
        identical runs (``--cache``): the image's digest (asked afresh), the runtime the policy
        leaves the run, the engine; as a local container backend answers it."""
        policy = self.rules.for_user(identity.user, identity.groups)[0]
        image, runtime = (doc.get(k) if isinstance(doc.get(k), str) else None for k in ("image", "runtime"))
        spec = RunSpec(
            backend="container",
            placement=ContainerOptions.parse(runtime),
            runtime_env=EnvSpec(image=image) if image else None,
        )
        with self.sandboxes.backend(identity.user, policy) as backend:
            return {"identity": backend.identity(admit(spec, BackendFacts.of(backend), policy, Limits()))}

    def _resources(self, identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
        quotas = self.rules.for_user(identity.user, identity.groups)[1]
        return {
            "quotas": quotas.__dict__,
            "usage": self.scheduler.usage(identity.user),
            "capacity": self.rules.capacity.__dict__,
            "idle_containers": self.sandboxes.idle_containers(identity.user),
        }

    def close(self) -> None:
        """Stop every run and wait (a while) for their threads to record them ``cancelled``, then the pools."""
        with self.live_lock:
            live = list(self.live.values())
        for run in live:
            run.cancel.set()
            if run.stop is not None:
                run.stop()
        deadline = time.monotonic() + _CLOSE_WAIT
        while self.live and time.monotonic() < deadline:
            time.sleep(0.05)
        self.sandboxes.close()
        self.audit.close()
        self._lock_file.close()


def _whole(value: Any, default: int) -> int:
    """A request's whole number (a bool is not one), else ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default
