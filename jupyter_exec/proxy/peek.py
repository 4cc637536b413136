"""What the first bytes of a connection say: a TLS ClientHello's server name, an HTTP head.

Pure functions over bytes, so the proxy's checks can be tested without a socket. The proxy
reads until ``Incomplete`` stops being raised (within its size bound), then decides.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HTTP_METHODS", "Head", "Incomplete", "looks_like_http", "parse_head", "server_name"]

HTTP_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT")


class Incomplete(Exception):
    """More bytes are needed to decide."""


def looks_like_tls(data: bytes) -> bool:
    return data[:1] == b"\x16"  # a handshake record


def looks_like_http(data: bytes) -> bool:
    return any(data.startswith(method + b" ") for method in HTTP_METHODS)


def server_name(data: bytes) -> str | None:
    """The SNI of the ClientHello ``data`` begins with (lower case), None if it names none.
    ``Incomplete`` while the ClientHello is cut short; ``ValueError`` if it is not one."""
    handshake = b""
    pos = 0
    while True:
        if len(data) < pos + 5:
            raise Incomplete
        if data[pos] != 0x16:
            raise ValueError("not a TLS handshake record")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if len(data) < pos + 5 + length:
            raise Incomplete
        handshake += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
            break
    if handshake[0] != 1:
        raise ValueError("not a ClientHello")
    body = handshake[4 : 4 + int.from_bytes(handshake[1:4], "big")]
    at = 2 + 32  # version, random
    at += 1 + body[at]  # session id
    at += 2 + int.from_bytes(body[at : at + 2], "big")  # cipher suites
    at += 1 + body[at]  # compression methods
    if at + 2 > len(body):
        return None  # no extensions
    end = min(len(body), at + 2 + int.from_bytes(body[at : at + 2], "big"))
    at += 2
    while at + 4 <= end:
        kind, size = int.from_bytes(body[at : at + 2], "big"), int.from_bytes(body[at + 2 : at + 4], "big")
        if kind == 0:  # server_name: a list of (type, name); type 0 is a host name
            names = body[at + 4 : at + 4 + size]
            inner = 2
            while inner + 3 <= len(names):
                name_type, name_size = names[inner], int.from_bytes(names[inner + 1 : inner + 3], "big")
                if name_type == 0:
                    return names[inner + 3 : inner + 3 + name_size].decode("ascii").lower().rstrip(".")
                inner += 3 + name_size
            return None
        at += 4 + size
    return None


@dataclass(frozen=True)
class Head:
    """An HTTP request's line and headers."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key.lower() == name]
        return found[0] if len(found) == 1 else None  # two Host headers agree with nothing


def parse_head(data: bytes) -> tuple[Head, bytes]:
    """The head ``data`` begins with and what follows it; ``Incomplete`` before its blank line,
    ``ValueError`` if it is not an HTTP/1 request."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise Incomplete
    lines = data[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1 request line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        key, colon, value = line.partition(":")
        if not colon or not key or key != key.strip():
            raise ValueError(f"a malformed header line: {line[:80]!r}")
        headers.append((key, value.strip()))
    return Head(parts[0], parts[1], parts[2], tuple(headers)), data[end + 4 :]
