"""`ocr-watcher doctor` as a user runs it: a real subprocess over a real configuration. Against real
Tesseract it reads the known page and exits 0; against a vLLM server whose model does not read (here
the contract double, whose answers are canned; tests/test_vllm_real.py has the real server with
random weights) it exits 1 and says why."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from ocr_watcher.doctor import KNOWN_TEXT, word_recall

from .fake_vllm import FakeVllm

REPO = Path(__file__).resolve().parents[1]


def doctor(tmp_path: Path, config: dict, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    folders = {"inbox": str(tmp_path / "inbox"), "outbox": str(tmp_path / "outbox")}
    path.write_text(yaml.safe_dump(folders | config))
    command = [sys.executable, "-m", "ocr_watcher.cli", "doctor", "--config", str(path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO)


def test_word_recall_counts_repeated_words_and_ignores_case_and_punctuation():
    assert word_recall("The cat, the hat.", "the CAT the hat") == 1.0
    assert word_recall("the the the cat", "the cat") == 0.5
    assert word_recall("a b c d", "") == 0.0


def test_doctor_passes_on_tesseract(tmp_path):
    result = doctor(tmp_path, {"engine": "tesseract"}, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["recall"] >= 0.9 and report["engine"] == "tesseract"
    assert KNOWN_TEXT[0].split()[0] in report["read"]


def test_doctor_fails_loudly_on_a_server_that_does_not_read(tmp_path):
    with FakeVllm("deepseek-ai/DeepSeek-OCR") as server:
        result = doctor(tmp_path, {"engine": "vllm", "vllm": {"servers": [server.url]}})
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"server {server.url}: vLLM contract-double, max_model_len 8192" in result.stdout
    assert "n-gram processor loaded" in result.stdout and "vllm.max_in_flight 256" in result.stdout
    assert re.search(r"FAILED: only \d+% of the known page's words came back", result.stdout), result.stdout


def test_doctor_says_when_a_server_lacks_the_processor(tmp_path):
    with FakeVllm("deepseek-ai/DeepSeek-OCR", processor=False) as server:
        result = doctor(tmp_path, {"engine": "vllm", "vllm": {"servers": [server.url], "connect_retry_max_seconds": 1}})
    assert result.returncode == 1
    assert "without DeepSeek-OCR's n-gram logits processor" in result.stdout
    assert "FAILED: the page failed" in result.stdout
