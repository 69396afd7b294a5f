"""Building engines by name. The GPU engine plugs in here without the CPU path importing it."""

from __future__ import annotations

import importlib.util
import logging
import shutil

from ..config import Config, ProfileConfig
from .base import Engine

log = logging.getLogger("ocr_watcher.engines")


def gpu_engine_available() -> bool:
    """vllm is only used where it is installed and a GPU is visible; checked without importing it."""
    return importlib.util.find_spec("vllm") is not None and shutil.which("nvidia-smi") is not None


def resolve_engine_name(name: str) -> str:
    """`auto` becomes a concrete engine. Until the vllm engine lands, `auto` means tesseract."""
    if name != "auto":
        return name
    if gpu_engine_available():
        log.warning("a GPU and vLLM are present, but this build has no vllm engine yet; using tesseract")
    return "tesseract"


def build_engine(name: str, config: Config, profile: ProfileConfig | None = None) -> Engine:
    profile = profile or ProfileConfig()
    if name == "tesseract":
        from .tesseract import TesseractEngine

        tess = config.tesseract
        return TesseractEngine(
            command=tess.command,
            language=profile.language or tess.language,
            dpi=profile.dpi or tess.dpi,
            max_side_px=tess.max_side_px,
            timeout=config.pipeline.page_timeout_seconds,
            psm=tess.psm,
        )
    if name == "text":
        from .text import TextLayerEngine

        return TextLayerEngine()
    raise ValueError(f"unknown engine {name!r}")
