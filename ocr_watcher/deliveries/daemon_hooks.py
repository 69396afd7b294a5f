"""Deliveries as a daemon hook: as jobs end, the Recorder writes what they owe (main thread, before
the ending is saved); the delivery worker process (worker.py) is handed each one and tells the
receivers; what it achieved comes back down its pipe as reports for the metrics."""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from ..config import Config
from ..hooks import Hooks, drain
from ..observe import DeliveryEnded, Report, Snapshot, Started
from ..spool.model import JobMeta, Status
from .recorder import Recorder
from .settings import has_targets, settings_of

log = logging.getLogger("ocr_watcher.deliveries")
RESTART_SECONDS = 5.0  # a worker that died is started again at most this often
STOP_GRACE_SECONDS = 5.0


class DeliveryHooks(Hooks):
    def __init__(self, config: Config) -> None:
        self.config = config  # replaced by each tick's snapshot (a reload)
        self.recorder: Recorder | None = None
        self._reports: queue.SimpleQueue[DeliveryEnded] = queue.SimpleQueue()
        self._worker: subprocess.Popen[str] | None = None
        self._argv: list[str] = []
        self._sent_config: Config | None = None
        self._next_start = 0.0
        self._wanted = False

    def on_start(self, started: Started) -> None:
        self.config = started.snapshot.config
        store = started.store
        self.recorder = Recorder(store, started.control.worker_id, lambda: self.config)
        lease = self.config.jobs.heartbeat_lease_seconds
        args = [str(store.root), started.control.worker_id, str(lease), "1" if store.fsync else "0"]
        self._argv = [sys.executable, "-m", "ocr_watcher.deliveries.worker", *args, self.config.log_level]
        # No worker where nothing is to be told: started once a profile has a target or one is owed.
        self._wanted = has_targets(self.config) or self.recorder.folder.any()
        if self._wanted:
            self._start_worker()

    def on_tick(self, snapshot: Snapshot) -> None:
        self.config = snapshot.config
        if self.recorder is None:
            return
        if self.config is not self._sent_config:  # a reload: the worker gets the new targets
            self._wanted = self._wanted or has_targets(self.config)
            if self._running():
                self._send({"settings": settings_of(self.config)})
                self._sent_config = self.config
        if self._wanted and not self._running() and time.monotonic() >= self._next_start:
            if self._worker is not None:
                log.warning("the delivery worker is not running (exit %s); starting it again", self._worker.poll())
            self._start_worker()
        for name, confirmed in self.recorder.retry_unwritten():
            self._owe(name, confirmed)

    def ending_work(self, meta: JobMeta) -> Callable[[], None] | None:
        """A completion's pending files, written by the result thread: no fsync on the main one."""
        return self.recorder.prepare(meta) if self.recorder is not None else None

    def on_job_ending(self, meta: JobMeta) -> None:
        if self.recorder is not None:
            for name, confirmed in self.recorder.record(meta, confirmed=False):
                self._owe(name, confirmed)

    def on_job_status(self, meta: JobMeta, previous: Status | None) -> None:
        if self.recorder is not None and meta.status.terminal:
            for name, confirmed in self.recorder.record(meta, confirmed=True):
                self._owe(name, confirmed)

    def on_exit(self, snapshot: Snapshot) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if worker.stdin is not None:
            try:
                worker.stdin.close()  # its cue to finish what is in flight and stop
            except OSError:
                pass
        try:
            worker.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

    def take_reports(self) -> list[Report]:
        return drain(self._reports)

    # -- the worker ----------------------------------------------------------------------------
    def _start_worker(self) -> None:
        self._next_start = time.monotonic() + RESTART_SECONDS
        try:
            worker = subprocess.Popen(
                self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, close_fds=True
            )
        except OSError as exc:
            log.warning("cannot start the delivery worker: %s", exc)
            return
        self._worker = worker
        self._sent_config = self.config
        self._send({"settings": settings_of(self.config)})
        reader = threading.Thread(target=self._read, args=(worker.stdout,), name="delivery-reports", daemon=True)
        reader.start()

    def _read(self, out: IO[str] | None) -> None:
        for line in out or ():
            try:
                report = json.loads(line)
                self._reports.put(DeliveryEnded(str(report["kind"]), str(report["outcome"])))
            except (ValueError, KeyError, TypeError):
                log.warning("the delivery worker said something it should not: %r", line[:200])

    def _owe(self, name: str, confirmed: bool) -> None:
        """The worker reads the pending file itself: the daemon's main thread encodes nothing more.
        (Without a worker yet, the next tick starts one, which finds the file.)"""
        self._wanted = True
        self._send({"owe": name, "confirmed": confirmed})

    def _running(self) -> bool:
        return self._worker is not None and self._worker.poll() is None

    def _send(self, message: dict[str, Any]) -> None:
        """A line down the worker's pipe. A worker that is gone misses it; its successor finds the
        pending files (what it was told is on disk already)."""
        worker = self._worker
        if worker is None or worker.stdin is None:
            return
        try:
            worker.stdin.write(json.dumps(message, separators=(",", ":")) + "\n")
            worker.stdin.flush()
        except (OSError, ValueError):
            pass


def make_hooks(config: Config) -> Hooks:
    return DeliveryHooks(config)
