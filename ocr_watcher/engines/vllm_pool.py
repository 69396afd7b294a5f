"""The vLLM servers a `vllm` engine sends pages to: their health, what they serve, whether they run
DeepSeek-OCR's n-gram logits processor, and which one takes the next page.

- A background thread asks each server's /v1/models every few seconds; the answer also gives the
  server's `max_model_len`, which caps the tokens a page may ask for (deepseek_tokens.py).
- The processor probe: a server with NGramPerReqLogitsProcessor loaded refuses
  `vllm_xargs: {"ngram_size": 0}` with 400 ("ngram_size has to be a strictly positive integer"),
  one without it answers 200. Sent when a server is first seen up and whenever it comes back after
  being down, not on every check. Without the processor DeepSeek-OCR loops on repeated text, so
  such a server takes no pages and /readyz says why.
- Each page goes to the usable server with the fewest requests in flight (ties: round-robin), so a
  slow or busy server gets fewer pages and a fast one more.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import httpx

from .vllm_server_status import LOGITS_PROCESSOR

log = logging.getLogger("ocr_watcher.engines.vllm")

HEALTH_TIMEOUT_S = 3.0
PROBE_TIMEOUT_S = 30.0  # a server without the processor answers it: one short text-only generation


# -- pure parts ----------------------------------------------------------------------------------
def served_models(body: Any) -> dict[str, int | None]:
    """Model ids from a /v1/models answer, each with its max_model_len (None where not given)."""
    try:
        return {str(item["id"]): _positive_int(item.get("max_model_len")) for item in body["data"]}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a /v1/models answer ({exc})") from exc


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def probe_request(model: str) -> dict[str, Any]:
    """A request that only a server with the n-gram processor refuses (see the module docstring)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "probe"}]}],
        "max_tokens": 1,
        "temperature": 0,
        "vllm_xargs": {"ngram_size": 0},
    }


def probe_verdict(status: int, body: str) -> tuple[bool | None, str]:
    """(processor loaded?, what the answer says); None when the answer tells neither way."""
    if status == 400 and "ngram_size" in body:
        return True, "the n-gram logits processor is loaded"
    if status == 200:
        return False, (
            "it runs without DeepSeek-OCR's n-gram logits processor (pages would loop on repeated text): "
            f"start vllm serve with --logits_processors {LOGITS_PROCESSOR} (and VLLM_USE_V2_MODEL_RUNNER=0 "
            "on vLLM 0.31 and later)"
        )
    return None, f"the processor probe got HTTP {status}: {body[:200]}"


def describe_error(exc: BaseException) -> str:
    """An HTTP failure in a few words, for logs, /readyz and page errors."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- servers -------------------------------------------------------------------------------------
@dataclass
class _Server:
    url: str
    healthy: bool | None = None  # None: not checked yet
    reason: str | None = "not checked yet"
    models: dict[str, int | None] | None = None  # id -> max_model_len; None: unknown
    probed: bool = False  # since the server last came up
    processor: bool | None = None  # the probe's verdict; None: not known (not probed, or it told neither way)
    processor_reason: str | None = None
    in_flight: int = 0

    def usable(self, model: str) -> bool:
        return (
            self.healthy is not False and self.processor is not False and (self.models is None or model in self.models)
        )


class ServerPool:
    """The servers, their health (kept by a background thread) and the choice among them. One pool
    can serve several engines (profiles with another model or mode share the servers)."""

    def __init__(
        self,
        urls: list[str],
        *,
        max_in_flight: int,
        request_timeout: float,
        health_interval: float = 5.0,
        connect_timeout: float = 5.0,
        probe_model: str | None = None,
    ) -> None:
        if not urls:
            raise ValueError("a vllm server pool needs at least one server URL")
        self._servers = [_Server(url.rstrip("/")) for url in urls]
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._stop = threading.Event()
        self.health_interval = health_interval
        self.probe_model = probe_model  # None: no processor probe (tests of the plumbing only)
        limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        timeout = httpx.Timeout(request_timeout, connect=connect_timeout, pool=None)
        # trust_env=False: a proxy meant for the internet must not sit between us and the GPU servers.
        self.client = httpx.Client(limits=limits, timeout=timeout, trust_env=False)
        # Health checks get their own connections, so that they never queue behind pages, and a new
        # one each time, so that they test the listening socket rather than an old keep-alive.
        no_keepalive = httpx.Limits(max_connections=4, max_keepalive_connections=0)
        self._probe = httpx.Client(timeout=HEALTH_TIMEOUT_S, limits=no_keepalive, trust_env=False)
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
            self._thread.join(timeout=PROBE_TIMEOUT_S + 1)
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

    def check(self, url: str) -> None:
        """Check one server now (a page is about to go to a server whose context is not known yet)."""
        for server in self._servers:
            if server.url == url:
                self._check(server)

    def _check(self, server: _Server) -> None:
        try:
            response = self._probe.get(f"{server.url}/v1/models")
            response.raise_for_status()
            models = served_models(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            self._set(server, False, f"{server.url}: {describe_error(exc)}")
            return
        self._set(server, True, None, models)
        if not server.probed and self.probe_model is not None:
            self._probe_processor(server, self.probe_model if self.probe_model in models else next(iter(models), ""))

    def _probe_processor(self, server: _Server, model: str) -> None:
        try:
            response = self._probe.post(
                f"{server.url}/v1/chat/completions", json=probe_request(model), timeout=PROBE_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            log.warning("vllm server %s: the processor probe failed (%s); probing again later", server.url, exc)
            return
        verdict, reason = probe_verdict(response.status_code, response.text)
        with self._lock:
            server.probed, server.processor, server.processor_reason = True, verdict, f"{server.url}: {reason}"
        if verdict is False:
            log.error("vllm server %s takes no pages: %s", server.url, reason)
        elif verdict is None:
            log.warning("vllm server %s: %s; sending pages anyway", server.url, reason)
        else:
            log.info("vllm server %s: %s", server.url, reason)

    def _set(
        self, server: _Server, healthy: bool, reason: str | None, models: dict[str, int | None] | None = None
    ) -> None:
        with self._lock:
            if healthy != server.healthy:
                log.log(logging.INFO if healthy else logging.WARNING, "vllm server %s", reason or f"{server.url} is up")
                if not healthy:  # it may come back as another server: probe it again then
                    server.probed, server.processor = False, None
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

    def acquire(self, model: str, avoid: Collection[str] = ()) -> str | None:
        """The usable server serving `model` with the fewest requests in flight, counted as one more
        until `release`; servers in `avoid` (where this request timed out) only when no other is usable,
        since the slow server has the fewest in flight the moment it gives a request up. With none
        usable, the next one that is merely down: the request itself then probes it, so a restarted
        server is used before the next health check. None when every server runs without the n-gram
        processor: no page goes there."""
        with self._lock:
            start = next(self._turn)
            order = [self._servers[(start + i) % len(self._servers)] for i in range(len(self._servers))]
            usable = [server for server in order if server.usable(model)]
            usable = [server for server in usable if server.url not in avoid] or usable
            fallback = [server for server in order if server.processor is not False]
            if not usable and not fallback:
                return None
            chosen = min(usable, key=lambda server: server.in_flight) if usable else fallback[0]
            chosen.in_flight += 1
            return chosen.url

    def release(self, url: str) -> None:
        with self._lock:
            for server in self._servers:
                if server.url == url:
                    server.in_flight = max(0, server.in_flight - 1)

    def max_model_len(self, url: str, model: str) -> int | None:
        """The context the server gives `model` (from /v1/models), None while not known."""
        with self._lock:
            for server in self._servers:
                if server.url == url and server.models is not None:
                    return server.models.get(model)
        return None

    def problem(self, model: str) -> str | None:
        """None when a server that serves `model` can take pages, else why not (for /readyz)."""
        with self._lock:
            servers = list(self._servers)
        reasons = []
        for server in servers:
            if server.healthy and server.usable(model):
                return None
            if server.healthy and server.processor is False:
                reasons.append(server.processor_reason or f"{server.url}: no n-gram logits processor")
            elif server.healthy:
                served = ", ".join(sorted(server.models or ())) or "no model"
                reasons.append(f"{server.url} serves {served}, not {model}")
            else:
                reasons.append(server.reason or f"{server.url}: not checked yet")
        return "no vllm server can take pages: " + "; ".join(reasons)

    def describe(self) -> list[dict[str, Any]]:
        """Each server as plain data (for `ocr-watcher doctor`)."""
        with self._lock:
            return [
                {
                    "url": s.url,
                    "healthy": s.healthy,
                    "reason": s.reason,
                    "models": dict(s.models or {}),
                    "processor": s.processor,
                    "processor_reason": s.processor_reason,
                    "in_flight": s.in_flight,
                }
                for s in self._servers
            ]
