"""A small HTTP server for /metrics, /healthz and /readyz, on a daemon thread.

It knows nothing of OCR: it maps GET paths to functions that return a `Response`. Those functions
run on the server's threads, so they may only read state that is safe to read from there.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

log = logging.getLogger("ocr_watcher.http")
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT


def text(status: int, message: str) -> Response:
    return Response(status, message.encode("utf-8") + b"\n")


Route = Callable[[], Response]


def respond(routes: Mapping[str, Route], raw_path: str) -> Response:
    """The response for one GET: the route's, 404 for an unknown path, 500 if the route fails."""
    route = routes.get(urlsplit(raw_path).path)
    if route is None:
        return text(404, "not found; try " + " ".join(sorted(routes)))
    try:
        return route()
    except Exception:
        log.exception("GET %s failed", raw_path)
        return text(500, "internal error (see the daemon's log)")


class _Handler(BaseHTTPRequestHandler):
    routes: Mapping[str, Route] = {}
    server_version = "ocr-watcher"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self._send(respond(self.routes, self.path), body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(respond(self.routes, self.path), body=False)

    def _send(self, response: Response, *, body: bool) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not hold up the daemon's exit
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can hang; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpServer:
    """Serves `routes` (path -> function) on host:port; port 0 picks a free port."""

    def __init__(self, host: str, port: int, routes: Mapping[str, Route]) -> None:
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (raising OSError if the address is taken) and serve on a daemon thread."""
        handler = type("Handler", (_Handler,), {"routes": self.routes})
        server_class = _Server6 if ":" in self.host else _Server
        self._server = server_class((self.host, self.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def base_url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
