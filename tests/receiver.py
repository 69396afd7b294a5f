"""A webhook receiver for the tests: a real HTTP server on a free local port, recording every POST,
answering as a test tells it (fail the first tries of each delivery, answer slowly, stay down)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    delivery_id: str
    headers: dict[str, str]
    raw: bytes
    answered: int
    path: str = ""

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)

    def signature_ok(self, secret: str, max_age: float = 300.0) -> bool:
        """What a receiver does: recompute HMAC-SHA256 over `<timestamp>.<body>`, compare in constant
        time, and refuse an old timestamp (a replay)."""
        stamp = self.headers.get("x-ocr-watcher-timestamp", "")
        given = self.headers.get("x-ocr-watcher-signature", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > max_age:
            return False
        want = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + self.raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, given)


@dataclass
class Receiver:
    fail_first: int = 0  # answer 500 to the first N tries of each delivery id
    status: int = 200  # then this
    delay: float = 0.0  # seconds before each answer
    port: int = field(default_factory=lambda: free_port())
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                delivery = self.headers.get("X-OCR-Watcher-Delivery", "")
                time.sleep(receiver.delay)
                with receiver._lock:
                    seen = sum(1 for r in receiver.received if r.delivery_id == delivery)
                    code = 500 if seen < receiver.fail_first else receiver.status
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(delivery, headers, raw, code, self.path))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def accepted_ids(self) -> set[str]:
        return {r.delivery_id for r in self.accepted()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
