"""A host list: the network a run may reach, by name (``--network HOST[:PORT],...``).

Each entry is an exact name (``index.example.org``), a wildcard of subdomains (``*.example.org``:
``a.example.org`` and ``a.b.example.org``, never ``example.org`` itself), an IPv4 address or
an IPv6 address in brackets (``[2001:db8::1]``), with a port (``host:8080``) or without one
(ports 443 and 80). A port named explicitly also admits protocols other than HTTP and TLS
(the proxy checks SNI and Host only where it can tell them). Address ranges are refused: a
list names what it allows. Parsing is all here, so the magics, the policy files and a
broker's request read one syntax and say the same thing about a bad entry.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .errors import SpecError

__all__ = ["WEB_PORTS", "HostList", "HostRule"]

#: The ports a bare name allows.
WEB_PORTS = (443, 80)
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_EXAMPLE = "e.g. --network index.example.org,files.example.net or --network api.example.org:8443"


@dataclass(frozen=True)
class HostRule:
    """One entry: a name, wildcard or address, and its port (None: the web ports)."""

    host: str  # lower case; an IPv6 address without brackets; a wildcard without its '*.'
    port: int | None = None
    wildcard: bool = False

    @property
    def address(self) -> bool:
        """An IP address named as such (not a name)."""
        return _ip(self.host) is not None

    def matches(self, host: str, port: int) -> bool:
        """Whether ``host`` (normalised) and ``port`` are this entry's."""
        if port not in ((self.port,) if self.port is not None else WEB_PORTS):
            return False
        return host.endswith("." + self.host) if self.wildcard else host == self.host

    def __str__(self) -> str:
        name = f"*.{self.host}" if self.wildcard else f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port is None else f"{name}:{self.port}"


@dataclass(frozen=True)
class HostList:
    """The entries of a ``--network`` list, in the order typed (duplicates dropped)."""

    rules: tuple[HostRule, ...]

    @classmethod
    def parse(cls, text: str, where: str = "--network") -> HostList:
        """``"index.example.org, *.example.org:8443, [::1]:80"``; ``SpecError`` names the bad entry."""
        entries = [entry.strip() for entry in text.split(",")]
        if not any(entries):
            raise SpecError(f"{where}: no host given; {_EXAMPLE}")
        return cls(tuple(dict.fromkeys(_rule(entry, where) for entry in entries if entry)))

    def match(self, host: str, port: int) -> HostRule | None:
        """The entry that admits ``host:port`` (an exact one before a wildcard), or None."""
        host = normalise(host)
        found = [rule for rule in self.rules if rule.matches(host, port)]
        return min(found, key=lambda rule: rule.wildcard) if found else None

    def within(self, ceiling: HostList) -> HostRule | None:
        """The first entry of this list that ``ceiling`` does not cover, or None if all are."""
        for rule in self.rules:
            ports = (rule.port,) if rule.port is not None else WEB_PORTS
            covered = any(
                all(other.matches(rule.host, port) for port in ports)
                or (rule.wildcard and other.wildcard and other.port == rule.port and _under(rule.host, other.host))
                for other in ceiling.rules
            )
            if not covered:
                return rule
        return None

    def __str__(self) -> str:
        return ",".join(map(str, self.rules))


def normalise(host: str) -> str:
    """A host as the lists hold it: lower case, no trailing dot, IPv6 without brackets."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    address = _ip(host)
    return host if address is None else str(address)


def _under(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _rule(entry: str, where: str) -> HostRule:
    """One entry of a list, checked (see the module docstring)."""
    bad = f"{where}: {entry!r}"
    if "://" in entry or "@" in entry:
        raise SpecError(f"{bad} is not a host; write the name alone, {_EXAMPLE}")
    if "/" in entry:
        raise SpecError(f"{bad} is an address range; ranges are not allowed, name each host or address")
    host, port = entry, None
    if entry.startswith("["):
        close = entry.find("]")
        host, rest = entry[1:close], entry[close + 1 :]
        if close < 0 or not isinstance(_ip(host), ipaddress.IPv6Address) or (rest and not rest.startswith(":")):
            raise SpecError(f"{bad} is not an IPv6 address in brackets; write e.g. [2001:db8::1]:443")
        port = _port(rest[1:], bad) if rest else None
        return HostRule(str(_ip(host)), port)
    if entry.count(":") > 1:
        raise SpecError(f"{bad}: write an IPv6 address in brackets, e.g. [{entry}]")
    if ":" in entry:
        host, text = entry.split(":")
        port = _port(text, bad)
    host = host.lower().rstrip(".")
    address = _ip(host)
    if address is not None:
        return HostRule(str(address), port)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    labels = name.split(".")
    if "*" in name or not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise SpecError(f"{bad} is not a host name; {_EXAMPLE} (a wildcard is *.example.org)")
    if wildcard and len(labels) < 2:
        raise SpecError(f"{bad} would match a whole top-level domain; name a domain, e.g. *.example.org")
    if labels[-1].isdigit():
        raise SpecError(f"{bad} is neither a host name nor an IPv4 address; write e.g. 192.0.2.10")
    return HostRule(name, port, wildcard)


def _port(text: str, bad: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SpecError(f"{bad}: the port must be a number from 1 to 65535, e.g. example.org:8443")
    return int(text)
