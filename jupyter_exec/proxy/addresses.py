"""Where a name may lead: the proxy's own resolver and the addresses it never connects to.

The proxy resolves every name itself (the sandbox has no DNS) and connects to the very
address it checked, so a name that answers differently the second time (DNS rebinding)
gains nothing. Refused always: the host's loopback and every address of its own interfaces
(the Jupyter server, Ray, the broker listen there), unspecified and multicast addresses.
Refused unless the list names them exactly: private addresses (reached through a wildcard),
and link-local ones, the cloud metadata service among them, unless named as addresses.

``JX_PROXY_TEST_HOSTS`` (``name=address,...``) exists for the tests alone: it answers for
the names it lists before DNS does, so the tests reach servers in network namespaces they
make. Unset, it does nothing; set, it cannot lead past the checks above.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import time
from collections.abc import Iterable

from jupyter_exec.hosts import HostRule

__all__ = ["TEST_HOSTS_VAR", "IPAddress", "local_addresses", "refusal", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TEST_HOSTS_VAR = "JX_PROXY_TEST_HOSTS"
_LOCAL_FOR = 5.0  # seconds a reading of the host's own addresses is kept
_local: tuple[float, frozenset[IPAddress]] = (0.0, frozenset())


def resolve(host: str) -> list[IPAddress]:
    """The addresses of ``host`` (an address is itself), TCP only; ``OSError`` if none."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    mapped = _test_hosts().get(host)
    if mapped is not None:
        return mapped
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


def refusal(address: IPAddress, rule: HostRule) -> str | None:
    """Why the proxy must not connect to ``address``, reached by ``rule``; None: it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified or address in local_addresses():
        return "an address of this machine, never reachable from a sandbox"
    if address.is_multicast or address.is_reserved:
        return "not a single host's address"
    if address.is_link_local and not (rule.address and ipaddress.ip_address(rule.host) == address):
        return "a link-local address (a cloud's metadata service lives there); name the address itself to allow it"
    if address.is_private and rule.wildcard:
        return f"a private address, reached through the wildcard {rule}; name the host exactly to allow it"
    return None


def local_addresses() -> frozenset[IPAddress]:
    """Every address of this machine's interfaces (re-read every few seconds)."""
    global _local
    read_at, found = _local
    if time.monotonic() - read_at > _LOCAL_FOR:
        found = frozenset(_ipv4_local()) | frozenset(_ipv6_local())
        _local = (time.monotonic(), found)
    return found


def _ipv4_local() -> Iterable[IPAddress]:
    """The kernel's LOCAL routes (``/proc/net/fib_trie``): each address of this machine."""
    try:
        lines = open("/proc/net/fib_trie").read().splitlines()
    except OSError:
        return
    for before, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL":
            yield ipaddress.ip_address(before.split()[-1])


def _ipv6_local() -> Iterable[IPAddress]:
    try:
        lines = open("/proc/net/if_inet6").read().splitlines()
    except OSError:
        return
    for line in lines:
        text = line.split()[0]
        yield ipaddress.ip_address(":".join(text[i : i + 4] for i in range(0, 32, 4)))


def _test_hosts() -> dict[str, list[IPAddress]]:
    text = os.environ.get(TEST_HOSTS_VAR, "")
    mapped: dict[str, list[IPAddress]] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, address = entry.partition("=")
        mapped.setdefault(name.strip().lower(), []).append(ipaddress.ip_address(address.strip()))
    return mapped
