"""A small network on this machine for the ``--network HOST,...`` tests, and nothing outside it.

``NetworkLab`` makes a network namespace joined to the host by a veth pair, with addresses
from a free /29 of the documentation range 198.51.100.0/24 (checked against the host's own),
and runs ``lab_server.py`` there: ``files.test`` and ``other.test`` (two addresses), each with
HTTP, HTTPS (a certificate from a test CA made here) and a TCP echo on 7000. The proxy finds
them through ``JX_PROXY_TEST_HOSTS`` (``env``), which also maps ``meta.test`` to the metadata
address and ``loop.test`` to loopback. Needs root (``ip netns``); the tests skip without it
(and fail under ``JX_REQUIRE_ALL``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["NetworkLab"]

_RANGE = ipaddress.ip_network("198.51.100.0/24")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _used() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    return [ipaddress.ip_interface(line.split()[3]).network for line in out.splitlines()]


class NetworkLab:
    """The lab: ``start`` it, point the proxy at it with ``env``, ``stop`` it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"jxlab{os.getpid()}"
        self.addresses: dict[str, str] = {}
        self.server: subprocess.Popen[str] | None = None

    @staticmethod
    def possible() -> bool:
        return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("openssl") is not None

    def start(self) -> NetworkLab:
        used = _used()
        subnet = next(net for net in _RANGE.subnets(new_prefix=29) if not any(net.overlaps(other) for other in used))
        host, files, other = (str(address) for address in list(subnet.hosts())[:3])
        self.addresses = {"files.test": files, "other.test": other}
        ns, outside, inside = self.name, f"{self.name}h", f"{self.name}s"
        _ip("netns", "add", ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("addr", "add", f"{host}/29", "dev", outside)
        _ip("link", "set", outside, "up")
        for address in (files, other):
            _ip("-n", ns, "addr", "add", f"{address}/29", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        self.root.chmod(0o755)  # a container's user reads the CA through a --mount of it
        self._certificates()
        www = self.root / "www"
        www.mkdir(exist_ok=True)
        (www / "index.txt").write_text("hello from the lab\n")
        self.server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                str(Path(__file__).with_name("lab_server.py")),
                str(www),
                str(self.root / "server.pem"),
                str(self.root / "server.key"),
                files,
                other,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.server.stdout is not None and self.server.stdout.readline().strip() == "ready"
        return self

    @property
    def www(self) -> Path:
        return self.root / "www"

    @property
    def ca(self) -> Path:
        """The test CA's certificate, for a cell to trust (``SSL_CERT_FILE``)."""
        return self.root / "ca.pem"

    def env(self, **more: str) -> dict[str, str]:
        """The proxy's test name map."""
        names = {**self.addresses, "meta.test": "169.254.169.254", "loop.test": "127.0.0.1", **more}
        return {"JX_PROXY_TEST_HOSTS": ",".join(f"{name}={address}" for name, address in names.items())}

    def stop(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        subprocess.run(["ip", "link", "del", f"{self.name}h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def _certificates(self) -> None:
        """A test CA and one certificate for both lab names, signed by it."""

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.root)

        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=jx test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=files.test",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        )
        (self.root / "san.ext").write_text("subjectAltName=DNS:files.test,DNS:other.test\n")
        openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        )
