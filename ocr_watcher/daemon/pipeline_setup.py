"""The page pipeline's settings for this daemon, from its configuration."""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

from ..config import Config
from ..pipeline.runner import PipelineSettings


def pipeline_settings(config: Config, worker_id: str) -> PipelineSettings:
    workers = config.worker_count
    # Named after the worker, not the process: a restart after kill -9 finds and clears what the
    # dead process had rendered (the worker lock says no live daemon of this id uses it).
    worker_name = re.sub(r"[^A-Za-z0-9._-]", "_", worker_id)
    # The outbox's hash too: daemons of the same name on other outboxes (tests) must not share it.
    outbox_tag = hashlib.sha256(str(config.outbox.resolve()).encode()).hexdigest()[:8]
    work_dir = (config.pipeline.work_dir or Path(tempfile.gettempdir())) / f"ocr-watcher-{worker_name}-{outbox_tag}"
    return PipelineSettings(
        render_threads=workers,
        engine_threads=workers,
        render_ahead=max(2, workers),
        render_timeout=config.pipeline.render_timeout_seconds,
        render_memory_mb=config.pipeline.render_memory_mb,
        work_dir=work_dir,
        worker_id=worker_id,
    )
