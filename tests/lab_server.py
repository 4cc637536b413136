"""The servers of the network tests, run inside the network namespace ``network_lab`` makes.

``python lab_server.py ROOT CERT KEY ADDRESS...``: on each address, HTTP on port 80 and HTTPS
on 443 serving ROOT (``/bytes/N`` sends N bytes, for the benchmark), and a TCP echo on 7000
(a protocol that is neither HTTP nor TLS). Prints ``ready`` once every socket listens.
"""

import functools
import http.server
import socketserver
import ssl
import sys
import threading

_BLOCK = b"x" * (1 << 20)


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/bytes/"):
            size = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            while size > 0:
                chunk = _BLOCK[: min(size, len(_BLOCK))]
                self.wfile.write(chunk)
                size -= len(chunk)
            return
        if self.path == "/host":
            body = (self.headers.get("Host") or "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"echo ready\n")
        while data := self.request.recv(65536):
            self.request.sendall(data)


def main() -> None:
    root, cert, key, *addresses = sys.argv[1:]
    handler = functools.partial(Handler, directory=root)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    servers: list[socketserver.BaseServer] = []
    for address in addresses:
        servers.append(http.server.ThreadingHTTPServer((address, 80), handler))
        secure = http.server.ThreadingHTTPServer((address, 443), handler)
        secure.socket = tls.wrap_socket(secure.socket, server_side=True, do_handshake_on_connect=False)
        servers.append(secure)
        servers.append(socketserver.ThreadingTCPServer((address, 7000), Echo))
    for server in servers:
        server.daemon_threads = True  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
