"""The broker itself: what it holds while it runs, and how it starts and stops.

One ``Broker`` per data directory (a lock file says so): the administrator's rules (read
again on SIGHUP), the runs' records and logs, the audit log, the fair queue and rate
limiter, each user's container backend (``sandboxes``), the runs going now (``live``,
enough to cancel them) and the kernels' lifelines (``lifelines``, which end a kernel's
sessions when it goes). On start it records as ended what a broker that died left
running; ``close`` cancels what runs and waits a while for it to be recorded. Requests are
answered by ``ops`` (and runs by ``runs``), which the two servers call.
"""

from __future__ import annotations

import fcntl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jupyter_exec.backends.broker.wire import Event
from jupyter_exec.backends.container import ContainerBackend
from jupyter_exec.config import ExecConfig
from jupyter_exec.errors import JupyterExecError, PolicyError
from jupyter_exec.store.connections import RunConnections

from .audit import AuditLog
from .quotas import RateLimiter, Scheduler
from .records import BrokerRecords
from .rules import Rules, read_rules
from .sandboxes import Sandboxes

__all__ = ["Broker", "Channel", "Identity", "Lifelines", "Live", "Settings"]

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

    def send(self, event: Event) -> None: ...

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

    user: str = ""
    kernel: str = ""  # the kernel that sent it (its lifeline's end cancels it)
    cancel: threading.Event = field(default_factory=threading.Event)
    stop: Any = None  # set once started: stops the run's container


class Lifelines:
    """How many lifelines each (user, kernel) holds now (``kernels.hold`` serves each)."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, user: str, kernel: str) -> None:
        with self._lock:
            self._held[user, kernel] = self._held.get((user, kernel), 0) + 1

    def held(self, user: str, kernel: str) -> bool:
        with self._lock:
            return (user, kernel) in self._held

    def drop(self, user: str, kernel: str) -> bool:
        """Let one go; True if it was the kernel's last."""
        with self._lock:
            left = self._held[user, kernel] - 1
            if left:
                self._held[user, kernel] = left
            else:
                del self._held[user, kernel]
        return not left


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
        self.records = BrokerRecords(settings.data_dir / "broker.sqlite3")
        self.connections = RunConnections(self.records.path)  # host-list runs' connections
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
        self.lifelines = Lifelines()
        self.closing = threading.Event()  # set once ``close`` begins: held lifelines let go, ending nothing

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

    def close(self) -> None:
        """Stop every run and wait (a while) for their threads to record them ``cancelled``, then the pools."""
        self.closing.set()
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
