"""Retention in the daemon: passes on a background thread, what they find reported as data."""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime

from ..config import Config
from ..hooks import Hooks, drain
from ..observe import OutboxMeasured, Report, Snapshot, Started
from ..spool.model import utc_now
from ..spool.store import JobStore
from .policy import Deletion, JobUsage, Limits, describe
from .sweeper import Retention

log = logging.getLogger("ocr_watcher.retention")


class RetentionHooks(Hooks):
    """Runs a pass at start and every `retention.interval_seconds` after the previous one ended.

    The pass runs on a background thread (the first one over a big outbox reads every job), so the
    main loop never waits on it. What it finds, the jobs deleted and the outbox's size, it reports as
    data (take_reports), which the service hands on to the other hooks from the main thread."""

    def __init__(self) -> None:
        self.retention: Retention | None = None
        self._store: JobStore | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reports: queue.SimpleQueue[Report] = queue.SimpleQueue()  # from the pass's thread
        self._last_end: float | None = None

    def on_start(self, started: Started) -> None:
        self._store = started.store
        try:
            self._start_pass(started.snapshot.config)
        except Exception:
            log.exception("retention: cannot start (will try again)")
            self._last_end = time.monotonic()

    def on_tick(self, snapshot: Snapshot) -> None:
        try:
            if self._due(snapshot.config):
                self._start_pass(snapshot.config)
        except Exception:
            log.exception("retention: internal error (will try again)")

    def on_stop(self, snapshot: Snapshot) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)  # a removal still running finishes from the trash next time

    def take_reports(self) -> list[Report]:
        return drain(self._reports)

    # -- internals ---------------------------------------------------------------------------------
    def _due(self, config: Config) -> bool:
        if self._last_end is None or self._stop.is_set():
            return False
        running = self._thread is not None and self._thread.is_alive()
        return not running and time.monotonic() - self._last_end >= config.retention.interval_seconds

    def _start_pass(self, config: Config) -> None:
        if self.retention is None:
            assert self._store is not None, "on_start first"
            self.retention = Retention(self._store, lease_grace_seconds=config.jobs.heartbeat_lease_seconds)
        limits = Limits.from_config(config.retention)  # read each time: SIGHUP changes it
        self._last_end = None
        self._thread = threading.Thread(target=self._run, args=(limits,), name="retention", daemon=True)
        self._thread.start()

    def _run(self, limits: Limits) -> None:
        assert self.retention is not None
        now = utc_now()
        try:
            result = self.retention.run_pass(
                limits, now, on_deleted=lambda d, job: self._on_deleted(d, job, now), should_stop=self._stop.is_set
            )
            if result.outbox_missing is None:
                self._reports.put(OutboxMeasured(result.total_bytes))
            for job_id, why in result.skipped:
                log.info("%s: kept by retention although over a limit: %s", job_id, why)
            if result.trash_removed:
                log.info("retention: removed %d leftovers from the trash", result.trash_removed)
        except Exception:
            log.exception("retention pass failed (will try again)")
        finally:
            self._last_end = time.monotonic()

    def _on_deleted(self, deletion: Deletion, job: JobUsage, now: datetime) -> None:
        log.info("%s: deleted by retention: %s", deletion.job_id, describe(deletion, job, now))
        self._reports.put(deletion)


def make_hooks(config: Config) -> RetentionHooks:
    return RetentionHooks()
