"""A small network on this machine for the ``--network HOST,...`` tests, and nothing outside it.

``NetworkLab`` makes a network namespace joined to the host by a veth pair, with addresses
from a free /29 of the documentation range 198.51.100.0/24 (checked against the host's own),
and runs ``lab_server.py`` there: ``files.test`` and ``other.test`` (two addresses), each with
HTTP, HTTPS (a certificate from a test CA made here) and a TCP echo on 7000. The proxy finds
them through ``JX_PROXY_TEST_HOSTS`` (``env``), which also maps ``meta.test`` to the metadata
address and ``loop.test`` to loopback, and serves a package index (``/simple/``) with one wheel.
Needs root (``ip netns``): ``scripts/test-as-user`` makes one as root (``python network_lab.py
start DIR``) for the ordinary account's tests, which find it through ``JX_TEST_NETWORK_LAB``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["SHARED_VAR", "NetworkLab"]

SHARED_VAR = "JX_TEST_NETWORK_LAB"

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

    @classmethod
    def attach(cls, root: Path) -> NetworkLab:
        """The lab another process (root's) made in ``root``; stopping it is that process's."""
        lab = cls(root)
        described = json.loads((root / "lab.json").read_text())
        lab.name, lab.addresses = described["name"], described["addresses"]
        return lab

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
        from conftest import make_wheel

        www = self.root / "www"
        (www / "simple" / "jxlabpkg").mkdir(parents=True, exist_ok=True)
        (www / "index.txt").write_text("hello from the lab\n")
        make_wheel(www / "simple" / "jxlabpkg", "jxlabpkg", "1.0", "GREETING = 'installed from the lab'\n")
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
        described = {"name": self.name, "addresses": self.addresses, "server": self.server.pid}
        (self.root / "lab.json").write_text(json.dumps(described))
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
        elif (self.root / "lab.json").exists():  # made by `network_lab.py start`
            pid = json.loads((self.root / "lab.json").read_text())["server"]
            subprocess.run(["kill", "-9", str(pid)], capture_output=True)  # root's, under `ip netns exec`
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


if __name__ == "__main__":  # scripts/test-as-user: `start DIR` / `stop DIR`, as root
    command, where = sys.argv[1], Path(sys.argv[2])
    if command == "start":
        NetworkLab(where).start()
    else:
        NetworkLab.attach(where).stop()
