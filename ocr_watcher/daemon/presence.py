"""Whether the outbox is there and is the one the daemon started on (an unmounted share, a moved
folder are not): while it is away nothing is claimed into it, and nothing read from it counts."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..spool.store import JobStore
from ..storage_watch import StorageWatch

log = logging.getLogger("ocr_watcher")
PRESENCE_CHECK_SECONDS = 0.25  # how often it is looked at


class OutboxPresence:
    def __init__(self, store: JobStore, storage: StorageWatch, on_back: Callable[[], None]) -> None:
        self.store = store
        self.storage = storage
        self.on_back = on_back  # it came back: list it again
        self.missing: str | None = None  # why it is not there, at the last look
        self._last_look = -PRESENCE_CHECK_SECONDS

    def present(self, now: float) -> bool:
        if now - self._last_look < PRESENCE_CHECK_SECONDS:
            return self.missing is None
        self._last_look = now
        was, self.missing = self.missing, self.store.missing()
        if self.missing is not None:
            self.storage.failed("outbox", self.missing)
        elif was is not None:
            self.storage.succeeded("outbox")
            log.info("the outbox %s is back; listing it again", self.store.root)
            self.on_back()
        return self.missing is None
