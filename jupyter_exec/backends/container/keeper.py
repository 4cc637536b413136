"""The keeper of one kernel's containers on one engine: stdlib only, runs beside the kernel.

Started by the kernel (``keepers``) as ``python -I keeper.py ENGINE ROOT OWNER MARK
LEFTOVER...``: ENGINE is the engine's Unix socket, ROOT the directory where it makes its own
folder (only the kernel's user may enter it) with the socket it listens on, OWNER the kernel's
pid, MARK the label ``name=value`` every container created through it carries, LEFTOVER glob
patterns of the kernel's folders. It holds OWNER before it makes anything (a kernel already gone:
it makes nothing and exits), says ``ready FOLDER`` once it listens, then:

- relays each connection to RELAY, byte for byte, to a connection of its own to ENGINE. The
  kernel's creates go this way, so a create the kernel does not live to see answered is still
  heard to its end: the engine finishes a create whose client has gone.
- waits for OWNER to exit (a pidfd: at once, whatever killed it). Then it ends every relay: the
  engine is told that no more requests come (a half-close), answers those in flight and closes
  the connection, so no create is pending any more. It removes every container with MARK,
  whatever its state (created and never started, starting, running: a running one gets a moment
  to end by its lifeline first), asking again until none is left, then the LEFTOVER folders, and
  exits.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from urllib.parse import quote

_CHUNK = 65536
_END_WAIT = 60.0  # seconds the engine may take to answer what was in flight (the kernel's timeout)
_LIFELINE_GRACE = 3.0  # seconds a running container has to end by its lifeline before it is forced
_RETRY = 0.2  # seconds between two rounds of removals


class _EngineHTTP(http.client.HTTPConnection):
    """HTTP over the engine's Unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=_END_WAIT)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def _ask(engine: str, method: str, url: str) -> tuple[int, bytes]:
    connection = _EngineHTTP(engine)
    try:
        connection.request(method, url)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def remove_marked(engine: str, mark: str, running_from: float, until: float) -> None:
    """Remove every container labelled ``mark`` until none is left, or the clock passes ``until``.
    One not running (created and never started, exited) goes at once; a running one is left to its
    lifeline (its pid 1 exits within a second of the kernel's death) until ``running_from``, then
    its processes are killed from here before it is removed: the engine's own kill of a container
    whose pid 1 is exiting by itself can go unheard under gVisor, and the engine then waits ten
    seconds before it tries again. Each removal is asked on a thread of its own, so one the engine
    holds (a container still starting, listed as created) keeps none of the others, nor the
    next look: that one is seen running, and killed from here, in its turn."""
    listing = "/containers/json?all=1&filters=" + quote(json.dumps({"label": [mark]}))
    removing: dict[str, threading.Thread] = {}
    while True:
        status, body = _ask(engine, "GET", listing)
        left = json.loads(body) if status == 200 else []
        for container in left:
            running = container["State"] == "running"
            if running and time.monotonic() < running_from:
                continue
            if running:
                _kill_from_host(engine, container["Id"])
            if container["Id"] not in removing or not removing[container["Id"]].is_alive():
                url = f"/containers/{container['Id']}?force=1"
                removing[container["Id"]] = threading.Thread(target=_ask, args=(engine, "DELETE", url), daemon=True)
                removing[container["Id"]].start()
        if not left or time.monotonic() > until:
            return
        time.sleep(_RETRY)


def _kill_from_host(engine: str, container_id: str) -> None:
    """SIGKILL the container's first process as the host sees it (runc: its pid 1; gVisor: the
    sandbox that holds all of it): the container stops at once, whatever its own state."""
    status, body = _ask(engine, "GET", f"/containers/{container_id}/json")
    pid = json.loads(body).get("State", {}).get("Pid", 0) if status == 200 else 0
    if pid > 0:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:  # gone already, or not ours to signal: the engine's removal does it
            pass


def _recv(end: socket.socket) -> bytes:
    try:
        return end.recv(_CHUNK)
    except OSError:  # reset: the kernel died
        return b""


def _send(end: socket.socket, chunk: bytes) -> bool:
    try:
        end.sendall(chunk)
        return True
    except OSError:
        return False


def relay(kernel: socket.socket, engine_path: str) -> None:
    """Pump bytes both ways until the engine closes the connection. Once the kernel's side ends
    (it closed, it died, or the keeper shut it), the engine is heard out."""
    engine = socket.socket(socket.AF_UNIX)
    with kernel, engine:
        try:
            engine.connect(engine_path)
        except OSError:
            return  # the kernel sees its connection closed: the engine is not there
        reading = [kernel, engine]

        def kernel_ended() -> None:
            """No more requests: the engine is half-closed, answers what it has, and closes."""
            reading.remove(kernel)
            try:
                engine.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the engine is gone too: reading it ends the relay

        while True:
            for end in select.select(reading, [], [])[0]:
                if end not in reading:
                    continue
                chunk = _recv(end)
                if end is engine:
                    if not chunk:
                        return
                    if kernel in reading and not _send(kernel, chunk):
                        kernel_ended()  # the kernel is gone: what it asked is heard out all the same
                elif not chunk or not _send(engine, chunk):
                    kernel_ended()


def main(argv: list[str]) -> None:
    engine, root, owner, mark, *leftovers = argv
    try:
        gone = os.pidfd_open(int(owner))  # readable once the kernel has exited
    except ProcessLookupError:
        return  # the kernel died before we started: nothing of ours exists yet
    folder = tempfile.mkdtemp(prefix=f"keeper-{owner}-{os.getpid()}-", dir=root)  # 0700: the kernel's user's only
    try:
        serve(engine, folder, gone, mark)
    finally:
        for found in (folder, *(found for pattern in leftovers for found in glob.glob(pattern))):
            shutil.rmtree(found, ignore_errors=True)


def serve(engine: str, folder: str, gone: int, mark: str) -> None:
    """Relay the kernel's connections until it exits (``gone`` readable), then remove what it made."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(folder, "relay.sock"))
    listener.listen(64)
    try:
        print("ready", folder, flush=True)
    except BrokenPipeError:  # the kernel died while we started: what it made is removed all the same
        pass
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (1, 2):
        os.dup2(null, fd)  # the kernel reads nothing more from us, and may be gone
    relays: list[tuple[socket.socket, threading.Thread]] = []
    while gone not in select.select([listener.fileno(), gone], [], [])[0]:
        kernel, _ = listener.accept()
        thread = threading.Thread(target=relay, args=(kernel, engine), daemon=True)
        thread.start()
        relays = [(end, t) for end, t in relays if t.is_alive()] + [(kernel, thread)]
    listener.close()
    for kernel, _ in relays:
        try:
            kernel.shutdown(socket.SHUT_RD)  # as if the kernel had closed it: each relay ends its engine's side
        except OSError:
            pass  # closed already
    died = time.monotonic()
    for _, thread in relays:
        thread.join(max(died + _END_WAIT - time.monotonic(), 0))
    remove_marked(engine, mark, running_from=died + _LIFELINE_GRACE, until=time.monotonic() + _END_WAIT)


if __name__ == "__main__":
    main(sys.argv[1:])
