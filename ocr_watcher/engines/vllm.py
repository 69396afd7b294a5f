"""The vllm engine: DeepSeek-OCR behind one or more vLLM OpenAI-compatible servers, over HTTP.

Nothing of the GPU stack is imported here: a page is a PNG sent as a base64 `image_url` to
POST /v1/chat/completions, with the DeepSeek-OCR recipe's sampling settings (temperature 0, the
n-gram logits processor's `vllm_xargs`, `skip_special_tokens: false`). Servers are either given by
URL or one managed server, started by the supervisor; this module only talks to them.

- One shared `httpx.Client` (thread-safe) with a connection pool sized to `max_in_flight`: the
  pipeline calls `recognize` from that many threads, and the server batches them on the GPU.
- The servers, their health, the n-gram processor probe and the choice of server per page (the
  fewest requests in flight) live in vllm_pool.py; `health()` only reads what it found.
- `max_tokens` never exceeds what the server can give: its `max_model_len` less the page's prompt
  (deepseek_tokens.py), so no release refuses a page for it.
- Connection errors and 5xx are retried with exponential back-off and jitter for up to
  `connect_retry_max_seconds` (a vLLM restart must not fail jobs); a request that timed out is sent
  again (`timeout_retries` times) without using up the page's retries: a busy server is not a bad
  page. A 4xx fails the page.
- Output that is not text (a broken model or release answering bytes) is flagged (text_check.py).
- `finish_reason == "length"` means the model looped: the page is asked again at each of
  `loop_retry_temperatures`; if it still loops, the output carries a warning and
  `extra["fallback"] = "text_layer"`, asking the pipeline to use the PDF's text layer instead.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ocr_watcher.engines.base import PageError, PageInput, PageOutput, RenderSpec
from ocr_watcher.engines.deepseek_markdown import grounded_blocks, to_markdown
from ocr_watcher.engines.deepseek_tokens import answer_budget
from ocr_watcher.engines.markdown import text_layer_to_markdown
from ocr_watcher.engines.text_check import not_text_reason
from ocr_watcher.engines.vllm_pool import ServerPool, describe_error

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
DEEPSEEK_OCR_CONTEXT = 8192  # its max_position_embeddings: assumed while a server's max_model_len is unknown
_RETRYABLE_4XX = {408, 429}
_BODY_TAIL = 300


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


def knows_prompt_size(model: str) -> bool:
    """DeepSeek-OCR itself, whose image tokens deepseek_tokens.py counts exactly (not OCR-2's)."""
    name = model.lower()
    return "deepseek-ocr" in name and "ocr-2" not in name


@dataclass(frozen=True)
class Retry:
    """Why one attempt is worth repeating; `timed_out`: the server took the request and gave no
    answer in time (busy), rather than refusing the connection or answering 5xx (down)."""

    reason: str
    timed_out: bool = False


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
        timeout_retries: int = 2,
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
                probe_model=model,
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
        self.request_timeout = request_timeout
        self.connect_retry_max_seconds = connect_retry_max_seconds
        self.timeout_retries = timeout_retries
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

            def body_for(url: str, temperature: float = temperature) -> bytes:
                tokens = self.max_tokens_for(url, page)
                return json.dumps(
                    build_request(self.model or "", self.prompt, image_b64, temperature=temperature, max_tokens=tokens)
                ).encode()

            call = self._exchange(page, body_for)
            tally.add(call, temperature)
            if call.completion.finish_reason != "length":
                break
        assert call is not None
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

    def max_tokens_for(self, url: str, page: PageInput) -> int:
        """`vllm.max_tokens`, capped at what the server's context leaves after this page's prompt."""
        context = self.pool.max_model_len(url, self.model or "")
        if context is None:  # not known yet (the server came up since the last check): ask it now
            self.pool.check(url)
            context = self.pool.max_model_len(url, self.model or "") or DEEPSEEK_OCR_CONTEXT
        budget = answer_budget(context, page.width, page.height, known_model=knows_prompt_size(self.model or ""))
        return min(self.max_tokens, budget)

    def _exchange(self, page: PageInput, body_for: Callable[[str], bytes]) -> _Call:
        """POST one request until a server answers it: connection errors and 5xx are retried with
        back-off while time is left, a request that timed out is sent again at once (to the least
        busy server) up to `timeout_retries` times; a 4xx or a malformed answer fails the page."""
        started = time.monotonic()
        # Time spent in requests that timed out, or waiting for our own server to start, extends the budget.
        timed_out, waited_out = 0, 0.0
        slow: set[str] = set()  # servers where this request timed out: sent elsewhere while another is usable
        attempt = 0
        while True:
            attempt += 1
            url = self.pool.acquire(self.model or "", avoid=slow)
            sent = time.monotonic()
            if url is None:  # every server lacks the n-gram processor: wait for one that has it
                outcome: Completion | Retry = Retry(self.pool.problem(self.model or "") or "no usable server")
            else:
                try:
                    outcome = self._post(page, url, body_for(url))
                finally:
                    self.pool.release(url)
            if isinstance(outcome, Completion):
                assert url is not None
                return _Call(outcome, url, attempt, time.monotonic() - started)
            if outcome.timed_out:
                assert url is not None
                slow.add(url)
                timed_out += 1
                waited_out += time.monotonic() - sent
                if timed_out > self.timeout_retries:
                    raise PageError(
                        f"page {page.page}: no answer within {self.request_timeout:g} s, {timed_out} times "
                        f"(vllm.request_timeout_seconds, vllm.timeout_retries); last: {outcome.reason}"
                    )
                log.warning("page %d: %s; sending it again", page.page, outcome.reason)
                continue
            delay = backoff_delay(attempt - 1, initial=self.backoff_initial, maximum=self.backoff_max)
            if self.managed is not None and self.managed.starting:
                # Our own server is loading the model: its start-up timeout bounds that wait, not ours.
                waited_out += delay
            if time.monotonic() + delay > started + waited_out + self.connect_retry_max_seconds:
                raise PageError(
                    f"page {page.page}: no vllm server answered after {attempt} attempts in "
                    f"{time.monotonic() - started:.0f} s (vllm.connect_retry_max_seconds); last: {outcome.reason}"
                )
            log.debug("page %d: %s; retrying in %.2f s", page.page, outcome.reason, delay)
            time.sleep(delay)

    def _post(self, page: PageInput, url: str, content: bytes) -> Completion | Retry:
        """One attempt: the completion, or why it is worth retrying; PageError otherwise."""
        try:
            response = self.pool.client.post(
                f"{url}/v1/chat/completions", content=content, headers={"Content-Type": "application/json"}
            )
        except httpx.TimeoutException as exc:
            if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
                self.pool.mark_down(url, describe_error(exc))
                return Retry(f"{url}: {describe_error(exc)}")
            return Retry(f"{url} gave no answer in time ({describe_error(exc)})", timed_out=True)
        except httpx.TransportError as exc:  # refused, reset, dropped mid-answer: the server is (re)starting
            self.pool.mark_down(url, describe_error(exc))
            return Retry(f"{url}: {describe_error(exc)}")
        status = response.status_code
        if status >= 500 or status in _RETRYABLE_4XX:
            return Retry(f"{url}: HTTP {status} {response.text[:_BODY_TAIL]}")
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
            "max_tokens": self.max_tokens_for(call.server, page),
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
        # Judged on what the model said, also where the text layer stands in for it: a model (or vLLM
        # release) that answers bytes must show, not hide behind the fallback.
        said = markdown if not extra.get("fallback_applied") else self._convert(call.completion.text, page)[0]
        if (reason := not_text_reason(said, call.completion.text, call.completion.completion_tokens)) is not None:
            extra["not_text"] = reason
            warnings.append(f"the model's output is not text ({reason}): check the vLLM release and the model")
        text = call.completion.text
        blocks = None if extra.get("fallback_applied") else grounded_blocks(text, page.width, page.height)
        return PageOutput(markdown, self.name, self.model, warnings=warnings, extra=extra, blocks=blocks or None)

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
