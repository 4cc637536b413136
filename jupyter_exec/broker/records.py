"""The broker's own record of every run it took: a store file (``jupyter_exec.store``) in its
data directory, with the same runs table as a kernel's (``store.records``).

A run is recorded (``queued``) before it waits or starts and finished whatever happens, like
a kernel's, and is a row of the same ``runs`` table, with the user it ran for: ``runs``,
``show``, ``logs`` and ``cancel`` answer a user about their own runs only, and the admin CLI
about anyone's. The broker keeps a cell's hash, not its code. A broker that died (``kill
-9``, a crash, the machine's power) left runs ``queued`` or ``running``; the next one (the
only one: it holds the data directory's lock) finishes them all as ``failed`` with the reason
"broker restarted" before it serves (their containers died with the broker: each is bound to
its life, see ``container.slot``). The file of a broker from before (its own table) is
brought over by ``store.schema.BROKER_FIRST``.
"""

from __future__ import annotations

import os

from jupyter_exec.backends.base import Outcome
from jupyter_exec.backends.container import ContainerBackend
from jupyter_exec.spec import RunSpec
from jupyter_exec.status import UNFINISHED
from jupyter_exec.store.records import RunRecords, RunRow

__all__ = ["LISTED", "RESTARTED", "BrokerRecords"]

RESTARTED = "broker restarted: the run was stopped when the broker that ran it ended"
LISTED = ("id", "user", "status", "name", "created", "duration", "peak_memory", "image", "runtime", "error", "kernel")


class BrokerRecords(RunRecords):
    """The broker's runs (see the module docstring)."""

    def create(
        self,
        *,
        user: str,
        kernel: str,
        client_run: int | None,
        spec: RunSpec,
        image: str,
        runtime: str | None,
        code_hash: str,
    ) -> int:
        """A new run of ``user``'s, admitted as ``spec``; its id."""
        return self.create_run(
            kernel=kernel,
            owner_pid=os.getpid(),
            name=spec.name,
            backend=spec.backend,
            isolation=ContainerBackend.isolation,
            spec=spec.describe(),
            code="",
            code_hash=code_hash,
            user=user,
            client_run=client_run,
            image=image,
            runtime=runtime,
        )

    def finish(self, run_id: int, outcome: Outcome) -> RunRow | None:
        """Finish an unfinished run as ``outcome`` says; the row as it is now (None if it was finished already)."""
        finished = self.finish_run(
            run_id,
            outcome.status,
            error=str(outcome.error) if outcome.error else None,
            exit_code=outcome.exit_code,
            peak_memory=outcome.peak_memory,
            cpu_seconds=outcome.cpu_seconds,
            details=outcome.details,
        )
        return self.get(run_id) if finished is not None else None

    def listing(self, user: str | None, *, finished: bool, limit: int = 50) -> list[RunRow]:
        """The newest runs of ``user`` (None: everyone's); only unfinished ones unless ``finished``."""
        return self.runs(limit, statuses=() if finished else UNFINISHED, columns=LISTED, user=user)

    def recover(self) -> list[RunRow]:
        """Finish every run a dead broker left unfinished as ``failed`` ("broker restarted"); those rows."""
        return self.fail_orphans(lambda pid: False, RESTARTED)
