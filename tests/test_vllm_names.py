"""Every vLLM name and CLI flag the engine relies on exists in the installed vLLM.

Skipped where vLLM is not installed (the CPU test machines); on a GPU machine with the `[gpu]` extra
this is the check that the pinned release still has what ocr-watcher uses."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess

import pytest

from ocr_watcher.engines.vllm_server import LOGITS_PROCESSOR, ServerSettings, build_command

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")


def test_the_logits_processor_class_exists() -> None:
    module_name, _, class_name = LOGITS_PROCESSOR.partition(":")
    module = importlib.import_module(module_name)
    assert hasattr(module, class_name), f"{LOGITS_PROCESSOR} is gone from this vLLM"


def test_every_flag_the_managed_server_passes_is_known_to_vllm_serve() -> None:
    vllm = shutil.which("vllm")
    assert vllm is not None, "the vllm command is not on PATH"
    help_text = subprocess.run(
        [vllm, "serve", "--help=all"], capture_output=True, text=True, timeout=300
    ).stdout.replace("_", "-")
    flags = [word for word in build_command(ServerSettings()) if word.startswith("--")]
    missing = [flag for flag in flags if flag.replace("_", "-") not in help_text]
    assert missing == [], f"vllm serve does not know {missing}"


def test_the_sampling_extras_are_accepted() -> None:
    """vllm_xargs (custom per-request arguments) and skip_special_tokens are fields of the
    OpenAI-compatible chat request in this release."""
    protocol = importlib.import_module("vllm.entrypoints.openai.protocol")
    fields = protocol.ChatCompletionRequest.model_fields
    assert "vllm_xargs" in fields and "skip_special_tokens" in fields
