"""A test double for the protocol contract between ocr-watcher and vLLM's OpenAI-compatible server.

This is NOT vLLM and runs no model. It speaks the subset the vllm engine uses, strictly: `/health`, `/version`,
`/v1/models` and `/v1/chat/completions`, where it checks the request shape the DeepSeek-OCR recipe
asks for (model, one PNG `image_url` as a base64 data URL plus the prompt text, temperature,
max_tokens, `skip_special_tokens: false`, the n-gram `vllm_xargs`) and answers 400 otherwise, like
a real server would for a malformed request (404 for an unknown model). Like vLLM 0.12-0.16 it
refuses a request whose prompt plus `max_tokens` exceeds `max_model_len` (8192, reported by
/v1/models), counting the prompt as 0.12 does (its text only); and like a server with the n-gram
logits processor loaded it refuses `vllm_xargs: {"ngram_size": 0}` (`processor=False`: answers it,
as a server without the processor does). Answers are canned DeepSeek-style grounding output with
`usage` and `finish_reason`.

Knobs (attributes of FakeVllm, safe to change while it runs): `length_first_n` (answer
finish_reason "length" for the first N requests of each distinct page image), `fail_next(status, n)`,
`drop_next(n)` (close the connection without an answer), `delay_seconds`; counters: `requests`
(pages' requests), `probes` (the engine's processor probes),
`max_concurrent`, `by_temperature`, `log` (recorded requests without image data), `errors`
(request-shape violations).

As a script it stands in for the `vllm` command:
    python -m tests.fake_vllm serve MODEL --host H --port P [other vllm flags, ignored but recorded]
Environment: FAKE_VLLM_RECORD=path (write the argv it got as JSON), FAKE_VLLM_STARTUP_DELAY=s (wait
before listening, like model loading), FAKE_VLLM_REQUIRE_LOGITS_PROCESSOR=1 (exit 1 at start unless
--logits_processors names the DeepSeek-OCR n-gram processor), FAKE_VLLM_DELAY=s (per request).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED_XARGS = {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}
PROMPTS = {"<|grounding|>Convert the document to markdown.", "Free OCR.", "Parse the figure."}
LOGITS_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"


def canned_output(page_id: str) -> str:
    """What DeepSeek-OCR's grounding mode looks like: ref/det tags on a 0-999 scale, then the text."""
    return (
        "<|ref|>title<|/ref|><|det|>[[100, 40, 900, 90]]<|/det|>\n# Stand-in page\n\n"
        f"<|ref|>text<|/ref|><|det|>[[100, 120, 900, 300]]<|/det|>\nText of page {page_id}.\n\n"
        "<|ref|>image<|/ref|><|det|>[[100, 320, 500, 600]]<|/det|>\n\n"
        "<|ref|>table<|/ref|><|det|>[[100, 620, 900, 800]]<|/det|>\n"
        "<table><tr><td>a</td><td>b</td></tr></table>"
    )


MAX_MODEL_LEN = 8192
TEXT_PROMPT_TOKENS = 16  # what vLLM 0.12 counts of our prompt: its text and the chat template


def is_probe(body: dict[str, Any]) -> bool:
    """The processor probe: one text part, one token, ngram_size 0."""
    content = (body.get("messages") or [{}])[0].get("content")
    only_text = isinstance(content, list) and len(content) == 1 and content[0].get("type") == "text"
    return only_text and body.get("max_tokens") == 1 and (body.get("vllm_xargs") or {}).get("ngram_size") == 0


def validate(body: Any, model: str, processor: bool = True) -> tuple[int, str] | None:
    """Why a chat-completions request breaks the contract, as (status, message); None when it keeps it."""
    if not isinstance(body, dict):
        return 400, "body must be a JSON object"
    if body.get("model") != model:
        return 404, f"The model `{body.get('model')}` does not exist."
    ngram_size = (body.get("vllm_xargs") or {}).get("ngram_size")
    if processor and not (isinstance(ngram_size, int) and ngram_size > 0):
        return 400, f"`ngram_size` has to be a strictly positive integer, got {ngram_size}."
    if is_probe(body):
        return None
    messages = body.get("messages")
    if not (isinstance(messages, list) and len(messages) == 1 and messages[0].get("role") == "user"):
        return 400, "expected exactly one user message"
    content = messages[0].get("content")
    if not (isinstance(content, list) and len(content) == 2):
        return 400, "expected content [image_url, text]"
    image, text = content
    if image.get("type") != "image_url" or text.get("type") != "text":
        return 400, "expected an image_url part, then a text part"
    if text.get("text") not in PROMPTS:
        return 400, f"unexpected prompt {text.get('text')!r}"
    url = (image.get("image_url") or {}).get("url", "")
    prefix = "data:image/png;base64,"
    if not url.startswith(prefix):
        return 400, "image_url must be a data:image/png;base64 URL"
    try:
        data = base64.b64decode(url[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        return 400, "image data is not valid base64"
    if not data.startswith(PNG_MAGIC):
        return 400, "image data is not a PNG"
    if body.get("skip_special_tokens") is not False:
        return 400, "skip_special_tokens must be false (grounding tags are special tokens)"
    if body.get("vllm_xargs") != EXPECTED_XARGS:
        return 400, f"vllm_xargs must be {EXPECTED_XARGS}, got {body.get('vllm_xargs')}"
    temperature, max_tokens = body.get("temperature"), body.get("max_tokens")
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        return 400, "temperature must be a number in [0, 2]"
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return 400, "max_tokens must be a positive integer"
    if TEXT_PROMPT_TOKENS + max_tokens > MAX_MODEL_LEN:
        return 400, (
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum context "
            f"length is {MAX_MODEL_LEN} tokens and your request has {TEXT_PROMPT_TOKENS} input tokens "
            f"({max_tokens} > {MAX_MODEL_LEN} - {TEXT_PROMPT_TOKENS})."
        )
    return None


_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 408: "RequestTimeout", 429: "RateLimitError"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """An error in the shape vLLM's server answers with (its ErrorResponse)."""
    kind = _ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


class FakeVllm:
    """The fake server, on a background thread. `port=0` picks a free port."""

    def __init__(
        self, model: str = "deepseek-ai/DeepSeek-OCR", host: str = "127.0.0.1", port: int = 0, processor: bool = True
    ) -> None:
        self.model = model
        self.processor = processor
        self.probes = 0
        self.host = host
        self.port = port
        self.length_first_n = 0
        self.delay_seconds = 0.0
        self.requests = 0
        self.concurrent = 0
        self.max_concurrent = 0
        self.by_temperature: Counter[float] = Counter()
        self.log: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._fail: list[int] = []
        self._drop = 0
        self._seen: Counter[str] = Counter()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_next(self, status: int, count: int = 1) -> None:
        with self._lock:
            self._fail.extend([status] * count)

    def drop_next(self, count: int = 1) -> None:
        with self._lock:
            self._drop += count

    def start(self) -> FakeVllm:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server((self.host, self.port), handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-vllm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a killed server: the listener closes and so do open keep-alive connections."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            with self._lock:
                open_connections, self._connections = list(self._connections), set()
            for connection in open_connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._httpd = None

    def __enter__(self) -> FakeVllm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- called by the handler -----------------------------------------------------------------
    def _enter(self) -> tuple[str, int | None]:
        """Count a chat request; what to do with it: ("drop"|"fail"|"ok", status)."""
        with self._lock:
            self.requests += 1
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            if self._drop:
                self._drop -= 1
                return "drop", None
            if self._fail:
                return "fail", self._fail.pop(0)
            return "ok", None

    def _leave(self) -> None:
        with self._lock:
            self.concurrent -= 1

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        if is_probe(body):  # a server without the processor generates its one token
            return _answer(self.model, "probe", "x", "length", TEXT_PROMPT_TOKENS, 1)
        image_url = body["messages"][0]["content"][0]["image_url"]["url"]
        page_id = hashlib.sha256(image_url.encode()).hexdigest()[:12]
        with self._lock:
            self._seen[page_id] += 1
            looped = self._seen[page_id] <= self.length_first_n
            self.by_temperature[float(body["temperature"])] += 1
            self.log.append({k: v for k, v in body.items() if k != "messages"} | {"page_id": page_id})
        text = ("the the " * 200).strip() if looped else canned_output(page_id)
        completion_tokens = body["max_tokens"] if looped else len(text.split())
        finish = "length" if looped else "stop"
        return _answer(self.model, f"{page_id}-{self.requests}", text, finish, 273, completion_tokens)


def _answer(model: str, answer_id: str, text: str, finish: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{answer_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the engine opens hundreds of connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Dropped connections (a knob) and clients that go away are expected here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn serves it
    fake: FakeVllm

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, None)
        elif self.path == "/version":
            self._send(200, {"version": "contract-double"})
        elif self.path == "/v1/models":
            card = {"id": self.fake.model, "object": "model", "max_model_len": MAX_MODEL_LEN}
            self._send(200, {"object": "list", "data": [card]})
        else:
            self._send(404, error_body(404, "Not Found"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            self._send(404, error_body(404, "Not Found"))
            return
        action, status = self.fake._enter()
        try:
            if action == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if self.fake.delay_seconds:
                time.sleep(self.fake.delay_seconds)
            if action == "fail":
                self._send(status or 500, error_body(status or 500, f"injected HTTP {status}"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, error_body(400, "body is not JSON"))
                return
            if isinstance(body, dict) and is_probe(body):  # counted apart from the pages' requests
                with self.fake._lock:
                    self.fake.probes += 1
                    self.fake.requests -= 1
            problem = validate(body, self.fake.model, self.fake.processor)
            if problem is not None:
                if not is_probe(body):  # refusing the probe is what a server with the processor does
                    self.fake.errors.append(problem[1])
                self._send(problem[0], error_body(*problem))
                return
            self._send(200, self.fake._complete(body))
        finally:
            self.fake._leave()


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fake-vllm", description="a protocol test double, not vLLM")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None)
    args, unknown = parser.parse_known_args(argv)
    record = os.environ.get("FAKE_VLLM_RECORD")
    if record:
        with open(record, "w", encoding="utf-8") as handle:
            json.dump({"argv": argv, "ignored": unknown}, handle)
    if os.environ.get("FAKE_VLLM_REQUIRE_LOGITS_PROCESSOR") == "1" and not _has_processor(argv):
        print(f"ERROR fake-vllm: --logits_processors {LOGITS_PROCESSOR} is required", file=sys.stderr)
        return 1
    # vLLM logs its non-default arguments once at start; the supervisor reads the logits processor there.
    configured = {"model_tag": args.model, "model": args.model}
    if _has_processor(argv):
        configured["logits_processors"] = [LOGITS_PROCESSOR]
    print(f"INFO fake-vllm non-default args: {configured!r}", flush=True)
    time.sleep(float(os.environ.get("FAKE_VLLM_STARTUP_DELAY") or 0))
    fake = FakeVllm(args.served_model_name or args.model, host=args.host, port=args.port)
    fake.processor = _has_processor(argv)
    fake.delay_seconds = float(os.environ.get("FAKE_VLLM_DELAY") or 0)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    fake.start()
    print(f"INFO fake-vllm serving {fake.model} on {fake.url} (a test double, not vLLM)", flush=True)
    while not stop.wait(0.5):
        pass
    fake.stop()
    print("INFO fake-vllm stopped", flush=True)
    return 0


def _has_processor(argv: list[str]) -> bool:
    for index, arg in enumerate(argv):
        if arg in ("--logits_processors", "--logits-processors") and index + 1 < len(argv):
            return LOGITS_PROCESSOR in argv[index + 1]
        if arg.startswith(("--logits_processors=", "--logits-processors=")):
            return LOGITS_PROCESSOR in arg
    return False


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
