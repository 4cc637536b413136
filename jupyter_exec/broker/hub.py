"""The broker as a JupyterHub service: HTTP, through the hub's proxy, one user per hub token.

The hub starts it (``c.JupyterHub.services``, docs/broker.md) with ``JUPYTERHUB_SERVICE_URL``
(where to listen) and ``JUPYTERHUB_API_URL`` (where tokens are checked) in its environment. A
request is ``POST {prefix}api/v1`` with the wire format's JSON document as its body and the
user's token in ``Authorization: token ...``; the answer is the same JSON lines as on the Unix
socket, streamed (the body ends when the connection closes). Anything else is 404, a body
larger than ``max_request`` 413, a missing or foreign token 401/403, all as one error event.
"""

from __future__ import annotations

import http.server
import select
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from jupyter_exec.backends.broker import wire
from jupyter_exec.backends.broker.wire import BrokerError

from .hubauth import HubAuth
from .ops import handle
from .service import Broker

__all__ = ["HubServer"]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # the body of a streamed answer ends when the connection does

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are in the audit log; nothing on stderr for each."""

    def do_POST(self) -> None:
        channel = _HttpChannel(self)
        try:
            if not self.path.split("?", 1)[0].endswith("/" + "api/v1"):
                raise BrokerError(404, f"no such endpoint {self.path}; POST {{prefix}}api/v1")
            length = int(self.headers.get("Content-Length") or 0)
            if length > self.server.broker.settings.max_request:
                raise BrokerError(413, f"request larger than {self.server.broker.settings.max_request} bytes")
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            identity = self.server.auth.identity(token.strip() if scheme.lower() == "token" else "")
            doc = wire.decode(self.rfile.read(length))
        except BrokerError as error:
            channel.send(wire.error_event(error))
            return
        except ValueError:
            channel.send(wire.error_event(BrokerError(400, "Content-Length: expected a number")))
            return
        try:
            handle(self.server.broker, identity, doc, channel)
        except OSError:
            pass  # the client went away: its run (if any) was stopped by the run's own loop

    def do_GET(self) -> None:
        _HttpChannel(self).send(wire.error_event(BrokerError(404, "the broker answers POST {prefix}api/v1")))


class _HttpChannel:
    """One request's events as a streamed answer (``service.Channel``)."""

    def __init__(self, handler: _Handler) -> None:
        self.handler, self.started = handler, False
        self.lock = threading.Lock()

    def send(self, event: wire.Event) -> None:
        with self.lock:
            if not self.started:
                self.handler.send_response(_status(event))
                self.handler.send_header("Content-Type", "application/x-ndjson")
                self.handler.send_header("Cache-Control", "no-store")
                self.handler.end_headers()
                self.started = True
            self.handler.wfile.write(wire.encode(event))
            self.handler.wfile.flush()

    def gone(self) -> bool:
        sock = self.handler.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (OSError, ValueError):
            return True


def _status(event: Mapping[str, Any]) -> int:
    """The HTTP status of an answer: an error's own, else 200."""
    return int(event.get("status", 500)) if event.get("t") == "error" else 200


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], broker: Broker, auth: HubAuth) -> None:
        self.broker, self.auth = broker, auth
        super().__init__(address, _Handler)


class HubServer:
    """Serves ``broker`` at ``url`` (``JUPYTERHUB_SERVICE_URL``), tokens checked with ``auth``."""

    def __init__(self, broker: Broker, url: str, auth: HubAuth) -> None:
        parsed = urllib.parse.urlsplit(url)
        if not parsed.hostname or not parsed.port:
            raise BrokerError(400, f"cannot listen at {url!r}: expected http://HOST:PORT (JUPYTERHUB_SERVICE_URL)")
        self.url = url
        self._server = _Server((parsed.hostname, parsed.port), broker, auth)

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.5)

    def close(self) -> None:
        threading.Thread(target=self._server.shutdown, daemon=True).start()
