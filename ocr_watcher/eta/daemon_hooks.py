"""Estimates as a daemon hook: page costs measured from the pages that finish, the queue played
forward every PUBLISH_SECONDS, and the result published for the job API and the CLI."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..hooks import Hooks
from ..observe import Snapshot, Started
from .estimate import estimate_queue
from .published import publish, queue_file, record, withdraw
from .rates import PageCosts

log = logging.getLogger("ocr_watcher.eta")
PUBLISH_SECONDS = 1.0  # at least this often while there is work
SOONEST_SECONDS = 0.25  # after a page ends: soon, so that a job's estimate follows its progress


class EtaHooks(Hooks):
    def __init__(self) -> None:
        self.costs = PageCosts()
        self._path: Path | None = None
        self._worker_id = ""
        self._next = 0.0  # monotonic time of the next publication
        self._last = 0.0  # and of the latest
        self._shown = False  # the file lists jobs: an empty queue is published once, then withdrawn

    def on_start(self, started: Started) -> None:
        self._worker_id = started.control.worker_id
        self._path = queue_file(started.store.layout, self._worker_id)

    def on_page(self, job_id: str, page: int, outcome: str, info: dict[str, Any]) -> None:
        if outcome != "done" or not isinstance(info.get("engine"), str):
            return
        took = sum(float(info.get(key) or 0.0) for key in ("seconds_render", "seconds_queue", "seconds_engine"))
        self.costs.page_done(info["engine"], time.monotonic(), took)
        self._next = min(self._next, self._last + SOONEST_SECONDS)

    def on_tick(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        if self._path is None or now < self._next:
            return
        self._last, self._next = now, now + PUBLISH_SECONDS
        entries = snapshot.queue()
        if not entries and not self._shown:
            return
        costs = self.costs.seconds_per_page()
        lane = snapshot.config.pipeline.fast_lane_pages
        estimates = estimate_queue(entries, lane, costs, self.costs.page_lives())
        try:
            publish(self._path, record(self._worker_id, time.time(), estimates, costs, snapshot.inbox_waiting))
        except OSError as exc:  # the outbox is full, read-only or away: the daemon says so elsewhere
            log.debug("cannot publish the estimates: %s", exc)
            return
        self._shown = bool(entries)

    def on_exit(self, snapshot: Snapshot) -> None:
        if self._path is not None:
            withdraw(self._path)


def make_hooks(config: Config) -> Hooks:
    return EtaHooks()
