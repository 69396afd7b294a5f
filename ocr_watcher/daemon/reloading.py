"""SIGHUP: the configuration read again and checked, before the daemon applies any of it. A
configuration that does not load, or names an engine that cannot run, is refused (None) and the
running one kept; settings read only at start keep their running values, with a warning."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, load_config
from ..engines.base import Engine
from ..reload import FIXED_KEYS, changed_keys, keep_restart_only, one_line
from .engine_set import EngineSet

log = logging.getLogger("ocr_watcher")


@dataclass(frozen=True)
class Reloaded:
    config: Config
    engines: dict[tuple, Engine]  # built for it, not running yet
    changed: list[str]  # the keys that changed
    source: str  # where it was read from, for the log


def read_reload(
    running: Config, config_path: Path | None, overrides: dict[str, Any], engines: EngineSet
) -> Reloaded | None:
    source = str(config_path) if config_path else "the environment"
    try:
        loaded = load_config(config_path, overrides=overrides)
        new, ignored = keep_restart_only(running, loaded)
        built = engines.missing_for(new)
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s", one_line(str(exc)))
        return None
    except Exception:  # whatever went wrong, the daemon keeps serving with what it has
        log.exception("reload failed, keeping the running configuration")
        return None
    for key, kept, wanted in ignored:
        log.warning(
            "reload: %s is %r in %s, but it %s; keeping %r until the service is restarted",
            key,
            wanted,
            source,
            "cannot change while the daemon runs" if key in FIXED_KEYS else "is read only at start",
            kept,
        )
    return Reloaded(new, built, list(changed_keys(running, new)), source)
