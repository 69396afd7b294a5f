"""Building engines by name. The GPU engine plugs in here without the CPU path importing it."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from typing import Any

from ..config import Config, ProfileConfig
from .base import Engine

log = logging.getLogger("ocr_watcher.engines")


def gpu_engine_available() -> bool:
    """vllm is only used where it is installed and a GPU is visible; checked without importing it."""
    return importlib.util.find_spec("vllm") is not None and shutil.which("nvidia-smi") is not None


def resolve_engine_name(name: str, config: Config) -> str:
    """`auto` becomes a concrete engine: vllm where servers are configured or a GPU and vLLM are
    installed here (a managed server), else hybrid (each PDF page's own text layer where it can be
    trusted, Tesseract where not: engines/hybrid.py)."""
    if name != "auto":
        return name
    return "vllm" if config.vllm.servers or gpu_engine_available() else "hybrid"


def build_managed_server(config: Config) -> Any:
    """The supervised `vllm serve` child for engine vllm without configured servers (not started). No
    systemd notifier: the daemon does not wait for it to load, so there is no start-up to extend."""
    from .vllm_server import ManagedServer, ServerSettings, command_words

    managed = config.vllm.managed
    settings = ServerSettings(
        model=config.vllm.model,
        command=command_words(managed.command),
        host=managed.host,
        port=managed.port,
        gpu_memory_utilization=managed.gpu_memory_utilization,
        extra_args=tuple(managed.extra_args),
        startup_timeout_seconds=managed.startup_timeout_seconds,
    )
    return ManagedServer(settings)


def job_settings(name: str, config: Config, profile: ProfileConfig) -> ProfileConfig:
    """The settings engine `name` runs with for `profile`, resolved (the profile's own, else the
    engine's section). A job records them at its claim and keeps them, so neither a reload nor a
    restart changes its language or resolution half-way through."""
    if name in ("tesseract", "hybrid"):
        tess = config.tesseract
        return ProfileConfig(language=profile.language or tess.language, dpi=profile.dpi or tess.dpi)
    if name == "vllm":
        vllm = config.vllm
        return ProfileConfig(
            model=profile.model or vllm.model, mode=profile.mode or vllm.mode, dpi=profile.dpi or vllm.dpi
        )
    return ProfileConfig()


def settings_record(settings: ProfileConfig) -> dict[str, Any]:
    """What metadata.json's `engine` holds of them."""
    return settings.model_dump(include={"language", "dpi", "model", "mode"}, exclude_none=True)


def build_engine(name: str, config: Config, profile: ProfileConfig | None = None, managed: Any = None) -> Engine:
    profile = profile or ProfileConfig()
    if name == "hybrid":
        from .hybrid import HybridEngine

        return HybridEngine(build_engine("tesseract", config, profile))
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
            in_process=tess.in_process,
            workers=config.worker_count,
        )
    if name == "vllm":
        from .vllm import VllmEngine

        vllm = config.vllm
        return VllmEngine(
            vllm.servers or [f"http://{vllm.managed.host}:{vllm.managed.port}"],
            model=profile.model or vllm.model,
            mode=profile.mode or vllm.mode,
            max_tokens=vllm.max_tokens,
            max_in_flight=vllm.max_in_flight,
            request_timeout=vllm.request_timeout_seconds,
            connect_retry_max_seconds=vllm.connect_retry_max_seconds,
            timeout_retries=vllm.timeout_retries,
            loop_retry_temperatures=vllm.loop_retry_temperatures,
            dpi=profile.dpi or vllm.dpi,
            max_side_px=vllm.max_side_px,
            health_interval=vllm.health_interval_seconds,
            managed=managed,
        )
    if name == "text":
        from .text import TextLayerEngine

        return TextLayerEngine()
    raise ValueError(f"unknown engine {name!r}")
