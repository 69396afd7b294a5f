"""Configuration from the environment: `OCR_WATCHER_*` variables (and the retention names
`MAX_JOB_*` as they are) as a tree of keys that `config.load_config` merges over the file's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

ENV_PREFIX = "OCR_WATCHER_"
ENV_CONFIG_FILE = "OCR_WATCHER_CONFIG"
# Retention limits are read under these names as they are (the service this one replaces used them).
RETENTION_ENV = {
    "MAX_JOB_STORAGE_MB": ("retention", "max_job_storage_mb"),
    "MAX_JOB_COUNT": ("retention", "max_job_count"),
    "MAX_JOB_AGE_HOURS": ("retention", "max_job_age_hours"),
}


def _parse_env_value(raw: str) -> Any:
    """Environment values are YAML flow values (`null`, `[a, b]`, `{k: v}`); scalars stay strings,
    which pydantic converts where a number or a flag is wanted (so `WORKER_ID=0` stays the name "0")."""
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return raw if isinstance(parsed, (bool, int, float)) else parsed


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`OCR_WATCHER_INTAKE__SETTLE_SECONDS=5` -> {"intake": {"settle_seconds": 5}}."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if name in RETENTION_ENV:
            _set_path(tree, list(RETENTION_ENV[name]), _parse_env_value(raw))
        elif name.startswith(ENV_PREFIX) and name != ENV_CONFIG_FILE:
            keys = name[len(ENV_PREFIX) :].lower().split("__")
            _set_path(tree, keys, _parse_env_value(raw))
    return tree
