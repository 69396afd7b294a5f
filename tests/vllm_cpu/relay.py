"""SlowRelay: a second "server" in front of the real one, slower by a fixed delay per page, or busy for good.

What a real vLLM cannot be made to do on demand is to be slow for one test: this relay forwards
everything to the real server at once (/health, /v1/models, the processor probe with `ngram_size` 0, so
the daemon finds it healthy and with the processor loaded, as it would find a busy GPU server) but holds
every other chat completion (a page) for `delay_s` before forwarding it, or, with `delay_s` None, without
ever answering until the client gives up or the relay is closed; nothing held so ever reaches the real
server. It counts the pages it received and those it forwarded.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FORWARD_TIMEOUT_S = 600.0


class SlowRelay:
    def __init__(self, upstream: str, delay_s: float | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_s = delay_s
        self.pages = 0  # page requests received
        self.pages_forwarded = 0
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="holding-relay", daemon=True)

    def __enter__(self) -> SlowRelay:
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
                        relay.pages += 1
                    # Set by the relay's close; with no delay, the client's timeout ends the wait first.
                    if relay._release.wait(relay.delay_s) or relay.delay_s is None:
                        self.close_connection = True
                        return
                    with relay._lock:
                        relay.pages_forwarded += 1
                relay.forward(self, body)

        return Handler

    def forward(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
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
