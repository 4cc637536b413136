"""Inside a host-list sandbox: the cell's HTTP proxy on its own loopback, relayed to the gate.

Standard library only, shipped beside the bootstrap. The sandbox has a network namespace (or
a container's network) with nothing in it but loopback; the kernel's gate (``proxy/``) is a
Unix socket in the run's folder. ``start`` listens on ``127.0.0.1:PORT`` and carries each
connection to the gate unchanged, and sets the standard proxy variables, so pip, urllib,
requests, httpx, curl and git use it as they would any proxy. It can reach nothing the gate
would not: the gate checks every connection. It runs after the run is confined (the same
Landlock and seccomp rules hold its threads), and keeps at most ``MAX_OPEN`` connections
open, answering more with a 503 at once, so a cell cannot exhaust its own process limit here.
"""

import collections
import os
import select
import socket
import threading

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
MAX_OPEN = 64
_CHUNK = 256 * 1024
_BUSY = f"HTTP/1.1 503 more than {MAX_OPEN} connections at once from this run\r\nContent-Length: 0\r\n\r\n".encode()


def start(gate: str, port: int) -> str:
    """Listen on ``127.0.0.1:port`` for the gate at ``gate`` and point the proxy variables at it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    slots = threading.BoundedSemaphore(MAX_OPEN)
    threading.Thread(target=_accept, args=(listener, gate, slots), name="jx-netrelay", daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    os.environ.update({name: url for name in PROXY_VARS})
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ""
    return f"network: the listed hosts, through {url}"


def _accept(listener: socket.socket, gate: str, slots: threading.BoundedSemaphore) -> None:
    refused: collections.deque[socket.socket] = collections.deque()
    while True:
        client, _ = listener.accept()
        if not slots.acquire(blocking=False):
            _refuse(client, refused)
            continue
        try:
            threading.Thread(target=_bridge, args=(client, gate, slots), daemon=True).start()
        except RuntimeError:  # the run's process limit: no thread to spare
            slots.release()
            _refuse(client, refused)


def _refuse(client: socket.socket, refused: "collections.deque[socket.socket]") -> None:
    """Answer 503 and half-close, keeping the socket a while (the last ``MAX_OPEN``): a client
    that sends its request after the answer then reads it, rather than a broken pipe."""
    try:
        client.sendall(_BUSY)
        client.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    refused.append(client)
    if len(refused) > MAX_OPEN:
        refused.popleft().close()


def _bridge(client: socket.socket, gate: str, slots: threading.BoundedSemaphore) -> None:
    """Carry one connection both ways until both sides have ended."""
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(gate)
        other = {client.fileno(): (client, upstream), upstream.fileno(): (upstream, client)}
        poller = select.poll()
        for fd in other:
            poller.register(fd, select.POLLIN)
        buffer = bytearray(_CHUNK)
        while other:
            for fd, _ in poller.poll():
                source, sink = other[fd]
                size = source.recv_into(buffer)
                if size:
                    sink.sendall(memoryview(buffer)[:size])
                    continue
                poller.unregister(fd)
                del other[fd]
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
    except OSError:
        pass
    finally:
        upstream.close()
        client.close()
        slots.release()
