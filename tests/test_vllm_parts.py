"""The vllm engine's pure parts: DeepSeek-OCR's prompt size per page (what caps max_tokens), the
n-gram processor probe's verdict, /v1/models answers, and the check that an answer is text at all."""

from __future__ import annotations

import pytest

from ocr_watcher.engines.deepseek_tokens import UNKNOWN_RESERVE, answer_budget, image_tokens, tile_grid
from ocr_watcher.engines.text_check import not_text_reason
from ocr_watcher.engines.vllm import knows_prompt_size
from ocr_watcher.engines.vllm_pool import probe_request, probe_verdict, served_models


@pytest.mark.parametrize(
    ("size", "grid", "tokens"),
    [
        ((600, 600), (1, 1), 273),  # fits one tile: the global view only (16 rows of 16 + newline, 1 separator)
        ((1224, 1584), (2, 3), 903),  # Letter at 144 dpi: what a real vLLM counts for it
        ((1191, 1684), (2, 3), 903),  # A4
        ((1584, 1224), (3, 2), 273 + 31 * 20),  # Letter landscape
        ((700, 4000), (1, 6), 273 + 11 * 60),  # a long receipt: the most tokens any page takes
    ],
)
def test_image_tokens_follow_vllms_deepseek_ocr_layout(size, grid, tokens):
    assert tile_grid(*size) == grid
    assert image_tokens(*size) == tokens


def test_the_answer_budget_leaves_room_for_the_prompt():
    assert answer_budget(8192, 1224, 1584) == 8192 - 903 - 64
    assert answer_budget(8192, 1224, 1584, known_model=False) == 8192 - UNKNOWN_RESERVE
    assert answer_budget(512, 1224, 1584) == 1  # a context too small for the page still asks for one
    assert knows_prompt_size("deepseek-ai/DeepSeek-OCR") and not knows_prompt_size("deepseek-ai/DeepSeek-OCR-2")


def test_the_probe_tells_a_server_with_the_processor_from_one_without():
    assert probe_request("m")["vllm_xargs"] == {"ngram_size": 0} and probe_request("m")["max_tokens"] == 1
    loaded = '{"error": {"message": "`ngram_size` has to be a strictly positive integer, got 0.", "code": 400}}'
    assert probe_verdict(400, loaded)[0] is True
    verdict, reason = probe_verdict(200, '{"choices": []}')
    assert verdict is False and "--logits_processors" in reason and "VLLM_USE_V2_MODEL_RUNNER=0" in reason
    assert probe_verdict(400, '{"error": {"message": "something else"}}')[0] is None
    assert probe_verdict(503, "")[0] is None


def test_models_answers_give_each_models_context():
    cards = [{"id": "a", "max_model_len": 8192}, {"id": "b"}, {"id": "c", "max_model_len": 0}]
    body = {"object": "list", "data": cards}
    assert served_models(body) == {"a": 8192, "b": None, "c": None}
    with pytest.raises(ValueError):
        served_models({"data": [{"no": "id"}]})


@pytest.mark.parametrize(
    "text",
    [
        "# Annual report\n\nRevenue grew by 12 % to 4.2 billion euros in 2025.",
        "<table><tr><td>Q1</td><td>1,204</td></tr><tr><td>Q2</td><td>1,377</td></tr></table> totals by quarter",
        "Die Prüfung ergab keine Beanstandungen; Größe und Maße stimmen überein.",
        "第一章 总则 本规定适用于所有部门的文件管理工作。",
        "$$E = mc^2$$ where $m$ is the mass and $c$ the speed of light in vacuum.",
        "42",  # too short to judge
    ],
)
def test_text_in_any_language_is_text(text):
    assert not_text_reason(text) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("\ufffd\ufffdab\ufffd\x01\x02 cd\ufffd\ufffd\x07 ef\ufffd\ufffd\ufffd gh\x03\x04\x05 ij\ufffd kl", "broken"),
        ("%$#@ ~^~^ ;:;: +/+/ {}{} ¤¤¤¤ §§§§ °°°° ±±±± ¬¬¬¬ ¦¦¦¦", "form words or numbers"),
    ],
)
def test_bytes_and_symbol_soup_are_not_text(text, why):
    assert why in (not_text_reason(text) or "")


def test_tokens_that_decode_to_almost_nothing_are_not_text():
    """What a real vLLM 0.32 answered with random weights: 48 tokens as 15 dots, or as nothing."""
    assert not_text_reason("...............", "...............", 48) == "48 tokens came back as 15 characters"
    assert not_text_reason("", "", 48) == "48 tokens came back as 0 characters"
    assert not_text_reason("", "", 8) is None  # too few tokens to judge (a blank page's answer)
    grounded = "<|ref|>text<|/ref|><|det|>[[100, 120, 900, 300]]<|/det|>\nTotal: 1,250.00 EUR"
    assert not_text_reason("Total: 1,250.00 EUR", grounded, 30) is None  # tags take about 2 characters a token
