"""The vllm engine's HTTP client against tests/fake_vllm.py.

The server here is a stand-in for the protocol contract with vLLM's OpenAI-compatible server (what
the DeepSeek-OCR recipe sends and what comes back), not vLLM: no GPU, no model. It checks every
request's shape strictly and lets a test inject 5xx answers, dropped connections, slow answers and
looping pages. No assertion here depends on wall-clock time.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ocr_watcher.config import ConfigError, VllmConfig, load_config
from ocr_watcher.engines.base import PageError, PageInput
from ocr_watcher.engines.vllm import (
    PROMPTS,
    VllmEngine,
    backoff_delay,
    build_request,
    parse_completion,
)

from .fake_vllm import FakeVllm, validate

MODEL = "deepseek-ai/DeepSeek-OCR"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page_png(tmp_path: Path, number: int) -> PageInput:
    """A small, distinct PNG per page number (the fake server tells pages apart by their bytes)."""
    path = tmp_path / f"page-{number:05d}.png"
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (number % 256, (number // 256) % 256, 200)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return PageInput(job_id="job", page=number, image_path=path, width=32, height=24)


@pytest.fixture
def fake():
    with FakeVllm(MODEL) as server:
        yield server


@pytest.fixture
def make_engine():
    engines: list[VllmEngine] = []

    def make(servers: list[str], **kwargs) -> VllmEngine:
        settings = {"health_interval": 3600.0, "backoff_initial": 0.02, "backoff_max": 0.2}
        engine = VllmEngine(servers, **(settings | kwargs))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


# -- the request ---------------------------------------------------------------------------------
def test_request_follows_the_deepseek_ocr_recipe(fake, make_engine, tmp_path):
    # Given an engine pointed at one server, When a page is recognised
    engine = make_engine([fake.url], max_tokens=4096)
    output = engine.recognize(page_png(tmp_path, 1))
    # Then the server saw the recipe's request, and the answer's tags are gone from the Markdown
    assert fake.errors == []
    [request] = fake.log
    assert request["model"] == MODEL
    assert request["temperature"] == 0
    assert request["max_tokens"] == 4096
    assert request["skip_special_tokens"] is False
    assert request["vllm_xargs"] == {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}
    assert "# Stand-in page" in output.markdown and "<|ref|>" not in output.markdown
    assert output.engine == "vllm" and output.model == MODEL and output.warnings == []
    extra = output.extra
    assert extra["server"] == fake.url and extra["attempts"] == 1 and extra["finish_reason"] == "stop"
    assert extra["prompt_tokens"] == 273 and extra["completion_tokens"] > 0
    assert extra["model"] == MODEL and "seconds_request" in extra and "fallback" not in extra


@pytest.mark.parametrize("mode", sorted(PROMPTS))
def test_every_mode_builds_a_request_the_contract_accepts(mode):
    body = build_request(MODEL, PROMPTS[mode], "iVBORw0KGgo=", temperature=0.0, max_tokens=8192)
    assert validate(json.loads(json.dumps(body)), MODEL) is None
    assert body["messages"][0]["content"][0]["type"] == "image_url"  # image first, as the recipe
    assert "<image>" not in body["messages"][0]["content"][1]["text"]  # vLLM adds it


def test_render_spec_asks_for_colour_png_at_144_dpi(fake, make_engine):
    engine = make_engine([fake.url], max_in_flight=64, max_side_px=2500)
    spec = engine.render_spec
    assert (spec.kind, spec.dpi, spec.grayscale, spec.image_format, spec.max_side_px) == (
        "image",
        144,
        False,
        "png",
        2500,
    )
    assert engine.concurrency == 64


# -- concurrency ---------------------------------------------------------------------------------
def test_many_pages_are_in_flight_at_once(fake, make_engine, tmp_path):
    # Given a slow server and an engine allowing 128 requests in flight
    fake.delay_seconds = 1.0
    engine = make_engine([fake.url], max_in_flight=128)
    pages = [page_png(tmp_path, n) for n in range(1, 101)]
    # When 100 pipeline threads call it at once
    with ThreadPoolExecutor(max_workers=100) as pool:
        outputs = list(pool.map(engine.recognize, pages))
    # Then all pages come back, and the server had more than half of them at the same time
    assert len(outputs) == 100 and all("Stand-in page" in o.markdown for o in outputs)
    assert fake.errors == [] and fake.requests == 100
    assert fake.max_concurrent > 50


# -- retries -------------------------------------------------------------------------------------
def test_503_answers_are_retried_until_the_server_answers(fake, make_engine, tmp_path):
    fake.fail_next(503, count=3)
    engine = make_engine([fake.url])
    output = engine.recognize(page_png(tmp_path, 1))
    assert output.extra["attempts"] == 4 and fake.requests == 4


def test_dropped_connections_are_retried(fake, make_engine, tmp_path):
    fake.drop_next(2)
    engine = make_engine([fake.url])
    output = engine.recognize(page_png(tmp_path, 1))
    assert output.extra["attempts"] == 3 and "Stand-in page" in output.markdown


def test_a_server_that_keeps_failing_fails_the_page_after_the_retry_window(fake, make_engine, tmp_path):
    fake.fail_next(500, count=10_000)
    engine = make_engine([fake.url], connect_retry_max_seconds=0.5)
    with pytest.raises(PageError, match="no vllm server answered .* HTTP 500"):
        engine.recognize(page_png(tmp_path, 1))
    assert 1 < fake.requests < 10_000


def test_a_page_waits_for_a_restarting_server(make_engine, tmp_path, monkeypatch):
    # Given an engine whose only server is down (restarting)
    port = free_port()
    engine = make_engine([f"http://127.0.0.1:{port}"], connect_retry_max_seconds=60)
    assert "no vllm server can take pages" in (engine.health() or "")
    refused = threading.Semaphore(0)
    original = engine.pool.mark_down
    monkeypatch.setattr(engine.pool, "mark_down", lambda url, reason: (original(url, reason), refused.release()))
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(out=engine.recognize(page_png(tmp_path, 1))))
    worker.start()
    # When the page has been refused twice and the server then comes back on the same port
    assert refused.acquire(timeout=30) and refused.acquire(timeout=30)
    with FakeVllm(MODEL, port=port) as fake:
        worker.join(timeout=60)
        # Then the page succeeds on it, and the engine is healthy again
        assert result["out"].extra["attempts"] >= 3 and fake.requests == 1
        assert engine.health() is None


def test_pages_go_only_to_the_healthy_server(fake, make_engine, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    engine = make_engine([down, fake.url])
    servers = {engine.recognize(page_png(tmp_path, n)).extra["server"] for n in range(1, 21)}
    assert servers == {fake.url} and fake.requests == 20
    assert engine.health() is None


def test_pages_are_spread_round_robin_over_healthy_servers(make_engine, tmp_path):
    with FakeVllm(MODEL) as first, FakeVllm(MODEL) as second:
        engine = make_engine([first.url, second.url])
        for n in range(1, 21):
            engine.recognize(page_png(tmp_path, n))
        assert first.requests == 10 and second.requests == 10


# -- looping pages -------------------------------------------------------------------------------
def test_a_looping_page_is_retried_at_rising_temperatures_then_falls_back(fake, make_engine, tmp_path):
    # Given a page the model loops on at every temperature
    fake.length_first_n = 100
    engine = make_engine([fake.url], loop_retry_temperatures=[0.2, 0.5])
    output = engine.recognize(page_png(tmp_path, 1))
    # Then it was asked at 0, 0.2 and 0.5, and the pipeline is told to use the text layer
    assert [entry["temperature"] for entry in fake.log] == [0, 0.2, 0.5]
    assert output.extra["fallback"] == "text_layer" and output.extra["finish_reason"] == "length"
    assert output.extra["attempts"] == 3 and output.extra["temperature"] == 0.5
    assert output.extra["fallback_applied"] is False and "the the" in output.markdown
    assert any("repeated itself" in w and "no text layer" in w for w in output.warnings)


def test_a_looping_page_uses_the_text_layer_when_the_renderer_passed_it(fake, make_engine, tmp_path):
    fake.length_first_n = 100
    engine = make_engine([fake.url], loop_retry_temperatures=[0.3])
    page = page_png(tmp_path, 1)
    page.text = "Exact text from the PDF.\n"
    output = engine.recognize(page)
    assert output.markdown == "Exact text from the PDF.\n" and output.extra["fallback_applied"] is True
    assert any("text layer is used instead" in w for w in output.warnings)


def test_a_page_that_loops_once_is_read_at_the_next_temperature(fake, make_engine, tmp_path):
    fake.length_first_n = 1
    engine = make_engine([fake.url])
    output = engine.recognize(page_png(tmp_path, 1))
    assert [entry["temperature"] for entry in fake.log] == [0, 0.2]
    assert "fallback" not in output.extra and "Stand-in page" in output.markdown
    assert any("temperature 0.2" in w for w in output.warnings)


# -- page errors ---------------------------------------------------------------------------------
def test_a_4xx_answer_is_a_page_error_without_retries(fake, make_engine, tmp_path):
    engine = make_engine([fake.url], model="someone/else")
    with pytest.raises(PageError, match="HTTP 404"):
        engine.recognize(page_png(tmp_path, 1))
    assert fake.requests == 1
    assert "serves deepseek-ai/DeepSeek-OCR, not someone/else" in (engine.health() or "")


def test_missing_or_non_png_pages_are_page_errors(fake, make_engine, tmp_path):
    engine = make_engine([fake.url])
    with pytest.raises(PageError, match="needs a rendered PNG"):
        engine.recognize(PageInput(job_id="job", page=1))
    ppm = tmp_path / "page.ppm"
    ppm.write_bytes(b"P6\n1 1\n255\n\x00\x00\x00")
    with pytest.raises(PageError, match="not a PNG"):
        engine.recognize(PageInput(job_id="job", page=2, image_path=ppm))
    assert fake.requests == 0


# -- health --------------------------------------------------------------------------------------
def test_health_follows_the_servers(make_engine):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    engine = make_engine([url])
    assert url in (engine.health() or "")
    with FakeVllm(MODEL, port=port):
        engine.pool.check_all()
        assert engine.health() is None
    engine.pool.check_all()
    assert url in (engine.health() or "")


# -- pure parts ----------------------------------------------------------------------------------
def test_malformed_answers_are_rejected():
    with pytest.raises(ValueError):
        parse_completion({"choices": []})
    ok = parse_completion({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]})
    assert (ok.text, ok.finish_reason, ok.prompt_tokens) == ("x", "stop", 0)


def test_backoff_grows_but_stays_within_its_bounds():
    assert backoff_delay(0, initial=0.5, maximum=10, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, initial=0.5, maximum=10, rand=lambda: 1.0) == 4.0
    assert backoff_delay(40, initial=0.5, maximum=10, rand=lambda: 1.0) == 10
    assert backoff_delay(5, initial=0.5, maximum=10, rand=lambda: 0.0) == 0.25


# -- configuration -------------------------------------------------------------------------------
def test_vllm_config_defaults_and_profile_overrides(tmp_path):
    config = load_config(
        environ={},
        overrides={
            "inbox": str(tmp_path / "in"),
            "outbox": str(tmp_path / "out"),
            "engine": "vllm",
            "vllm": {"servers": ["http://gpu1:8000/", "http://gpu2:8000/v1"]},
            "profiles": {"figures": {"mode": "figure", "model": "deepseek-ai/DeepSeek-OCR-2"}},
        },
    )
    assert config.vllm.servers == ["http://gpu1:8000", "http://gpu2:8000"]
    assert (config.vllm.model, config.vllm.mode, config.vllm.dpi) == (MODEL, "markdown", 144)
    assert config.vllm.loop_retry_temperatures == [0.2, 0.5] and config.vllm.max_in_flight == 256
    assert config.profile("figures").mode == "figure"
    assert VllmConfig().managed.startup_timeout_seconds >= 600


def test_a_server_that_is_not_a_url_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="vllm.servers"):
        load_config(
            environ={},
            overrides={"inbox": str(tmp_path / "i"), "outbox": str(tmp_path / "o"), "vllm": {"servers": ["gpu1"]}},
        )


# -- the fake as a `vllm serve` stand-in ---------------------------------------------------------
def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("fake vllm serve never became healthy")


def test_fake_serves_like_vllm_serve_and_stops_on_sigterm(tmp_path):
    port, record = free_port(), tmp_path / "argv.json"
    argv = ["serve", MODEL, "--host", "127.0.0.1", "--port", str(port), "--gpu-memory-utilization", "0.9"]
    env = {**os.environ, "FAKE_VLLM_RECORD": str(record)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_vllm", *argv], cwd=ROOT, env=env)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["id"] for m in models["data"]] == [MODEL]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert json.loads(record.read_text())["ignored"] == ["--gpu-memory-utilization", "0.9"]


def test_fake_refuses_to_start_without_the_logits_processor_when_asked():
    env = {**os.environ, "FAKE_VLLM_REQUIRE_LOGITS_PROCESSOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.fake_vllm", "serve", MODEL, "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "NGramPerReqLogitsProcessor" in done.stderr
