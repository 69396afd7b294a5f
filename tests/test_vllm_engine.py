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
from ocr_watcher.engines.vllm_pool import ServerPool

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
    body = build_request(MODEL, PROMPTS[mode], "iVBORw0KGgo=", temperature=0.0, max_tokens=4096)
    assert validate(json.loads(json.dumps(body)), MODEL) is None
    assert body["messages"][0]["content"][0]["type"] == "image_url"  # image first, as the recipe
    assert "<image>" not in body["messages"][0]["content"][1]["text"]  # vLLM adds it


def test_max_tokens_never_exceeds_what_the_servers_context_leaves(fake, make_engine, tmp_path):
    """Given the default max_tokens (8192: DeepSeek-OCR's whole context) and a Letter page at 144 dpi,
    when it is recognised, then the request asks for the context less the page's prompt (903 image
    tokens in Gundam mode, and a margin for the text), which vLLM 0.12-0.16 accept. (Before, 8192 was
    sent, which those releases refuse with 400 for every page; the double refuses it as 0.12 does.)"""
    page = page_png(tmp_path, 1)
    page.width, page.height = 1224, 1584
    engine = make_engine([fake.url])
    output = engine.recognize(page)
    assert fake.errors == [] and [entry["max_tokens"] for entry in fake.log] == [8192 - 903 - 64]
    assert output.extra["max_tokens"] == 8192 - 903 - 64
    small = make_engine([fake.url], max_tokens=1024)  # a smaller setting is kept
    small.recognize(page_png(tmp_path, 2))
    assert fake.log[-1]["max_tokens"] == 1024
    refused = build_request(MODEL, PROMPTS["markdown"], "iVBORw0KGgo=", temperature=0.0, max_tokens=8192)
    assert validate(json.loads(json.dumps(refused)), MODEL)[0] == 400  # the double refuses what 0.12 refuses


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
    engine = make_engine([fake.url])  # its start-up probe answered first
    fake.fail_next(503, count=3)
    output = engine.recognize(page_png(tmp_path, 1))
    assert output.extra["attempts"] == 4 and fake.requests == 4


def test_dropped_connections_are_retried(fake, make_engine, tmp_path):
    engine = make_engine([fake.url])
    fake.drop_next(2)
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


def test_a_page_waits_for_its_own_server_to_load_beyond_the_connect_retry_window(make_engine, tmp_path):
    """Given the daemon's own (managed) server still loading its model for longer than
    connect_retry_max_seconds, a page sent meanwhile waits for it and is done once it answers: the
    supervisor's start-up timeout bounds that wait, not the page's retry window."""
    from ocr_watcher.engines.vllm_server import ManagedServer, ServerSettings

    port = free_port()
    settings = ServerSettings(command=(sys.executable, "-m", "tests.fake_vllm"), port=port, startup_timeout_seconds=60)
    managed = ManagedServer(settings, environ={**os.environ, "FAKE_VLLM_STARTUP_DELAY": "3"})
    managed.start()
    try:
        engine = make_engine([managed.url], connect_retry_max_seconds=0.5, managed=managed)
        assert managed.starting
        output = engine.recognize(page_png(tmp_path, 1))
        assert output.extra["attempts"] > 3 and output.extra["server"] == managed.url
    finally:
        managed.stop()


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


def test_pages_go_to_the_server_with_the_fewest_requests_in_flight(make_engine, tmp_path):
    """Given two servers, one answering 20 times slower, when 40 pages are sent from 8 threads, then
    the fast one gets most of them (round-robin gave each half, so the slow one set the pace)."""
    with FakeVllm(MODEL) as slow, FakeVllm(MODEL) as fast:
        slow.delay_seconds, fast.delay_seconds = 0.4, 0.02
        engine = make_engine([slow.url, fast.url], max_in_flight=8)
        with ThreadPoolExecutor(max_workers=8) as pool:
            outputs = list(pool.map(engine.recognize, [page_png(tmp_path, n) for n in range(1, 41)]))
        assert len(outputs) == 40 and slow.errors == fast.errors == []
        assert slow.requests + fast.requests == 40 and fast.requests > 3 * slow.requests, (slow.requests, fast.requests)


def test_a_request_that_timed_out_is_sent_again_without_failing_the_page(make_engine, tmp_path):
    """Given a busy server whose answers come after the request timeout, and an idle one, then each
    page that went to the busy one is sent again to the idle one: none fails, and none used up a retry
    of its own (a busy server is not a bad page); with only the busy one, a page fails after
    `timeout_retries` more tries, saying so."""
    with FakeVllm(MODEL) as busy, FakeVllm(MODEL) as idle:
        engine = make_engine([busy.url, idle.url], request_timeout=2.0, timeout_retries=1)
        only_busy = make_engine([busy.url], request_timeout=2.0, timeout_retries=1)
        busy.delay_seconds = 60.0  # from now on it answers no page within the timeout; the idle one at once
        outputs = [engine.recognize(page_png(tmp_path, n)) for n in range(1, 5)]
        assert {o.extra["server"] for o in outputs} == {idle.url}
        assert sorted(o.extra["attempts"] for o in outputs)[-1] == 2  # some went to the busy one first
        with pytest.raises(PageError, match=r"no answer within 2 s, 2 times .*vllm.timeout_retries"):
            only_busy.recognize(page_png(tmp_path, 9))


def test_a_timed_out_request_goes_to_another_server_even_one_with_more_in_flight():
    """The moment a server gives up a request that timed out it has the fewest in flight, so the
    fewest-in-flight rule alone sends the request straight back to it (seen against the real server,
    tests/test_vllm_real.py): the request avoids the servers where it timed out while another is usable,
    and goes back to one only when none other is."""
    with FakeVllm(MODEL) as first, FakeVllm(MODEL) as second:
        pool = ServerPool([first.url, second.url], max_in_flight=8, request_timeout=30.0, probe_model=MODEL)
        pool.check_all()
        try:
            busy = pool.acquire(MODEL)  # a page in flight at one server
            slow = next(url for url in (first.url, second.url) if url != busy)  # this request timed out there
            assert pool.acquire(MODEL, avoid={slow}) == busy
            pool.release(busy)
            assert pool.acquire(MODEL, avoid={slow}) == busy
            assert pool.acquire(MODEL, avoid={first.url, second.url}) == slow  # none other: the fewest in flight
            assert pool.acquire(MODEL) == slow  # without avoid, as before: fewest in flight
        finally:
            pool.close()


def test_a_server_without_the_ngram_processor_takes_no_pages_and_says_why(make_engine, tmp_path):
    """Given a server that answers the processor probe (ngram_size 0) with 200, as vLLM without the
    processor does, then health says what is wrong and how to fix it, and a page waits for a server
    with it instead of going there; one that has it is probed once and used."""
    with FakeVllm(MODEL, processor=False) as bare, FakeVllm(MODEL) as proper:
        engine = make_engine([bare.url], connect_retry_max_seconds=0.3)
        problem = engine.health() or ""
        assert "without DeepSeek-OCR's n-gram logits processor" in problem and "--logits_processors" in problem
        with pytest.raises(PageError, match="no vllm server answered"):
            engine.recognize(page_png(tmp_path, 1))
        assert bare.requests == 0 and bare.probes == 1
        both = make_engine([bare.url, proper.url])
        assert both.health() is None
        outputs = [both.recognize(page_png(tmp_path, n)) for n in range(2, 6)]
        assert {o.extra["server"] for o in outputs} == {proper.url} and proper.probes == 1
        both.pool.check_all()
        assert proper.probes == 1, "probed when it came up, not on every check"


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
    with FakeVllm(MODEL, port=port) as first:
        engine.pool.check_all()
        engine.pool.check_all()
        assert engine.health() is None and first.probes == 1
    engine.pool.check_all()
    assert url in (engine.health() or "")
    with FakeVllm(MODEL, port=port, processor=False) as restarted:  # back, but started without it
        engine.pool.check_all()
        assert restarted.probes == 1 and "n-gram logits processor" in (engine.health() or "")


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
