"""Every vLLM name, CLI flag, request field and log line the engine relies on, checked against the
installed vLLM's own code.

Skipped where vLLM is not installed (CI and the CPU test machines). With the `[gpu]` extra installed
(vllm==0.12.0) these run on any machine, GPU or not: they build vLLM's own `serve` argument parser,
request model and start-up log line in-process. Without a GPU, vLLM cannot infer a device even to
build its parser, so these tests then hand it the CPU platform; that is only for the parser's
defaults, nothing is loaded or run. The real server on a GPU is `bench/gpu_throughput.py`'s job.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import shutil
from argparse import Namespace
from typing import Any

import pytest

from ocr_watcher.engines.vllm import NGRAM_XARGS, PROMPTS, build_request
from ocr_watcher.engines.vllm_server import CHILD_ENV, ServerSettings, build_command
from ocr_watcher.engines.vllm_server_status import LOGITS_PROCESSOR, ProcessorSignal, processor_signal

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")


@pytest.fixture(scope="module")
def serve_parser() -> Any:
    import vllm.platforms as platforms

    if not platforms.current_platform.device_type:  # no GPU here: see the module docstring
        from vllm.platforms.cpu import CpuPlatform

        platforms._current_platform = CpuPlatform()
    from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser())


def _serve_args(parser: Any, settings: ServerSettings) -> Namespace:
    words = build_command(settings)
    assert words[:2] == ["vllm", "serve"], words
    return parser.parse_args(words[2:])


def test_the_logits_processor_class_exists() -> None:
    module_name, _, class_name = LOGITS_PROCESSOR.partition(":")
    module = importlib.import_module(module_name)
    assert hasattr(module, class_name), f"{LOGITS_PROCESSOR} is gone from this vLLM"


def test_the_model_architecture_is_registered() -> None:
    from vllm.model_executor.models.registry import ModelRegistry

    assert "DeepseekOCRForCausalLM" in ModelRegistry.get_supported_archs()


def test_the_managed_command_parses_with_vllm_serves_own_parser(serve_parser: Any) -> None:
    """Every flag is known, and each means what the managed server intends (an unknown flag, or one
    renamed, makes `vllm serve` exit at once)."""
    args = _serve_args(serve_parser, ServerSettings(port=8123, gpu_memory_utilization=0.8, extra_args=("--seed", "7")))
    assert args.model_tag == "deepseek-ai/DeepSeek-OCR"
    assert args.logits_processors == [LOGITS_PROCESSOR]
    assert args.enable_prefix_caching is False  # DESIGN §4: no prefix caching for OCR
    assert args.mm_processor_cache_gb == 0
    assert (args.host, args.port, args.gpu_memory_utilization, args.seed) == ("127.0.0.1", 8123, 0.8, 7)


def test_the_start_up_line_vllm_logs_is_read_as_the_processor_check(serve_parser: Any) -> None:
    """vLLM's own `log_non_default_args` (what `vllm serve` logs at start-up) yields a line that
    processor_signal reads as CONFIGURED; for a command without the flag, as MISSING."""
    from vllm.entrypoints.utils import log_non_default_args

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("vllm.entrypoints.utils")
    handler = Keep()
    logger.addHandler(handler)
    try:
        args = _serve_args(serve_parser, ServerSettings())
        log_non_default_args(args)
        args.logits_processors = None  # as if a wrapper had dropped the flag
        log_non_default_args(args)
    finally:
        logger.removeHandler(handler)
    with_flag, without = [line for line in lines if "non-default args:" in line]
    assert processor_signal(f"(APIServer pid=1) INFO 11-30 02:19:06 [utils.py:253] {with_flag}") is (
        ProcessorSignal.CONFIGURED
    )
    assert processor_signal(without) is ProcessorSignal.MISSING


def test_the_page_request_is_a_valid_chat_request_carrying_the_ngram_arguments() -> None:
    """The body the engine sends validates as vLLM's ChatCompletionRequest; the n-gram arguments
    reach the sampling parameters' extra_args, and the processor itself accepts them."""
    from vllm.entrypoints.openai.protocol import ChatCompletionRequest
    from vllm.model_executor.models.deepseek_ocr import NGramPerReqLogitsProcessor

    body = build_request(
        "deepseek-ai/DeepSeek-OCR", PROMPTS["markdown"], "iVBORw0KGgo=", temperature=0.0, max_tokens=8192
    )
    request = ChatCompletionRequest.model_validate(body)
    assert request.skip_special_tokens is False
    params = request.to_sampling_params(8192, None, {})
    assert params.extra_args == NGRAM_XARGS
    assert params.skip_special_tokens is False and params.temperature == 0.0
    NGramPerReqLogitsProcessor.validate_params(params)  # raises on a wrong type or name


def test_the_child_environment_names_variables_this_vllm_reads() -> None:
    import vllm.envs as envs

    for name in CHILD_ENV:
        if name.startswith("VLLM_"):
            assert name in envs.environment_variables, f"{name} is not read by this vLLM"


def test_the_vllm_command_is_installed_next_to_the_package() -> None:
    assert shutil.which("vllm") is not None, "the vllm command is not on PATH (vllm.managed.command)"


def test_the_routes_the_engine_calls_are_served_by_vllm() -> None:
    from vllm.entrypoints.openai.api_server import router

    paths = {(method, route.path) for route in router.routes for method in getattr(route, "methods", ())}
    assert {("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions")} <= paths


def test_the_contract_double_answers_in_vllms_own_response_shapes() -> None:
    """tests/fake_vllm.py stands in for vLLM in the client, supervisor and daemon tests; here its
    answers (a page, the model list, an error) are validated with vLLM's own response models."""
    import httpx
    from vllm.entrypoints.openai.protocol import ChatCompletionResponse, ErrorResponse, ModelList

    from .fake_vllm import FakeVllm

    body = build_request(
        "deepseek-ai/DeepSeek-OCR", PROMPTS["markdown"], _tiny_png_b64(), temperature=0.0, max_tokens=8192
    )
    with FakeVllm() as fake, httpx.Client(base_url=fake.url, timeout=10) as client:
        page = ChatCompletionResponse.model_validate(client.post("/v1/chat/completions", json=body).json())
        models = ModelList.model_validate(client.get("/v1/models").json())
        fake.fail_next(503)
        error = ErrorResponse.model_validate(client.post("/v1/chat/completions", json=body).json())
        unknown = ErrorResponse.model_validate(client.post("/v1/chat/completions", json={**body, "model": "x"}).json())
    assert page.choices[0].finish_reason == "stop" and page.usage.completion_tokens > 0
    assert [card.id for card in models.data] == ["deepseek-ai/DeepSeek-OCR"]
    assert (error.error.code, unknown.error.code) == (503, 404)


def _tiny_png_b64() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()
