"""The broker as a system service on a Unix socket: the caller is the uid the kernel runs as.

Every connection carries one request (one JSON line) and gets its events back on the same
connection. The caller is known by ``SO_PEERCRED``, which the kernel reports and cannot forge:
its uid names the user, the user's groups choose the policy's group sections, and root (or a
member of ``--admin-group``) is an administrator. The socket is open to every local account
(mode 0666; the broker decides what each may do), so no user needs the container engine's
socket. A request larger than ``max_request`` or that is not one JSON line is refused (400/413)
without touching anything; one bad client never stops the others (a thread each).
"""

from __future__ import annotations

import grp
import os
import pwd
import select
import socket
import struct
import threading
from pathlib import Path

from jupyter_exec.backends.broker import wire
from jupyter_exec.backends.broker.wire import BrokerError

from .ops import handle
from .service import Broker, Identity

__all__ = ["UnixServer", "identity_of"]

_READ_TIMEOUT = 30.0  # seconds a client has to send its request


def identity_of(uid: int, gid: int, admin_group: str | None = None) -> Identity:
    """The user behind a uid, with their groups' names; an unknown uid is refused."""
    try:
        account = pwd.getpwuid(uid)
    except KeyError:
        raise BrokerError(403, f"uid {uid} has no account on this machine") from None
    groups = tuple(sorted({grp.getgrgid(g).gr_name for g in os.getgrouplist(account.pw_name, gid) if _named(g)}))
    admin = uid == 0 or (admin_group is not None and admin_group in groups)
    return Identity(account.pw_name, groups, admin, "unix")


def _named(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


class _SocketChannel:
    """One connection's events (``service.Channel``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, event: wire.Event) -> None:
        with self.lock:
            self.sock.sendall(wire.encode(event))

    def gone(self) -> bool:
        """Whether the client hung up (it sends nothing after its request, so readable means gone)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable) and not self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (OSError, ValueError):
            return True


class UnixServer:
    """Serves ``broker`` on the socket at ``path`` until ``close``."""

    def __init__(self, broker: Broker, path: Path, admin_group: str | None = None) -> None:
        self.broker, self.path, self.admin_group = broker, Path(path), admin_group
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()  # a dead broker's socket (the data dir's lock says no other broker runs)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.path.chmod(0o666)
        self.sock.listen(64)
        self._closed = threading.Event()

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                if self._closed.is_set():
                    return
                raise
            threading.Thread(target=self._serve, args=(connection,), daemon=True, name="jx-broker-client").start()

    def _serve(self, connection: socket.socket) -> None:
        channel = _SocketChannel(connection)
        try:
            _pid, uid, gid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            try:
                identity = identity_of(uid, gid, self.admin_group)
                doc = wire.decode(self._request(connection))
            except BrokerError as error:
                channel.send(wire.error_event(error))
                return
            handle(self.broker, identity, doc, channel)
        except OSError:
            pass  # the client went away: its run (if any) was stopped by the run's own loop
        finally:
            connection.close()

    def _request(self, connection: socket.socket) -> bytes:
        """The request line (at most ``max_request`` bytes)."""
        most = self.broker.settings.max_request
        connection.settimeout(_READ_TIMEOUT)
        data = b""
        while b"\n" not in data:
            chunk = connection.recv(1 << 16)
            if not chunk:
                break
            data += chunk
            if len(data) > most:
                raise BrokerError(413, f"request larger than {most} bytes; send less data with --in", "BrokerError")
        connection.settimeout(None)
        return data.split(b"\n", 1)[0]

    def close(self) -> None:
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.path.unlink(missing_ok=True)
