"""The engines a daemon runs: one per distinct engine setting, built at start and on reload, and
the supervised `vllm serve` when engine vllm has no configured servers."""

from __future__ import annotations

import logging
from typing import Any

from ..config import Config, ConfigError, ProfileConfig
from ..engines.base import Engine, EngineUnavailable
from ..engines.registry import build_engine, build_managed_server, job_settings, resolve_engine_name
from ..pipeline.scheduler import RunningJob

log = logging.getLogger("ocr_watcher")


def engine_key(name: str, profile: ProfileConfig) -> tuple:
    """Profiles that ask for the same engine settings share one engine instance."""
    return (name, profile.language, profile.dpi, profile.model, profile.mode)


def engine_name_for_profile(config: Config, profile: str) -> str:
    return resolve_engine_name(config.profile(profile).engine or config.engine, config)


class EngineSet:
    def __init__(self) -> None:
        self.engines: dict[tuple, Engine] = {}
        self.managed_server: Any = None  # the supervised `vllm serve`, when engine vllm runs one

    def get(self, config: Config, name: str, profile: ProfileConfig) -> Engine:
        settings = job_settings(name, config, profile)  # resolved: one engine per distinct setting
        key = engine_key(name, settings)
        engine = self.engines.get(key)
        if engine is None:
            engine = build_engine(name, config, settings, managed=self.managed_server)
            self.engines[key] = engine
        return engine

    def for_job(self, config: Config, job: RunningJob) -> Engine:
        # The settings recorded at the claim, so a reload cannot change them half-way through a job;
        # a job claimed before they were recorded takes its profile's current ones.
        pinned = ProfileConfig(**job.settings) if job.settings else None
        return self.get(config, job.engine, pinned or config.profile(job.profile))

    def start(self, config: Config) -> int:
        """Build every profile's engine (EngineUnavailable names the first that cannot run); the
        most pages any of them wants in flight at once."""
        self._start_managed_server(config)
        for profile in {"default", *config.profiles}:
            name = engine_name_for_profile(config, profile)
            try:
                self.get(config, name, config.profile(profile))
            except EngineUnavailable as exc:
                raise EngineUnavailable(f"engine {name!r} (profile {profile!r}) cannot run: {exc}") from exc
        return max((engine.concurrency for engine in self.engines.values()), default=0)

    def _start_managed_server(self, config: Config) -> None:
        """Engine vllm without configured servers: start `vllm serve` ourselves, without waiting for it.
        Loading the model takes minutes (a first start downloads it); meanwhile files are claimed, the
        HTTP endpoints say what is happening (/readyz: "vLLM is starting (42 s)"), and pages wait for
        the server (engines/vllm.py: a start-up does not use up their connect_retry_max_seconds)."""
        profiles = {"default", *config.profiles}
        if config.vllm.servers or all(engine_name_for_profile(config, p) != "vllm" for p in profiles):
            return
        # No notifier: READY=1 comes before the model is loaded, and EXTEND_TIMEOUT_USEC= after it would
        # stretch the watchdog instead of the start-up timeout.
        self.managed_server = build_managed_server(config)
        log.info("starting vLLM (%s); pages wait for it to load the model", config.vllm.model)
        self.managed_server.start()

    def missing_for(self, config: Config) -> dict[tuple, Engine]:
        """Engines a new configuration needs that are not running yet, built and checked now, so
        that a reload naming an engine that cannot run is refused rather than failing jobs later."""
        built: dict[tuple, Engine] = {}
        for name in {"default", *config.profiles}:
            profile = config.profile(name)
            engine_name = resolve_engine_name(profile.engine or config.engine, config)
            settings = job_settings(engine_name, config, profile)
            key = engine_key(engine_name, settings)
            if key in self.engines or key in built:
                continue
            try:
                built[key] = build_engine(engine_name, config, settings, managed=self.managed_server)
            except EngineUnavailable as exc:
                for engine in built.values():
                    engine.close()
                setting = f"profiles.{name}.engine" if profile.engine else "engine"
                raise ConfigError(f"{setting}: engine {engine_name!r} cannot run: {exc}") from exc
        return built

    def close(self) -> None:
        for engine in self.engines.values():
            try:
                engine.close()
            except Exception:
                log.exception("closing engine %s failed", getattr(engine, "name", engine))
        if self.managed_server is not None:
            self.managed_server.stop()
