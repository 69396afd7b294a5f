"""What a SIGHUP reload may change: pure comparisons of two validated configurations."""

from __future__ import annotations

from .config import Config

# Settings a reload cannot change: the folders and the identity define which jobs are this daemon's.
FIXED_KEYS = ("inbox", "outbox", "worker_id")
# Settings read once at start (by the pipeline, the job store, the engines, the HTTP server).
RESTART_ONLY = (
    *FIXED_KEYS,
    "intake.use_inotify",
    "pipeline.workers",
    "pipeline.render_timeout_seconds",
    "pipeline.render_memory_mb",
    "pipeline.page_timeout_seconds",
    "pipeline.fast_lane_pages",
    "pipeline.work_dir",
    "tesseract",
    "jobs.fsync",
    "http.enabled",
    "http.host",
    "http.port",
    "http.api",
)


def _flatten(tree: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat: dict[str, object] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of the settings that differ, e.g. ["intake.ignore", "profiles.urgent.priority"].
    Python-mode dumps: secrets (http.api_tokens) compare by value there, not as "**********"."""
    before, after = _flatten(old.model_dump()), _flatten(new.model_dump())
    return sorted(key for key in before.keys() | after.keys() if before.get(key, None) != after.get(key, None))


def _restart_only(key: str) -> bool:
    return any(key == name or key.startswith(name + ".") for name in RESTART_ONLY)


def keep_restart_only(running: Config, loaded: Config) -> tuple[Config, list[tuple[str, object, object]]]:
    """`loaded` with every RESTART_ONLY setting put back to its running value, and the
    (key, running value, value loaded) of each setting that was put back."""
    before, after = _flatten(running.model_dump(mode="json")), _flatten(loaded.model_dump(mode="json"))
    put_back = [
        (key, before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if _restart_only(key) and before.get(key) != after.get(key)
    ]
    if not put_back:
        return loaded, []
    current, wanted = running.model_dump(), loaded.model_dump()
    for dotted in RESTART_ONLY:
        *parents, last = dotted.split(".")
        source, target = current, wanted
        for part in parents:
            source, target = source[part], target[part]
        target[last] = source[last]
    return Config.model_validate(wanted), put_back


def one_line(message: str) -> str:
    """A multi-line message as one log line (journald makes each line its own entry)."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip()).replace(":;", ":")
