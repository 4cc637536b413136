"""A gate's connection once it is checked: both directions moved by the kernel (``splice``
through a pipe, one thread each way), so the bytes never pass through Python; counted as they go.

The checks before it need the first bytes in Python; what follows is a plain relay, and on two
shared cores a copy through Python halves what a download gets. Each direction ends with a
half-close, so a client that has sent its request still reads the whole answer. Cancelled (the
run ended), both sockets are shut down, which ends the threads; their sockets are closed only
after, never while a thread still moves bytes on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import threading
from collections.abc import Callable

__all__ = ["relay"]

_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl: a pipe's size (Linux)


async def relay(client: socket.socket, upstream: socket.socket, sent: Callable[[int], None],
                received: Callable[[int], None]) -> None:  # fmt: skip
    """Relay until both directions have ended; ``sent`` and ``received`` count bytes each way."""
    loop = asyncio.get_running_loop()
    ended = [loop.create_future(), loop.create_future()]
    for sock in (client, upstream):
        sock.setblocking(True)
    for source, sink, count, future in ((client, upstream, sent, ended[0]), (upstream, client, received, ended[1])):

        def move(source: socket.socket = source, sink: socket.socket = sink, count: Callable[[int], None] = count,
                 future: asyncio.Future[None] = future) -> None:  # fmt: skip
            try:
                _move(source, sink, count)
            finally:
                loop.call_soon_threadsafe(future.set_result, None)

        threading.Thread(target=move, name="jx-network-relay", daemon=True).start()
    try:
        await asyncio.wait(ended)
    except asyncio.CancelledError:
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        await asyncio.wait(ended)  # the threads have let go of the sockets
        raise


def _move(source: socket.socket, sink: socket.socket, count: Callable[[int], None]) -> None:
    """``source`` to ``sink`` until ``source`` ends, then half-close ``sink``; a failure ends both."""
    read, write = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write, _F_SETPIPE_SZ, _CHUNK)
        while moved := os.splice(source.fileno(), write, _CHUNK):
            while moved:
                done = os.splice(read, sink.fileno(), moved)
                moved -= done
                count(done)
        sink.shutdown(socket.SHUT_WR)
    except OSError:  # a reset, or a side gone: nothing more can pass either way
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    finally:
        os.close(read)
        os.close(write)
