"""What the job API's routes share: the daemon's side of them, and how they answer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from ..config import Config
from ..eta.published import QueueFiles
from ..observe import JobControl
from ..spool.layout import InboxLayout
from ..spool.store import JobStore
from .idempotency import IdempotencyKeys
from .index import JobIndex
from .upload import sweep_stale_uploads

log = logging.getLogger("ocr_watcher.api")
NO_STORE = {"Cache-Control": "no-store"}


@dataclass
class ApiContext:
    config: Callable[[], Config]  # the running configuration (a reload may change tokens and limits)
    store: JobStore
    control: JobControl
    main_loop_ok: Callable[[], bool]
    engine_ready: Callable[[], bool]
    on_upload: Callable[[int, int], None] = lambda status, size: None  # (HTTP status, bytes): metrics

    def __post_init__(self) -> None:
        self.index = JobIndex(self.store)
        self.estimates = QueueFiles(self.store.layout)
        self.keys = IdempotencyKeys(self.store.layout, fsync=self.store.fsync)
        self.index.warm_up()  # in the background: the first GET /jobs or /health need not wait for it
        self.uploads = InboxLayout(self.config().inbox).uploads
        if sweep_stale_uploads(self.uploads):
            log.info("removed uploads that a crash interrupted (older than an hour) from %s", self.uploads)


def json_answer(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=NO_STORE)
