"""The proxy of a host-list run: one gate per run (or per sandbox session, its cells' traffic
taken one cell at a time), on one event loop per process.

A gate (``open_gate``) is a Unix socket in the run's own folder, the only way out of a
sandbox that has no network of its own; a small relay inside (``runner/netrelay.py``)
gives the cell an ordinary HTTP proxy on its loopback. The gate speaks HTTP CONNECT and
plain-HTTP forwarding, and for each connection:

1. reads the request head (bounded in size and time) and takes its host and port;
2. refuses at once, with a 403 whose reason names the host, what is not on the run's list;
3. resolves the name itself and refuses the addresses ``addresses.refusal`` names (the
   host's own, private ones through a wildcard, link-local ones), then connects to the very
   address it checked (no second lookup: DNS rebinding gains nothing);
4. in a tunnel, reads the client's first bytes: a TLS ClientHello must name the same host
   (SNI), an HTTP request must carry a Host that agrees; any other protocol only to a
   ``host:port`` named explicitly; a plain-HTTP request is forwarded with its Host checked
   and ``Connection: close``, so one connection is one request to one host;
5. relays (``relay``: the kernel moves the bytes), counting them each way, and keeps a
   ``Connection`` record.

At most ``MAX_OPEN`` connections of a run are open at once (more are refused with a 503 at
once), and at most ``MAX_RECORDS`` records are kept (the rest are counted).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jupyter_exec.errors import BackendUnavailableError
from jupyter_exec.events import Network
from jupyter_exec.hosts import HostList, HostRule, normalise

from . import peek
from .addresses import IPAddress, refusal, resolve
from .relay import relay

__all__ = ["MAX_OPEN", "MAX_RECORDS", "RELAY_PORT", "Connection", "Gate", "Traffic", "gate_for", "open_gate"]

RELAY_PORT = 3128  # the relay's port on the sandbox's own loopback (runner/netrelay.py)
MAX_OPEN = 64  # a run's connections open at once
MAX_RECORDS = 1000  # a run's connections kept on its record (the rest are counted)
_HEAD_BYTES = 64 * 1024  # a request head, or a ClientHello, larger than this is cut
_HEAD_TIME = 10.0  # seconds for a client to send its head
_FIRST_BYTES_TIME = 10.0  # seconds for the first bytes in a tunnel (HTTP and TLS clients speak first)
_SERVER_FIRST_TIME = 1.0  # seconds before an explicitly named port is taken for a server-speaks-first protocol
_CONNECT_TIME = 10.0
_LINGER = 1.0  # seconds a refused connection is read after its answer
_TAKE_WAIT = 1.0  # seconds a session's cell's connections still closing get before its traffic is taken


@dataclass
class Connection:
    """One connection a run asked for: where, whether it was allowed, what it carried."""

    host: str
    port: int
    allowed: bool = False
    reason: str = ""  # why it was refused, or how an allowed one ended early
    sent: int = 0  # bytes from the cell to the host
    received: int = 0  # bytes from the host to the cell
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add_sent(self, count: int) -> None:
        self.sent += count

    def add_received(self, count: int) -> None:
        self.received += count


@dataclass
class Traffic:
    """A run's connections as its gate saw them (at most ``MAX_RECORDS``; ``unrecorded`` more)."""

    hosts: str  # the list, as typed
    connections: list[Connection]
    unrecorded: int = 0

    @property
    def refused(self) -> int:
        return sum(not c.allowed for c in self.connections)

    def summary(self) -> Network:
        """What a run's details keep of it (the connections themselves go to their own table)."""
        refused_to = dict.fromkeys(f"{c.host}:{c.port}" for c in self.connections if not c.allowed)
        return Network(
            hosts=self.hosts,
            connections=len(self.connections) + self.unrecorded,
            refused=self.refused,
            refused_to=list(refused_to)[:5],
            sent=sum(c.sent for c in self.connections),
            received=sum(c.received for c in self.connections),
        )

    def rows(self) -> list[dict[str, Any]]:
        """Each connection, for the store (``Outcome.connections``)."""
        return [c.as_dict() for c in self.connections]


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class _Cut(_Refused):
    """Refused inside a tunnel already answered 200: the connection is cut, no answer can be sent."""


class Gate:
    """One run's way out (see the module docstring); ``close`` ends it and gives its ``Traffic``."""

    def __init__(self, hosts: HostList, path: Path) -> None:
        self.hosts, self.path = hosts, path
        self.traffic = Traffic(str(hosts), [])
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, 0o666)  # the sandbox's user may differ (a container's); the folder guards it
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        self._accepting = asyncio.get_running_loop().create_task(self._accept(listener))

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(listener)
            task = loop.create_task(self._serve(client))
            self._tasks.add(task)  # counted at once: MAX_OPEN
            task.add_done_callback(self._tasks.discard)

    def close(self) -> Traffic:
        """Stop taking connections, cut the open ones, and return what the run did."""
        _loop().call(self._stop())
        return self.traffic

    def take(self) -> Traffic:
        """What was done through the gate since the last ``take`` (a session's cell: its own
        connections), the gate open still."""
        return _loop().call(self._take())

    async def _take(self) -> Traffic:
        if self._tasks:  # the cell's last connections may still be closing at the gate: their records follow
            await asyncio.wait(list(self._tasks), timeout=_TAKE_WAIT)
        taken, self.traffic = self.traffic, Traffic(str(self.hosts), [])
        return taken

    async def _stop(self) -> None:
        ending = [*self._tasks, *([self._accepting] if self._accepting else [])]
        for task in ending:
            task.cancel()
        await asyncio.gather(*ending, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _serve(self, client: socket.socket) -> None:
        record = Connection("", 0)
        try:
            if len(self._tasks) > MAX_OPEN:
                raise _Refused(503, f"more than {MAX_OPEN} connections at once from this run")
            head, rest = await _read(client, peek.parse_head, _HEAD_TIME)
            if head.method == "CONNECT":
                await self._tunnel(head, rest, client, record)
            else:
                await self._forward(head, rest, client, record)
        except _Refused as refused:
            record.reason = refused.reason
            record.allowed = False
            if not isinstance(refused, _Cut):
                await _answer(client, refused.status, refused.reason)
        except asyncio.CancelledError:
            record.reason = record.reason or "cut when the run ended"
        except OSError as error:
            record.reason = record.reason or f"ended: {error.__class__.__name__}"
        finally:
            client.close()
            record.seconds = time.time() - record.started
            self._keep(record)

    def _keep(self, record: Connection) -> None:
        if len(self.traffic.connections) < MAX_RECORDS:
            self.traffic.connections.append(record)
        else:
            self.traffic.unrecorded += 1

    async def _tunnel(self, head: peek.Head, rest: bytes, client: socket.socket, record: Connection) -> None:
        """HTTP CONNECT: checked, connected, answered 200; then the first bytes checked and relayed."""
        loop = asyncio.get_running_loop()
        record.host, record.port = _authority(head.target, None)
        rule, upstream = await self._connect(record)
        with upstream:
            try:
                await loop.sock_sendall(client, b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = rest or await _first_bytes(client, rule)
                self._check_first(first, record, rule)
            except _Refused as refused:
                raise _Cut(refused.status, refused.reason) from None
            await loop.sock_sendall(upstream, first)
            record.sent += len(first)
            await relay(client, upstream, record.add_sent, record.add_received)

    async def _forward(self, head: peek.Head, rest: bytes, client: socket.socket, record: Connection) -> None:
        """A plain-HTTP request in absolute form, sent on with its Host checked, then relayed."""
        url = urlsplit(head.target)
        if url.scheme != "http" or not url.hostname:
            raise _Refused(400, f"{head.target[:80]} is not an http:// URL (use HTTPS through CONNECT)")
        record.host, record.port = normalise(url.hostname), url.port or 80
        _agree(head.header("host"), record, "the Host header")
        _, upstream = await self._connect(record)
        kept = [(k, v) for k, v in head.headers if k.lower() not in ("connection", "proxy-connection", "keep-alive")]
        kept = [(k, v) for k, v in kept if not k.lower().startswith("proxy-")]
        path = url.path or "/"
        lines = [f"{head.method} {path}{'?' + url.query if url.query else ''} {head.version}"]
        lines += [f"{k}: {v}" for k, v in kept] + ["Connection: close", "", ""]
        sent = "\r\n".join(lines).encode("latin-1") + rest
        with upstream:
            await asyncio.get_running_loop().sock_sendall(upstream, sent)
            record.sent += len(sent)
            await relay(client, upstream, record.add_sent, record.add_received)

    async def _connect(self, record: Connection) -> tuple[HostRule, socket.socket]:
        """The rule that admits the connection and a socket connected to the checked address; ``_Refused`` else."""
        rule = self.hosts.match(record.host, record.port)
        name = f"[{record.host}]" if ":" in record.host else record.host
        if rule is None:
            raise _Refused(403, f"{name}:{record.port} is not on this run's --network list ({self.hosts})")
        try:
            found = await asyncio.get_running_loop().run_in_executor(None, resolve, record.host)
        except OSError as error:
            raise _Refused(502, f"{name} cannot be resolved ({error.strerror or error})") from None
        reasons = {address: refusal(address, rule) for address in found}
        allowed: list[IPAddress] = [address for address, reason in reasons.items() if reason is None]
        if not allowed:
            address, reason = next(iter(reasons.items()))
            raise _Refused(403, f"{name} is {address}, {reason}")
        record.allowed = True
        errors = []
        loop = asyncio.get_running_loop()
        for address in allowed:
            upstream = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(upstream, (str(address), record.port)), _CONNECT_TIME)
                return rule, upstream
            except (OSError, asyncio.TimeoutError) as error:
                upstream.close()
                errors.append(f"{address}: {getattr(error, 'strerror', None) or 'timed out'}")
        raise _Refused(502, f"{name}:{record.port} cannot be reached ({'; '.join(errors)})")

    def _check_first(self, first: bytes, record: Connection, rule: HostRule) -> None:
        """TLS must name the tunnel's host, HTTP must agree with it, anything else needs an explicit port."""
        if peek.looks_like_tls(first):
            try:
                sni = peek.server_name(first)
            except (ValueError, IndexError, UnicodeDecodeError):
                raise _Refused(403, "a TLS handshake the proxy cannot read") from None
            if sni is None and not rule.address:
                raise _Refused(403, f"a TLS connection to {record.host} that names no server (SNI)")
            if sni is not None and sni != record.host:
                raise _Refused(403, f"TLS for {sni} through a tunnel to {record.host}: the names must agree")
        elif peek.looks_like_http(first):
            head, _ = peek.parse_head(first)
            _agree(head.header("host"), record, "the Host header")
        elif rule.port is None:
            target = f"{record.host}:{record.port}"
            raise _Refused(403, f"neither TLS nor HTTP to {target}; name {target} to allow it")


def _agree(value: str | None, record: Connection, what: str) -> None:
    """``value`` (a Host header) must name the connection's host (and port, where it names one)."""
    if value is None:
        raise _Refused(403, f"{what} is missing (or given twice); it must name {record.host}")
    host, port = _authority(value, record.port)
    if host != record.host or port != record.port:
        raise _Refused(403, f"{what} names {value}, not {record.host}:{record.port}")


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets) as a normalised host and a port."""
    host, port = text, None
    if text.startswith("["):
        close = text.find("]")
        host, after = text[: close + 1], text[close + 1 :]
        port = after[1:] if after.startswith(":") else None
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if port is None and default_port is not None:
        return normalise(host), default_port
    if port is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise _Refused(400, f"{text[:80]} names no port; write host:port")
    return normalise(host), int(port)


async def _read(client: socket.socket, parse: Any, within: float) -> Any:
    """Read until ``parse`` stops raising ``peek.Incomplete``, bounded in bytes and time."""
    data = b""
    deadline = time.monotonic() + within
    while True:
        try:
            return parse(data)
        except peek.Incomplete:
            pass
        except ValueError as error:
            raise _Refused(400, str(error)) from None
        if len(data) >= _HEAD_BYTES:
            raise _Refused(400, f"a request head over {_HEAD_BYTES} bytes")
        left = deadline - time.monotonic()
        try:
            chunk = await asyncio.wait_for(_recv(client, _HEAD_BYTES - len(data)), max(left, 0.01))
        except asyncio.TimeoutError:
            raise _Refused(408, "no request within the time allowed") from None
        if not chunk:
            raise _Refused(400, "the connection closed before its request")
        data += chunk


async def _first_bytes(client: socket.socket, rule: HostRule) -> bytes:
    """The tunnel's first bytes: a whole ClientHello or HTTP head where it is one."""
    wait = _SERVER_FIRST_TIME if rule.port is not None else _FIRST_BYTES_TIME
    try:
        data = await asyncio.wait_for(_recv(client, _HEAD_BYTES), wait)
    except asyncio.TimeoutError:
        if rule.port is not None:
            return b""  # a protocol whose server speaks first, to a port named explicitly
        raise _Refused(403, "the client sent nothing in its tunnel") from None
    if peek.looks_like_tls(data):
        return data + await _rest_of(client, data, peek.server_name)
    if peek.looks_like_http(data):
        return data + await _rest_of(client, data, peek.parse_head)
    return data


async def _rest_of(client: socket.socket, data: bytes, parse: Any) -> bytes:
    def complete(more: bytes) -> bytes:
        try:
            parse(data + more)
        except peek.Incomplete:
            raise
        except (ValueError, IndexError, UnicodeDecodeError):
            pass  # judged by the caller
        return more

    extra: bytes = b""
    deadline = time.monotonic() + _FIRST_BYTES_TIME
    while True:
        try:
            return complete(extra)
        except peek.Incomplete:
            if len(data) + len(extra) >= _HEAD_BYTES:
                raise _Refused(400, "a handshake or head too large to check") from None
        chunk = await asyncio.wait_for(_recv(client, _HEAD_BYTES), max(deadline - time.monotonic(), 0.01))
        if not chunk:
            raise _Refused(400, "the connection closed mid-handshake")
        extra += chunk


async def _recv(client: socket.socket, most: int) -> bytes:
    return await asyncio.get_running_loop().sock_recv(client, most)


async def _answer(client: socket.socket, status: int, reason: str) -> None:
    """A refusal the client shows: the reason in the status line (``Tunnel connection failed: 403
    HOST is not on ...``) and in the body (curl, a browser)."""
    phrase = reason.replace("\r", " ").replace("\n", " ")
    body = f"jupyter-exec network proxy: {phrase}\n".encode()
    head = f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await loop.sock_sendall(client, head.encode() + b"Connection: close\r\n\r\n" + body)
        # half-closed, and read a moment more: a client refused before it sent its request (too
        # many at once) then gets the answer, not a broken pipe
        client.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(_recv(client, _HEAD_BYTES), _LINGER)


class _Loop:
    """The process's one event loop for every gate, on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="jx-network-proxy", daemon=True).start()

    def call(self, coroutine: Any, timeout: float = 30.0) -> Any:
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)


_the_loop: _Loop | None = None
_loop_lock = threading.Lock()


def _loop() -> _Loop:
    global _the_loop
    with _loop_lock:
        if _the_loop is None:
            _the_loop = _Loop()
        return _the_loop


def open_gate(hosts: HostList, path: Path) -> Gate:
    """A gate for a run that may reach ``hosts``, listening at ``path`` (a Unix socket); ``OSError``
    if it cannot listen (the caller refuses the run: never more network, or silently none)."""
    gate = Gate(hosts, path)
    _loop().call(gate._start())
    return gate


def gate_for(backend: str, hosts: HostList | None, path: Path) -> Gate | None:
    """The gate of a run on ``backend`` that may reach ``hosts`` (None: the run has no host list);
    a gate that cannot open refuses the run (``BackendUnavailableError``), never runs it otherwise."""
    if hosts is None:
        return None
    try:
        return open_gate(hosts, path)
    except OSError as error:
        raise BackendUnavailableError(
            backend,
            f"--network {hosts}: the network proxy could not start ({error}); the run was not started",
            "set ExecConfig.scratch_dir to a shorter local path, or drop the host list",
        ) from None
