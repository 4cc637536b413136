"""Containers bound to their kernel before they can hold a lifeline: this process's keepers.

A started container dies with its kernel by itself (``slot``'s lifeline). Before it starts
nothing in it runs, and the engine finishes a create whose client has died: a kernel killed
while the pool makes a container (the OOM killer, a crash, a culler) would leave one behind,
``Created``, until another kernel's reaper came. So every create goes through the keeper of
its engine (``keeper.py``, one per engine and process, started on the first create): a
process of its own session, so that a kill of the kernel's process group spares it, which
relays the create to the engine, hears out what the kernel cannot any more, and, once the
kernel has exited, removes every container made through it, in any state, and the kernel's
slot folders. Each such container carries the keeper's token (label ``MARK``); a keeper
that died is started again with the same token.

Only an engine on a Unix socket (every local one) has a keeper; on one at another kind of
address (``tcp://``) creates are direct, and a container left in that window is removed by
the start-up reaper of a later kernel.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from jupyter_exec._proc import pid_alive
from jupyter_exec.errors import NodeFailedError

from .engine import Engine
from .hostconfig import SLOT_ROOT

__all__ = ["KEEPER_PATH", "MARK", "create", "keeper_of", "slot_prefix", "sweep"]

KEEPER_PATH = Path(__file__).with_name("keeper.py")
MARK = "jupyter-exec.keeper"
_FOLDER = "keeper-"  # + the kernel's pid and the keeper's: the keeper's folder in SLOT_ROOT, with its socket
_START_WAIT = 30.0  # seconds for a keeper to say it listens
_lock = threading.Lock()
_keepers: dict[str, _Keeper] = {}


def slot_prefix() -> str:
    """How this process's slot folders in ``SLOT_ROOT`` begin: its keepers remove them with it."""
    return f"slot-{os.getpid()}-"


def sweep() -> None:
    """Remove the folders of keepers whose kernel is gone (a keeper killed with its kernel cannot)."""
    for folder in SLOT_ROOT.glob(f"{_FOLDER}*"):
        owner = folder.name.removeprefix(_FOLDER).split("-")[0]
        if owner.isdigit() and not pid_alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)


def create(engine: Engine, image: str, command: list[str], *, labels: dict[str, str], **options: Any) -> Any:
    """``create_container`` on ``engine`` (the SDK's low-level call), through this process's keeper of it."""
    keeper = keeper_of(engine)
    if keeper is None:
        return engine.client.api.create_container(image, command, labels=labels, **options)
    return keeper.api.create_container(image, command, labels={**labels, MARK: keeper.token}, **options)


def keeper_of(engine: Engine) -> _Keeper | None:
    """This process's keeper of ``engine``, started now if it is not running (None: the engine is
    not on a Unix socket). A slot asks first, before it makes its folder: a kernel killed at any
    moment after has a keeper to remove the folder."""
    if not engine.url.startswith("unix://"):
        return None
    with _lock:
        keeper = _keepers.get(engine.url)
        if keeper is None or not keeper.alive():
            reused = None
            if keeper is not None and keeper.owner == os.getpid():  # it died: its token and nothing else
                reused = keeper.token
                shutil.rmtree(keeper.folder, ignore_errors=True)
            keeper = _keepers[engine.url] = _Keeper(engine, reused)
        return keeper


class _Keeper:
    """One keeper process (``token``: the label value of what it keeps) and a client through it."""

    def __init__(self, engine: Engine, token: str | None) -> None:
        import docker

        self.owner = os.getpid()
        self.token = token or f"{self.owner}-{secrets.token_hex(4)}"
        SLOT_ROOT.mkdir(mode=0o711, exist_ok=True)
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-I", str(KEEPER_PATH)),
                *(engine.url.removeprefix("unix://"), str(SLOT_ROOT), str(self.owner), f"{MARK}={self.token}"),
                str(SLOT_ROOT / f"{slot_prefix()}*"),  # what it removes once the kernel is gone, with its own folder
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # neither an interrupt nor a kill of the kernel's process group reaches it
            env={"JX_OWNER_PID": str(self.owner)},  # as the process sandbox marks what it starts for a kernel
            cwd="/",
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        first = self.process.stdout.readline() if select.select([self.process.stdout], [], [], _START_WAIT)[0] else b""
        word, _, folder = first.decode(errors="replace").strip().partition(" ")
        if word != "ready" or not folder:
            self.process.kill()
            self.process.wait()
            for made in SLOT_ROOT.glob(f"{_FOLDER}{self.owner}-{self.process.pid}-*"):  # made before it stalled
                shutil.rmtree(made, ignore_errors=True)
            said = self.process.stderr.read().decode(errors="replace").strip().splitlines()
            raise NodeFailedError(
                f"the keeper of this kernel's containers did not start ({said[-1] if said else 'no output'})"
            )
        self.process.stdout.close()
        self.process.stderr.close()
        self.folder = folder
        relay = os.path.join(folder, "relay.sock")
        self.api = docker.APIClient(base_url=f"unix://{relay}", version=engine.client.api.api_version)

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None
