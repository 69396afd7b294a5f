"""The vllm engine: DeepSeek-OCR behind one or more vLLM OpenAI-compatible servers, over HTTP.

Nothing of the GPU stack is imported here: a page is a PNG sent as a base64 `image_url` to
POST /v1/chat/completions, with the DeepSeek-OCR recipe's sampling settings (temperature 0, the
n-gram logits processor's `vllm_xargs`, `skip_special_tokens: false`). Servers are either given by
URL or one managed server, started by the supervisor; this module only talks to them.

- One shared `httpx.Client` (thread-safe) with a connection pool sized to `max_in_flight`: the
  pipeline calls `recognize` from that many threads, and the server batches them on the GPU.
- A background thread polls each server's /v1/models every few seconds; `health()` only reads what
  it found. Pages go round-robin to the healthy servers that serve the model.
- Connection errors and 5xx are retried with exponential back-off and jitter for up to
  `connect_retry_max_seconds` (a vLLM restart must not fail jobs); a 4xx fails the page.
- `finish_reason == "length"` means the model looped: the page is asked again at each of
  `loop_retry_temperatures`; if it still loops, the output carries a warning and
  `extra["fallback"] = "text_layer"`, asking the pipeline to use the PDF's text layer instead.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ocr_watcher.engines.base import PageError, PageInput, PageOutput, RenderSpec
from ocr_watcher.engines.deepseek_markdown import to_markdown
from ocr_watcher.engines.markdown import text_layer_to_markdown

log = logging.getLogger("ocr_watcher.engines.vllm")

PROMPTS = {
    "markdown": "<|grounding|>Convert the document to markdown.",
    "free": "Free OCR.",
    "figure": "Parse the figure.",
}
# The n-gram repetition guard of vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor;
# 128821/128822 are <td> and </td>, which tables legitimately repeat.
NGRAM_XARGS: dict[str, Any] = {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_RETRYABLE_4XX = {408, 429}
_BODY_TAIL = 300
_HEALTH_TIMEOUT_S = 3.0


# -- pure parts ----------------------------------------------------------------------------------
def build_request(model: str, prompt: str, image_b64: str, *, temperature: float, max_tokens: int) -> dict[str, Any]:
    """The chat-completions body for one page (vLLM inserts the <image> token for the image part)."""
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_b64}"}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "skip_special_tokens": False,
        "vllm_xargs": dict(NGRAM_XARGS),
    }


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def parse_completion(body: Any) -> Completion:
    """The first choice of a chat-completions answer; ValueError when the answer has another shape."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"] or ""
        usage = body.get("usage") or {}
        return Completion(
            text=str(text),
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a chat-completions answer ({type(exc).__name__}: {exc})") from exc


def backoff_delay(attempt: int, *, initial: float, maximum: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential back-off with full jitter: a random wait in [initial/2, min(maximum, initial*2^attempt)]."""
    ceiling = min(maximum, initial * (2 ** min(attempt, 30)))
    return max(initial / 2, ceiling * rand())


def served_models(body: Any) -> frozenset[str]:
    """Model ids from a /v1/models answer."""
    try:
        return frozenset(str(item["id"]) for item in body["data"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a /v1/models answer ({exc})") from exc


# -- servers -------------------------------------------------------------------------------------
@dataclass
class _Server:
    url: str
    healthy: bool | None = None  # None: not checked yet
    reason: str | None = "not checked yet"
    models: frozenset[str] | None = None  # None: unknown


class ServerPool:
    """The servers, their health (kept by a background thread) and round-robin choice among them.

    One pool can serve several engines (profiles with another model or mode share the servers)."""

    def __init__(
        self,
        urls: list[str],
        *,
        max_in_flight: int,
        request_timeout: float,
        health_interval: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not urls:
            raise ValueError("a vllm server pool needs at least one server URL")
        self._servers = [_Server(url.rstrip("/")) for url in urls]
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._stop = threading.Event()
        self.health_interval = health_interval
        limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        timeout = httpx.Timeout(request_timeout, connect=connect_timeout, pool=None)
        # trust_env=False: a proxy meant for the internet must not sit between us and the GPU servers.
        self.client = httpx.Client(limits=limits, timeout=timeout, trust_env=False)
        # Health checks get their own connections, so that they never queue behind pages, and a new
        # one each time, so that they test the listening socket rather than an old keep-alive.
        no_keepalive = httpx.Limits(max_connections=4, max_keepalive_connections=0)
        self._probe = httpx.Client(timeout=_HEALTH_TIMEOUT_S, limits=no_keepalive, trust_env=False)
        self._thread: threading.Thread | None = None

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self._servers]

    def start(self) -> None:
        """Check every server once now, then keep checking in the background."""
        self.check_all()
        self._thread = threading.Thread(target=self._health_loop, name="vllm-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_HEALTH_TIMEOUT_S + 1)
        self.client.close()
        self._probe.close()

    def _health_loop(self) -> None:
        while not self._stop.wait(self.health_interval):
            self.check_all()

    def check_all(self) -> None:
        for server in self._servers:
            if self._stop.is_set():
                return
            self._check(server)

    def _check(self, server: _Server) -> None:
        try:
            response = self._probe.get(f"{server.url}/v1/models")
            response.raise_for_status()
            models = served_models(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            self._set(server, False, f"{server.url}: {_describe(exc)}")
        else:
            self._set(server, True, None, models)

    def _set(self, server: _Server, healthy: bool, reason: str | None, models: frozenset[str] | None = None) -> None:
        with self._lock:
            if healthy != server.healthy:
                log.log(logging.INFO if healthy else logging.WARNING, "vllm server %s", reason or f"{server.url} is up")
            server.healthy, server.reason = healthy, reason
            if models is not None:
                server.models = models

    def mark_down(self, url: str, reason: str) -> None:
        """A request failed to connect: send no more pages there until it answers again."""
        for server in self._servers:
            if server.url == url:
                self._set(server, False, f"{url}: {reason}")

    def mark_up(self, url: str) -> None:
        for server in self._servers:
            if server.url == url and server.healthy is not True:
                self._set(server, True, None)

    def pick(self, model: str) -> str:
        """The next healthy server serving `model`, round-robin. With none healthy, the next one of all:
        the request itself then probes it, so a restarted server is used before the next health check."""
        with self._lock:
            start = next(self._turn)
            order = [self._servers[(start + i) % len(self._servers)] for i in range(len(self._servers))]
            for server in order:
                if server.healthy is not False and (server.models is None or model in server.models):
                    return server.url
            return order[0].url

    def problem(self, model: str) -> str | None:
        """None when a server that serves `model` is up, else why not (for /readyz)."""
        with self._lock:
            servers = list(self._servers)
        reasons = []
        for server in servers:
            if server.healthy and (server.models is None or model in server.models):
                return None
            if server.healthy:
                served = ", ".join(sorted(server.models or ())) or "no model"
                reasons.append(f"{server.url} serves {served}, not {model}")
            else:
                reasons.append(server.reason or f"{server.url}: not checked yet")
        return "no vllm server can take pages: " + "; ".join(reasons)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- the engine ----------------------------------------------------------------------------------
@dataclass
class _Call:
    """One chat-completions exchange, retried until it got an answer."""

    completion: Completion
    server: str
    attempts: int
    seconds: float


@dataclass
class _Tally:
    attempts: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    temperatures: list[float] = field(default_factory=list)

    def add(self, call: _Call, temperature: float) -> None:
        self.attempts += call.attempts
        self.seconds += call.seconds
        self.prompt_tokens += call.completion.prompt_tokens
        self.completion_tokens += call.completion.completion_tokens
        self.temperatures.append(temperature)


class VllmEngine:
    name = "vllm"

    def __init__(
        self,
        servers: list[str] | None = None,
        *,
        model: str = "deepseek-ai/DeepSeek-OCR",
        mode: str = "markdown",
        max_tokens: int = 8192,
        max_in_flight: int = 256,
        request_timeout: float = 600.0,
        connect_retry_max_seconds: float = 600.0,
        loop_retry_temperatures: list[float] | tuple[float, ...] = (0.2, 0.5),
        dpi: int = 144,
        max_side_px: int = 3000,
        health_interval: float = 5.0,
        pool: ServerPool | None = None,
        managed: Any = None,  # the supervised `vllm serve` (vllm_server.ManagedServer), when ours
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        if mode not in PROMPTS:
            raise ValueError(f"vllm mode {mode!r} is not one of {', '.join(PROMPTS)}")
        if pool is None:
            pool = ServerPool(
                list(servers or []),
                max_in_flight=max_in_flight,
                request_timeout=request_timeout,
                health_interval=health_interval,
            )
            pool.start()
            self._owns_pool = True
        else:
            self._owns_pool = False
        self.pool = pool
        self.managed = managed
        self.model: str | None = model
        self.mode = mode
        self.prompt = PROMPTS[mode]
        self.max_tokens = max_tokens
        self.connect_retry_max_seconds = connect_retry_max_seconds
        self.temperatures = [0.0, *loop_retry_temperatures]
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.render_spec = RenderSpec(
            "image", dpi=dpi, max_side_px=max_side_px, grayscale=False, image_format="png", text_layer=True
        )
        self.concurrency = max_in_flight

    # -- recognise -------------------------------------------------------------------------------
    def recognize(self, page: PageInput) -> PageOutput:
        image_b64 = self._read_png(page)
        tally = _Tally()
        call: _Call | None = None
        for temperature in self.temperatures:
            body = build_request(
                self.model or "", self.prompt, image_b64, temperature=temperature, max_tokens=self.max_tokens
            )
            call = self._exchange(page, json.dumps(body).encode())
            del body
            tally.add(call, temperature)
            if call.completion.finish_reason != "length":
                break
        assert call is not None
        del image_b64
        return self._output(page, call, tally)

    def _read_png(self, page: PageInput) -> str:
        if page.image_path is None:
            raise PageError(f"page {page.page}: the vllm engine needs a rendered PNG, got none")
        try:
            data = page.image_path.read_bytes()
        except OSError as exc:
            raise PageError(f"page {page.page}: cannot read the rendered page {page.image_path}: {exc}") from exc
        if not data.startswith(_PNG_MAGIC):
            raise PageError(f"page {page.page}: {page.image_path} is not a PNG (the vllm engine asks for png)")
        return base64.b64encode(data).decode("ascii")

    def _exchange(self, page: PageInput, content: bytes) -> _Call:
        """POST one request until a server answers it: connection errors and 5xx are retried with
        back-off while time is left; a 4xx or a malformed answer fails the page."""
        started = time.monotonic()
        deadline = started + self.connect_retry_max_seconds
        attempt = 0
        while True:
            attempt += 1
            url = self.pool.pick(self.model or "")
            problem = self._post(page, url, content)
            if isinstance(problem, Completion):
                return _Call(problem, url, attempt, time.monotonic() - started)
            delay = backoff_delay(attempt - 1, initial=self.backoff_initial, maximum=self.backoff_max)
            if time.monotonic() + delay > deadline:
                raise PageError(
                    f"page {page.page}: no vllm server answered after {attempt} attempts in "
                    f"{time.monotonic() - started:.0f} s (vllm.connect_retry_max_seconds); last: {problem}"
                )
            log.debug("page %d: %s; retrying in %.2f s", page.page, problem, delay)
            time.sleep(delay)

    def _post(self, page: PageInput, url: str, content: bytes) -> Completion | str:
        """One attempt: the completion, or why it is worth retrying (a string); PageError otherwise."""
        try:
            response = self.pool.client.post(
                f"{url}/v1/chat/completions", content=content, headers={"Content-Type": "application/json"}
            )
        except httpx.TimeoutException as exc:
            if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
                self.pool.mark_down(url, _describe(exc))
                return f"{url}: {_describe(exc)}"
            raise PageError(f"page {page.page}: {url} gave no answer in time ({_describe(exc)})") from exc
        except httpx.TransportError as exc:  # refused, reset, dropped mid-answer: the server is (re)starting
            self.pool.mark_down(url, _describe(exc))
            return f"{url}: {_describe(exc)}"
        status = response.status_code
        if status >= 500 or status in _RETRYABLE_4XX:
            return f"{url}: HTTP {status} {response.text[:_BODY_TAIL]}"
        if status >= 400:
            raise PageError(f"page {page.page}: {url} refused the request: HTTP {status} {response.text[:_BODY_TAIL]}")
        self.pool.mark_up(url)
        try:
            return parse_completion(response.json())
        except ValueError as exc:
            raise PageError(f"page {page.page}: {url} answered something unexpected: {exc}") from exc

    # -- output ----------------------------------------------------------------------------------
    def _output(self, page: PageInput, call: _Call, tally: _Tally) -> PageOutput:
        markdown, figures, warnings = self._convert(call.completion.text, page)
        extra: dict[str, Any] = {
            "model": self.model,
            "mode": self.mode,
            "server": call.server,
            "finish_reason": call.completion.finish_reason,
            "temperature": tally.temperatures[-1],
            "attempts": tally.attempts,
            "seconds_request": round(tally.seconds, 4),
            "prompt_tokens": tally.prompt_tokens,
            "completion_tokens": tally.completion_tokens,
        }
        if figures:
            extra["figures"] = figures
        temps = ", ".join(f"{t:g}" for t in tally.temperatures)
        if call.completion.finish_reason == "length":
            looped = f"the model repeated itself until max_tokens at every temperature tried ({temps})"
            extra["fallback"] = "text_layer"
            if page.text and page.text.strip():  # the renderer passed the text layer along
                markdown = text_layer_to_markdown(page.text)
                extra.pop("figures", None)
                extra["fallback_applied"] = True
                warnings.append(f"{looped}; the PDF's text layer is used instead")
            else:
                extra["fallback_applied"] = False
                warnings.append(f"{looped}; its output is cut off, and the page has no text layer to use instead")
        elif len(tally.temperatures) > 1:
            warnings.append(
                f"the model repeated itself at temperature 0; recognised at temperature {tally.temperatures[-1]:g}"
            )
        return PageOutput(markdown=markdown, engine=self.name, model=self.model, warnings=warnings, extra=extra)

    def _convert(self, text: str, page: PageInput) -> tuple[str, list[dict[str, Any]], list[str]]:
        # Links relative to pages/NNNN.md; assembly makes them relative to result.md.
        converted = to_markdown(text, page.width, page.height, page=page.page, link_prefix="../images/")
        figures = [{"name": figure.name, "box_px": list(figure.box_px)} for figure in converted.figures]
        return converted.markdown, figures, list(converted.warnings)

    # -- state -----------------------------------------------------------------------------------
    def health(self) -> str | None:
        if self.managed is not None and (problem := self.managed.health()) is not None:
            return problem
        return self.pool.problem(self.model or "")

    def close(self) -> None:
        if self._owns_pool:
            self.pool.close()
