"""How a kernel (or the admin CLI) reaches the broker: a Unix socket, or HTTP through the hub.

``Address.parse`` reads ``ExecConfig.broker``. ``open_stream`` sends one request and returns
a ``Stream`` of the broker's events; ``ask`` sends one and returns its one reply. Over the
socket the broker knows the caller by its uid (``SO_PEERCRED``); over HTTP by the hub token
sent with every request (``Authorization: token ...``), which the broker checks with the hub.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any

from jupyter_exec.errors import BackendUnavailableError

from .wire import VERSION, Request, decode, encode, raise_for

__all__ = ["Address", "Stream", "ask", "open_stream"]

API_PATH = "api/v1"
_FIX = "check ExecConfig.broker / JX_BROKER, and that the broker runs (ask your administrator)"


@dataclass(frozen=True)
class Address:
    """Where the broker listens: ``unix:///path`` or ``http(s)://host[:port]/prefix/``."""

    scheme: str  # unix | http | https
    path: str  # the socket's path, or the URL's path (ending in /)
    host: str = ""
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Address:
        url = urllib.parse.urlsplit(text.strip())
        if url.scheme == "unix" and url.path.startswith("/"):
            return cls("unix", url.path)
        if url.scheme in ("http", "https") and url.hostname:
            return cls(url.scheme, url.path.rstrip("/") + "/", url.hostname, url.port)
        raise BackendUnavailableError(
            "container",
            f"ExecConfig.broker = {text!r} is not a broker address",
            "write unix:///run/jupyter-exec/broker.sock or http://127.0.0.1:8000/services/jupyter-exec/",
        )

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return f"{self.scheme}://{self.host}{f':{self.port}' if self.port else ''}{self.path}"


class Stream:
    """The events of one request, read line by line; ``close`` hangs up (the broker then stops
    the request's run, if it has one)."""

    def __init__(self, reader: Any, closer: Any, address: Address) -> None:
        self._reader, self._closer, self.address = reader, closer, address

    def next(self) -> dict[str, Any] | None:
        """The next event; None when the broker hung up."""
        try:
            line = self._reader.readline()
        except (OSError, http.client.HTTPException, ValueError):
            return None
        return decode(line) if line else None

    def close(self) -> None:
        try:
            self._closer()
        except OSError:
            pass


def open_stream(address: Address, request: Request, token: str = "", timeout: float | None = None) -> Stream:
    """Send ``request`` (the version is added); the stream of the broker's answer."""
    body = encode({"v": VERSION, **request})
    try:
        if address.scheme == "unix":
            return _unix(address, body, timeout)
        return _http(address, body, token, timeout)
    except OSError as error:
        raise BackendUnavailableError(
            "container", f"the broker at {address} does not answer ({error.strerror or error})", _FIX
        ) from None


def _unix(address: Address, body: bytes, timeout: float | None) -> Stream:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address.path)
        sock.sendall(body)
    except OSError:
        sock.close()
        raise
    reader = sock.makefile("rb")

    def close() -> None:
        reader.close()
        sock.close()

    return Stream(reader, close, address)


def _http(address: Address, body: bytes, token: str, timeout: float | None) -> Stream:
    made = http.client.HTTPSConnection if address.scheme == "https" else http.client.HTTPConnection
    connection = made(address.host, address.port, timeout=timeout)
    headers = {"Content-Type": "application/json", "Authorization": f"token {token}"}
    try:
        connection.request("POST", address.path + API_PATH, body=body, headers=headers)
        response = connection.getresponse()
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        raise OSError(str(error)) from None
    if response.status != 200 and "json" not in (response.getheader("Content-Type") or ""):
        text = response.read(2000).decode(errors="replace")
        connection.close()
        message = json.dumps(
            {
                "t": "error",
                "status": response.status,
                "kind": "BrokerError",
                "message": f"HTTP {response.status}: {text}",
            }
        )
        return Stream(_Lines([message.encode() + b"\n"]), lambda: None, address)
    return Stream(response, connection.close, address)


class _Lines:
    """A reader over lines already read."""

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    def readline(self) -> bytes:
        return self._lines.pop(0) if self._lines else b""


def ask(address: Address, request: Request, token: str = "", timeout: float = 30) -> dict[str, Any]:
    """The one reply to ``request``; an error event is raised as the error it names."""
    stream = open_stream(address, request, token, timeout)
    try:
        event = stream.next()
    finally:
        stream.close()
    if event is None:
        raise BackendUnavailableError("container", f"the broker at {address} hung up without an answer", _FIX)
    raise_for(event)
    return event
