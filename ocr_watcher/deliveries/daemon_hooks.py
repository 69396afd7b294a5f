"""Deliveries as a daemon hook: jobs that end are handed to the Deliverer, whose threads tell the
receivers; what they achieved comes back as reports for the metrics."""

from __future__ import annotations

import logging
import queue
import socket
import time

from ..config import Config
from ..hooks import Hooks, drain
from ..observe import DeliveryEnded, Report, Snapshot, Started
from ..spool.model import JobMeta, Status
from ..spool.workers import Heartbeats
from .deliverer import Deliverer

log = logging.getLogger("ocr_watcher.deliveries")
RECOVER_SECONDS = 30.0  # how often the pending folder is looked at for a gone daemon's deliveries


class DeliveryHooks(Hooks):
    def __init__(self, config: Config) -> None:
        self.config = config  # replaced by each tick's snapshot (a reload)
        self.deliverer: Deliverer | None = None
        self._reports: queue.SimpleQueue[DeliveryEnded] = queue.SimpleQueue()
        self._next_recover = 0.0

    def on_start(self, started: Started) -> None:
        self.config = started.snapshot.config
        store = started.store
        beats = Heartbeats(
            store.layout, started.control.worker_id, socket.gethostname(), self.config.jobs.heartbeat_lease_seconds
        )
        self.deliverer = Deliverer(
            store, started.control.worker_id, lambda: self.config, self._reports.put, beats.is_gone
        )
        taken = self.deliverer.recover()
        if taken:
            log.info("%d deliveries owed from before the start; sending them", taken)
        self.deliverer.start()
        self._next_recover = time.monotonic() + RECOVER_SECONDS

    def on_tick(self, snapshot: Snapshot) -> None:
        self.config = snapshot.config
        if self.deliverer is None:
            return
        self.deliverer.retry_unwritten()
        if time.monotonic() >= self._next_recover:
            self._next_recover = time.monotonic() + RECOVER_SECONDS
            self.deliverer.recover()

    def on_job_ending(self, meta: JobMeta) -> None:
        if self.deliverer is not None:
            self.deliverer.record(meta, confirmed=False)

    def on_job_status(self, meta: JobMeta, previous: Status | None) -> None:
        if self.deliverer is not None and meta.status.terminal:
            self.deliverer.record(meta, confirmed=True)

    def on_exit(self, snapshot: Snapshot) -> None:
        if self.deliverer is not None:
            self.deliverer.stop()

    def take_reports(self) -> list[Report]:
        return drain(self._reports)


def make_hooks(config: Config) -> Hooks:
    return DeliveryHooks(config)
