"""The proxy gate of ``--network HOST,...`` against a direct connection, from this machine.

    sudo .venv/bin/python benchmarks/bench_network.py            # needs root: it makes the test network
    .venv/bin/python benchmarks/bench_network.py --requests 500 --megabytes 100

A network namespace with an HTTP server (``tests/network_lab.py``, as the tests use it) is
the far end. Time to first byte: a fresh connection, one GET of a small file, until the first
byte of the answer; directly to the server's address, and through a gate (a Unix socket, as
the relay in a sandbox reaches it) that checks the list, resolves the name and connects.
Both take turns in blocks so they see the same load; the figure is the difference of the
medians (target <= 2 ms). Throughput: one download of ``--megabytes`` MB both ways, the
ratio of the gate's rate to the direct one (target >= 0.5 on two shared cores).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from network_lab import NetworkLab

from jupyter_exec.hosts import HostList
from jupyter_exec.proxy import open_gate

TARGET_MS, TARGET_RATIO = 2.0, 0.5


def _first_byte(connect: Callable[[], socket.socket], request: bytes) -> float:
    """Seconds from connecting to the answer's first byte (the rest is read and dropped)."""
    began = time.perf_counter()
    with connect() as sock:
        sock.sendall(request)
        sock.recv(1)
        took = time.perf_counter() - began
        while sock.recv(65536):
            pass
    return took


def _download(connect: Callable[[], socket.socket], request: bytes, size: int) -> float:
    """Bytes a second for one download of ``size`` bytes (headers included in the count)."""
    began = time.perf_counter()
    got = 0
    buffer = bytearray(1 << 20)
    with connect() as sock:
        sock.sendall(request)
        while count := sock.recv_into(buffer):
            got += count
    assert got >= size, f"short download: {got} of {size} bytes"
    return got / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    if not NetworkLab.possible():
        raise SystemExit("needs root, ip (iproute2) and openssl: it makes a network namespace")
    work = Path(tempfile.mkdtemp(prefix="jx-bench-network-"))
    lab = NetworkLab(work).start()
    try:
        import os

        os.environ.update(lab.env())
        address = lab.addresses["files.test"]
        gate = open_gate(HostList.parse("files.test"), work / "gate.sock")

        def direct() -> socket.socket:
            return socket.create_connection((address, 80))

        def gated() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(gate.path))
            return sock

        small = b"GET /index.txt HTTP/1.1\r\nHost: files.test\r\nConnection: close\r\n\r\n"
        proxied = small.replace(b"GET /", b"GET http://files.test/")
        times: dict[str, list[float]] = {"direct": [], "gate": []}
        for _ in range(0, args.requests, 20):
            for _ in range(20):
                times["direct"].append(_first_byte(direct, small))
            for _ in range(20):
                times["gate"].append(_first_byte(gated, proxied))
        direct_ms = statistics.median(times["direct"]) * 1000
        gate_ms = statistics.median(times["gate"]) * 1000
        size = args.megabytes * 1_000_000
        big = f"GET /bytes/{size} HTTP/1.1\r\nHost: files.test\r\nConnection: close\r\n\r\n".encode()
        rates = {"direct": [], "gate": []}
        for _ in range(3):
            rates["direct"].append(_download(direct, big, size))
            rates["gate"].append(_download(gated, big.replace(b"GET /", b"GET http://files.test/"), size))
        direct_rate, gate_rate = statistics.median(rates["direct"]), statistics.median(rates["gate"])
        gate.close()
    finally:
        lab.stop()
    added = gate_ms - direct_ms
    ratio = gate_rate / direct_rate
    print(f"time to first byte: direct {direct_ms:.2f} ms, through the gate {gate_ms:.2f} ms", end="")
    print(f" (median of {args.requests})")
    print(f"  added by the gate: {added:.2f} ms (target <= {TARGET_MS} ms) {'ok' if added <= TARGET_MS else 'MISSED'}")
    print(
        f"download of {args.megabytes} MB: direct {direct_rate / 1e6:.0f} MB/s, through the gate "
        f"{gate_rate / 1e6:.0f} MB/s (median of 3)"
    )
    print(f"  ratio {ratio:.2f} (target >= {TARGET_RATIO}) {'ok' if ratio >= TARGET_RATIO else 'MISSED'}")


if __name__ == "__main__":
    main()
