"""The proxy gate of ``--network HOST,...``, spoken to as the relay in a sandbox speaks to it,
against the lab's servers (``network_lab``) and one on this machine's loopback."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_exec.hosts import HostList
from jupyter_exec.proxy import MAX_OPEN, Gate, open_gate, peek
from jupyter_exec.proxy.addresses import local_addresses


@pytest.fixture
def gate_for(network_lab, tmp_path: Path, monkeypatch) -> Iterator:
    for key, value in network_lab.env(**{"a.lab.test": network_lab.addresses["files.test"]}).items():
        monkeypatch.setenv(key, value)
    gates: list[Gate] = []

    def make(hosts: str) -> Gate:
        gates.append(open_gate(HostList.parse(hosts), tmp_path / f"gate{len(gates)}.sock"))
        return gates[-1]

    yield make
    for gate in gates:
        gate.close()


def _connect(gate: Gate) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(str(gate.path))
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _get(gate: Gate, url: str, host: str | None = None) -> tuple[bytes, float]:
    """A plain-HTTP request through the gate: the answer and how long it took."""
    started = time.monotonic()
    with _connect(gate) as sock:
        named = host or url.split("/")[2]
        sock.sendall(f"GET {url} HTTP/1.1\r\nHost: {named}\r\nConnection: keep-alive\r\n\r\n".encode())
        return _read_all(sock), time.monotonic() - started


def _tunnel(gate: Gate, target: str) -> tuple[socket.socket, bytes]:
    """A CONNECT to ``target``: the socket and the proxy's answer head."""
    sock = _connect(gate)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


def _tls_get(sock: socket.socket, ca: Path, server_name: str, host: str) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with context.wrap_socket(sock, server_hostname=server_name) as tls:
        tls.sendall(f"GET /index.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return _read_all(tls)


def test_a_listed_host_is_reached_over_http_and_https_and_recorded(gate_for, network_lab) -> None:
    gate = gate_for("files.test")
    answer, _ = _get(gate, "http://files.test/index.txt")
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"hello from the lab\n")
    sock, head = _tunnel(gate, "files.test:443")
    assert head.startswith(b"HTTP/1.1 200")
    assert _tls_get(sock, network_lab.ca, "files.test", "files.test").endswith(b"hello from the lab\n")
    traffic = gate.close()
    assert [(c.host, c.port, c.allowed) for c in traffic.connections] == [
        ("files.test", 80, True),
        ("files.test", 443, True),
    ]
    assert all(c.sent > 50 and c.received > 100 for c in traffic.connections)


def test_a_host_not_listed_is_refused_at_once_by_name(gate_for) -> None:
    gate = gate_for("files.test")
    for url, named in (("http://other.test/", "other.test:80"), ("http://198.51.100.9/", "198.51.100.9:80")):
        answer, took = _get(gate, url)
        assert answer.startswith(f"HTTP/1.1 403 {named} is not on this run's --network list (files.test)".encode())
        assert took < 1
    sock, head = _tunnel(gate, "files.test:22")
    assert head.startswith(b"HTTP/1.1 403 files.test:22 is not on this run's --network list")
    sock.close()
    refused = gate.close().connections
    assert [(c.host, c.allowed) for c in refused] == [
        ("other.test", False),
        ("198.51.100.9", False),
        ("files.test", False),
    ]


def test_tls_must_name_the_tunnels_host(gate_for, network_lab) -> None:
    gate = gate_for("files.test,other.test")
    sock, head = _tunnel(gate, "files.test:443")
    assert head.startswith(b"HTTP/1.1 200")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls_get(sock, network_lab.ca, "other.test", "other.test")
    (record,) = gate.close().connections
    assert not record.allowed and "TLS for other.test through a tunnel to files.test" in record.reason


def test_plain_http_must_carry_a_host_that_agrees(gate_for) -> None:
    gate = gate_for("files.test,other.test")
    answer, _ = _get(gate, "http://files.test/host", host="other.test")
    assert answer.startswith(b"HTTP/1.1 403 the Host header names other.test, not files.test:80")
    answer, _ = _get(gate, "http://files.test/host")
    assert answer.endswith(b"files.test")  # the server saw the Host the proxy checked


def test_other_protocols_only_to_a_port_named_explicitly(gate_for) -> None:
    gate = gate_for("files.test,other.test:7000")
    sock, head = _tunnel(gate, "files.test:443")
    sock.sendall(b"SSH-2.0-hello\r\n")
    assert head.startswith(b"HTTP/1.1 200") and _read_all(sock) == b""
    sock.close()
    sock, head = _tunnel(gate, "other.test:7000")  # a server that speaks first
    assert head.startswith(b"HTTP/1.1 200")
    assert sock.recv(100) == b"echo ready\n"
    sock.sendall(b"ping")
    assert sock.recv(100) == b"ping"
    sock.close()
    cut, echoed = gate.close().connections
    assert "neither TLS nor HTTP to files.test:443; name files.test:443 to allow it" in cut.reason
    assert echoed.allowed and echoed.sent == 4 and echoed.received == len(b"echo ready\nping")


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_this_machine_is_never_reached_even_when_named(gate_for, loopback_server: int) -> None:
    own = sorted(str(a) for a in local_addresses() if a.version == 4 and not a.is_loopback)
    names = [f"127.0.0.1:{loopback_server}", f"loop.test:{loopback_server}", f"[::1]:{loopback_server}"]
    names += [f"{address}:{loopback_server}" for address in own]
    gate = gate_for(",".join(names))
    for name in names:
        answer, _ = _get(gate, f"http://{name}/")
        assert b" 403 " in answer.split(b"\r\n")[0], name
        assert b"an address of this machine, never reachable from a sandbox" in answer


def test_metadata_and_private_addresses_through_a_wildcard_are_refused(gate_for) -> None:
    gate = gate_for("meta.test,*.lab.test")
    answer, _ = _get(gate, "http://meta.test/latest/meta-data/")
    assert answer.startswith(b"HTTP/1.1 403 meta.test is 169.254.169.254, a link-local address")
    answer, _ = _get(gate, "http://a.lab.test/")
    assert b"a private address, reached through the wildcard *.lab.test; name the host exactly" in answer
    answer, _ = _get(gate_for("a.lab.test"), "http://a.lab.test/index.txt")
    assert answer.endswith(b"hello from the lab\n")


def test_connections_at_once_are_bounded(gate_for) -> None:
    gate = gate_for("other.test:7000")
    held = []
    for _ in range(MAX_OPEN):
        sock, head = _tunnel(gate, "other.test:7000")
        assert head.startswith(b"HTTP/1.1 200")
        held.append(sock)
    started = time.monotonic()
    extra, head = _tunnel(gate, "other.test:7000")
    assert head.startswith(f"HTTP/1.1 503 more than {MAX_OPEN} connections at once".encode())
    assert time.monotonic() - started < 1
    for sock in [extra, *held]:
        sock.close()
    traffic = gate.close()
    assert len(traffic.connections) == MAX_OPEN + 1 and traffic.refused == 1


def _client_hello(name: bytes | None) -> bytes:
    """A minimal TLS 1.2 ClientHello, with an SNI extension naming ``name`` when given."""
    extensions = b""
    if name is not None:
        entry = b"\x00" + len(name).to_bytes(2, "big") + name
        listed = len(entry).to_bytes(2, "big") + entry
        extensions = b"\x00\x00" + len(listed).to_bytes(2, "big") + listed
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += len(extensions).to_bytes(2, "big") + extensions
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def test_the_server_name_of_a_client_hello() -> None:
    hello = _client_hello(b"Files.Test")
    assert peek.server_name(hello) == "files.test"
    assert peek.server_name(_client_hello(None)) is None
    with pytest.raises(peek.Incomplete):
        peek.server_name(hello[:20])
    with pytest.raises(ValueError):
        peek.server_name(b"\x17" + hello[1:])


def test_an_http_head() -> None:
    head, rest = peek.parse_head(b"GET http://files.test/x HTTP/1.1\r\nHost: files.test\r\n\r\nbody")
    assert (head.method, head.target, head.header("host")) == ("GET", "http://files.test/x", "files.test")
    assert rest == b"body"
    twice, _ = peek.parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert twice.header("host") is None
    with pytest.raises(peek.Incomplete):
        peek.parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n")


def test_a_gate_that_cannot_start_refuses_the_run_in_one_line(tmp_path: Path) -> None:
    from jupyter_exec.errors import BackendUnavailableError
    from jupyter_exec.proxy import gate_for

    too_long = tmp_path / ("x" * 120) / "proxy.sock"  # longer than a Unix socket's path may be
    too_long.parent.mkdir()
    with pytest.raises(BackendUnavailableError) as refused:
        gate_for("seccomp", HostList.parse("files.test"), too_long)
    assert "--network files.test: the network proxy could not start" in str(refused.value)
    assert "the run was not started" in str(refused.value) and "\n" not in str(refused.value)
    assert gate_for("seccomp", None, too_long) is None
