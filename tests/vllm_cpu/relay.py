"""HoldingRelay: a second "server" in front of the real one, busy for good: it never answers a page.

What a real vLLM cannot be made to do on demand is to be slow for one test: this relay forwards
everything to the real server (/health, /v1/models, the processor probe with `ngram_size` 0, so the
daemon finds it healthy and with the processor loaded, as it would find a busy GPU server) but holds
every other chat completion without answering until the client gives up or the relay is closed. It
counts what it held; nothing held ever reaches the real server.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FORWARD_TIMEOUT_S = 120.0


class HoldingRelay:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.held = 0  # page requests received and never answered
        self.forwarded: list[str] = []  # "METHOD path" of what went to the real server
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="holding-relay", daemon=True)

    def __enter__(self) -> HoldingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
                pass

            def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
                relay.forward(self, None)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/chat/completions" and not is_processor_probe(body):
                    with relay._lock:
                        relay.held += 1
                    relay._release.wait()  # no answer: the client's timeout ends it
                    self.close_connection = True
                    return
                relay.forward(self, body)

        return Handler

    def forward(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        with self._lock:
            self.forwarded.append(f"{handler.command} {handler.path}")
        request = urllib.request.Request(self.upstream + handler.path, data=body, method=handler.command)
        if body is not None:
            request.add_header("Content-Type", handler.headers.get("Content-Type", "application/json"))
        try:
            with urllib.request.urlopen(request, timeout=FORWARD_TIMEOUT_S) as answer:
                status, payload, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
        except urllib.error.HTTPError as refused:
            status, payload, kind = refused.code, refused.read(), refused.headers.get("Content-Type", "")
        handler.send_response(status)
        handler.send_header("Content-Type", kind or "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


def is_processor_probe(body: bytes) -> bool:
    """The daemon's probe for the n-gram processor asks with ngram_size 0 (engines/vllm_pool.py)."""
    try:
        xargs = json.loads(body).get("vllm_xargs") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(xargs, dict) and xargs.get("ngram_size") == 0
