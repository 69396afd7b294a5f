"""The vllm engine inside a real daemon, against tests/fake_vllm.py: a local HTTP server that speaks
vLLM's OpenAI-compatible protocol (a stand-in for the contract, not vLLM, no model runs). What this
shows is the wiring: pages rendered as PNG and sent, grounding output turned into Markdown with
figures cropped into images/, per-page token figures kept, a looping page falling back to the
PDF's text layer — not recognition quality."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from .daemon import Daemon, drop
from .fake_vllm import FakeVllm
from .pdfgen import sample_lines, scanned_pdf, text_pdf


def test_daemon_with_the_vllm_engine_writes_markdown_and_figures(tmp_path: Path) -> None:
    with FakeVllm() as server:
        daemon = Daemon(tmp_path, engine="vllm", vllm={"servers": [server.url], "max_in_flight": 8}).start()
        try:
            drop(daemon.inbox, scanned_pdf(tmp_path / "scan.pdf", [sample_lines(4, seed=s) for s in range(3)]))
            job = daemon.wait_for_job("scan.pdf", {"completed", "failed"}, timeout=60)
        finally:
            daemon.stop()
        assert server.errors == [], "every request kept the contract"
    assert job["status"] == "completed", job
    job_dir = daemon.job_dir(job)
    result = (job_dir / "result.md").read_text()
    assert result.count("# Stand-in page") == 3 and "<table>" in result and "<|ref|>" not in result
    assert "![](images/p0002_fig01.png)" in result
    assert "![](../images/p0002_fig01.png)" in (job_dir / "pages" / "0002.md").read_text()
    with Image.open(job_dir / "images" / "p0002_fig01.png") as figure:
        page = json.loads((job_dir / "pages" / "0002.json").read_text())
        # the box [100, 320, 500, 600] on the 0-999 scale, cut from the rendered page
        assert abs(figure.width - 400 / 999 * page["width"]) <= 2
        assert abs(figure.height - 280 / 999 * page["height"]) <= 2
    meta = json.loads((job_dir / "result_metadata.json").read_text())
    assert meta["engine"] == "vllm" and meta["model"] == "deepseek-ai/DeepSeek-OCR"
    for info in meta["pages"]:
        assert info["extra"]["finish_reason"] == "stop"
        assert info["extra"]["prompt_tokens"] > 0 and info["extra"]["completion_tokens"] > 0
        assert info["extra"]["server"] == server.url


def test_a_page_that_loops_falls_back_to_its_text_layer(tmp_path: Path) -> None:
    """Given a server whose model loops (finish_reason "length") at every temperature, the page
    is completed from the PDF's own text layer, with a warning in result_metadata.json."""
    with FakeVllm() as server:
        server.length_first_n = 10
        daemon = Daemon(
            tmp_path, engine="vllm", vllm={"servers": [server.url], "loop_retry_temperatures": [0.3]}
        ).start()
        try:
            drop(daemon.inbox, text_pdf(tmp_path / "digital.pdf", [["Born digital words here"]]))
            job = daemon.wait_for_job("digital.pdf", {"completed", "failed"}, timeout=60)
        finally:
            daemon.stop()
        assert sorted(server.by_temperature) == [0.0, 0.3]
    assert job["status"] == "completed"
    job_dir = daemon.job_dir(job)
    assert "Born digital words here" in (job_dir / "result.md").read_text()
    meta = json.loads((job_dir / "result_metadata.json").read_text())
    assert meta["pages"][0]["extra"]["fallback"] == "text_layer"
    assert any("text layer" in warning for warning in meta["warnings"])


def test_the_daemon_runs_its_own_vllm_server_when_none_is_configured(tmp_path: Path) -> None:
    """Engine vllm with no servers: the daemon starts `vllm serve` itself (here tests/fake_vllm.py as
    the command, a stand-in that checks the DeepSeek-OCR flags and mimics vLLM's start-up log), waits
    for it, OCRs through it, and stops it on SIGTERM."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    managed = {"command": [sys.executable, "-m", "tests.fake_vllm"], "port": port, "startup_timeout_seconds": 60}
    daemon = Daemon(tmp_path, engine="vllm", vllm={"managed": managed})
    os.environ["FAKE_VLLM_REQUIRE_LOGITS_PROCESSOR"] = "1"
    try:
        daemon.start()
        drop(daemon.inbox, scanned_pdf(tmp_path / "scan.pdf", [sample_lines(4, seed=1)]))
        job = daemon.wait_for_job("scan.pdf", {"completed", "failed"}, timeout=60)
    finally:
        os.environ.pop("FAKE_VLLM_REQUIRE_LOGITS_PROCESSOR", None)
        assert daemon.stop() == 0
    assert job["status"] == "completed", job
    log = daemon.log()
    assert "fake-vllm serving" in log and "fake-vllm stopped" in log
    assert "HTTP Request:" not in log, "httpx's line per request stays out of the journal at info"
    with pytest.raises(ConnectionRefusedError):  # the child is gone: nothing listens on its port
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_server_restart_mid_job_loses_no_page_and_fails_no_job(tmp_path: Path) -> None:
    """Given a 16-page job in flight with at most 4 pages in flight, when the server goes away
    mid-job and comes back on the same port, then the job completes with every page, and the server
    never saw more than 4 requests at once."""
    first = FakeVllm()
    first.delay_seconds = 1.0
    first.start()
    port = int(first.url.rsplit(":", 1)[1])
    daemon = Daemon(
        tmp_path,
        engine="vllm",
        vllm={"servers": [first.url], "max_in_flight": 4, "health_interval_seconds": 0.5},
    ).start()
    try:
        drop(daemon.inbox, scanned_pdf(tmp_path / "long.pdf", [sample_lines(3, seed=s) for s in range(16)]))
        daemon.wait_until(
            lambda: (daemon.job_for("long.pdf") or {}).get("progress", {}).get("pages_done", 0) >= 2, 60, "2 pages"
        )
        first.stop()  # the server restarts: connections refused for a while
        time.sleep(1.5)
        with FakeVllm(port=port) as second:
            second.delay_seconds = 0.1
            job = daemon.wait_for_job("long.pdf", {"completed", "failed"}, timeout=120)
    finally:
        daemon.stop()
    assert job["status"] == "completed" and job["progress"]["pages_done"] == 16
    assert first.max_concurrent <= 4 and second.max_concurrent <= 4
    assert second.requests > 0, "the pages after the restart went to the restarted server"
