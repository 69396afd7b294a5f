"""The daemon: wires intake -> job store -> pipeline together and runs the main loop.

One main thread runs a short tick loop. Signal handlers only set flags; pipeline threads only send
events; so every change to a job happens on this thread, through the one owner of our jobs
(daemon/jobs.py), in order. The rules it follows are the pure decisions of daemon/lifecycle.py.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .calls import CallQueue
from .config import Config
from .daemon.claims import Claimed, Claims
from .daemon.controls import check_control, check_controls, check_fencing
from .daemon.engine_set import EngineSet, engine_name_for_profile
from .daemon.jobs import JobOwner
from .daemon.outbox_scan import OutboxScanner
from .daemon.pipeline_setup import pipeline_settings
from .daemon.presence import OutboxPresence
from .daemon.record_saves import RecordSaved
from .daemon.reloading import read_reload
from .daemon.result_writes import ResultWritten
from .daemon.takeover import Takeover
from .daemon.terminal import TerminalJobs
from .engines.base import EngineUnavailable
from .hooks import HookList
from .intake.intake import Intake, claim_request
from .intake.sniff import Sniff
from .observe import OutboxMeasured, Snapshot, Started, snapshot_of
from .pipeline.runner import Event, Pipeline
from .pipeline.scheduler import PageScheduler
from .spool.claim import Claimer
from .spool.store import JobStore
from .spool.workers import Heartbeats, WorkerIdInUse, lock_worker_id
from .storage_watch import StorageWatch

log = logging.getLogger("ocr_watcher")
TICK_SECONDS = 0.25
CONTROL_CHECK_SECONDS = 1.0
METADATA_FLUSH_SECONDS = 1.0


WAKE: Any = object()  # put on the event queue to end the main loop's wait early
T = TypeVar("T")


class StartupError(Exception):
    """The daemon cannot start (exit code 78 like a config error: restarting will not help)."""


class Service:
    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        hooks: HookList | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self._config = config
        self.hooks = hooks or HookList()
        self.config_path = config_path
        self.overrides = overrides or {}  # command-line flags: applied again on every reload
        self.worker_id = config.resolved_worker_id
        self.host = socket.gethostname()
        self.store = JobStore(config.outbox, fsync=config.jobs.fsync)
        self.heartbeats = Heartbeats(self.store.layout, self.worker_id, self.host, config.jobs.heartbeat_lease_seconds)
        self.claimer = Claimer(config.inbox, self.store, self.worker_id)
        self.intake = Intake(config, self.engine_name_for_profile, wake=lambda: self.events.put(WAKE))
        self.scheduler = PageScheduler(config.pipeline.fast_lane_pages)
        self.events: queue.Queue[Event | ResultWritten | Claimed | RecordSaved] = queue.Queue()
        self.engines = EngineSet()
        self.storage = StorageWatch(self.hooks.on_storage_state)
        self.terminal = TerminalJobs(self.store)
        self.jobs = JobOwner(
            config,
            self.store,
            self.scheduler,
            self.hooks,
            self.storage,
            self.terminal,
            self.engine_name_for_profile,
            lambda: self.intake.settle,
            post=self.events.put,
        )
        self.takeover = Takeover(self.jobs, self.storage, self.worker_id, self.host)
        self.scanner = OutboxScanner(self.jobs, self.takeover, self.claimer, self.heartbeats)
        self.outbox_bytes: int | None = None  # as retention last reported it (observe.OutboxMeasured)
        self.presence = OutboxPresence(self.store, self.storage, self.scanner.relist)
        post, settled = self.events.put, self.intake.settled
        self.claims = Claims(self.claimer, self.jobs, self.hooks, self.presence, post=post, settled=settled)
        self._stop_requested = False
        self._reload_requested = False
        self._lock_fd: int | None = None
        self._last_heartbeat = 0.0
        self._last_control = 0.0
        self._last_flush = 0.0
        self._last_rescan = time.monotonic()
        self.last_tick: float | None = None  # monotonic; read by other threads to judge liveness
        self._calls = CallQueue(wake=lambda: self.events.put(WAKE))
        self.pipeline = self._build_pipeline()

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        """A reload: the job owner follows the settings that may change while jobs run."""
        self._config = self.jobs.config = config

    # -- set-up ----------------------------------------------------------------------------------
    def _build_pipeline(self) -> Pipeline:
        engine_for_job = lambda job: self.engines.for_job(self.config, job)  # noqa: E731
        settings = pipeline_settings(self.config, self.worker_id)
        return Pipeline(settings, self.scheduler, self.store, engine_for_job, self.events.put)

    def engine_name_for_profile(self, profile: str) -> str:
        return engine_name_for_profile(self.config, profile)

    def start(self) -> None:
        if self.config.jobs.group_writable:
            os.umask(0o002)  # everything we create (folders, files, children's files) group-writable
        for folder in (self.config.inbox, self.config.outbox):
            folder.mkdir(parents=True, exist_ok=True)
        self.store.pin_identity()
        try:
            self._lock_fd = lock_worker_id(self.store.layout, self.worker_id)
        except WorkerIdInUse as exc:
            raise StartupError(str(exc)) from exc
        shutil.rmtree(self.pipeline.settings.work_dir, ignore_errors=True)
        try:
            wanted = self.engines.start(self.config)
        except EngineUnavailable as exc:
            raise StartupError(str(exc)) from exc
        self.pipeline.settings.engine_threads = max(self.config.worker_count, wanted)
        self.pipeline.settings.render_ahead = max(2, self.config.worker_count, wanted)
        self._write_heartbeat()
        recovered = self.claimer.recover(self.heartbeats.is_gone)
        if recovered:
            log.info("finished %d claims interrupted by a crash", len(recovered))
        self._guarded("scan", self.scanner.scan, True)  # a full or read-only outbox: the loop's scans go on
        self.intake.start_watching()
        self.pipeline.start()
        self.hooks.on_start(Started(self.snapshot(), self.store, self))
        log.info(
            "ocr-watcher started: worker %s, inbox %s, outbox %s, engine %s, %d workers, settle %.1f s",
            self.worker_id,
            self.config.inbox,
            self.config.outbox,
            self.engine_name_for_profile("default"),
            self.config.worker_count,
            self.intake.settle,
        )

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> int:
        self.start()
        try:
            while not self._stop_requested:
                self.tick()
        finally:
            self.shutdown()
        return 0

    def _handle_events(self, first: Event | None, stopping: bool = False) -> None:
        """`first` and whatever else is on the event queue, without waiting for more."""
        event = first if first is not None else self._next_event()
        while event is not None:
            try:
                if isinstance(event, Claimed):
                    self.claims.handle(event)
                elif event is not WAKE:
                    self.jobs.handle(event, stopping)
            except Exception:  # a bug around one job must not stop the others
                about = event.request.inbox_path if isinstance(event, Claimed) else event.job.job_id
                log.exception("%s: internal error while handling %s", about, type(event).__name__)
            event = self._next_event()

    def _next_event(self) -> Event | ResultWritten | Claimed | RecordSaved | None:
        try:
            return self.events.get_nowait()
        except queue.Empty:
            return None

    def tick(self) -> None:
        """One turn of the main loop: events, then the periodic steps that are due."""
        # Sleep until an event, an inotify hint (WAKE), or the next intake deadline, at most a tick.
        timeout = min(TICK_SECONDS, self.intake.seconds_until_due(time.monotonic()))
        try:
            self._handle_events(self.events.get(timeout=max(0.0, timeout)))
        except queue.Empty:
            pass
        now = time.monotonic()
        if now - self._last_heartbeat >= self._heartbeat_interval:
            self._guarded("heartbeat", check_fencing, self.jobs)
            self._write_heartbeat()
        self.intake.refresh(now)
        self.jobs.deferred.requeue_due(now)
        # While the outbox is away (an unmounted share, a moved folder) nothing is claimed into it,
        # and nothing read from it counts: an empty listing is not "every job is gone".
        present = self.presence.present(now)
        if present and self.jobs.inputs:
            self._guarded("settle", self.jobs.inputs.start_settled, now, self.jobs.active)
        if present:
            waiting = self.config.intake.max_queued_jobs - self.jobs.queued() - self.claims.in_flight
            self._guarded("intake", lambda: self.claims.claim_all(self.intake.take(waiting)))
        if present and now - self._last_control >= CONTROL_CHECK_SECONDS:
            self._guarded("control", check_controls, self.jobs)
            self._last_control = now
        if present and now - self.scanner.last_scan >= self.config.jobs.outbox_scan_interval_seconds:
            self._guarded("scan", self.scanner.scan)
        if now - self._last_flush >= METADATA_FLUSH_SECONDS:
            self._guarded("metadata", self.jobs.flush)
            self._last_flush = now
        if now - self._last_rescan >= self.config.intake.rescan_interval_seconds:
            self.intake.forget_reports()
            self._last_rescan = now
        self._calls.run_pending()
        self.last_tick = time.monotonic()
        self.hooks.on_tick(self.snapshot())
        self._take_reports()
        if self._reload_requested:  # after the hooks, so that they see it begin (RELOADING=1)
            self._reload()

    def _guarded(self, operation: str, step: Callable[..., object], *args: object) -> None:
        """One periodic step of the loop: a storage fault makes it wait (and say so), a bug is
        logged; neither stops the daemon, which tries the step again on its next turn."""
        try:
            step(*args)
        except OSError as exc:
            self.hooks.on_storage_error(operation, str(exc))
            self.storage.failed(operation, exc)
        except Exception:
            log.exception("internal error in the main loop's %s step; trying again", operation)
        else:
            self.storage.succeeded(operation)

    # Called from signal handlers: they only set flags, the loop acts on them (uvicorn style).
    def request_stop(self) -> None:
        self._stop_requested = True

    def request_reload(self) -> None:
        self._reload_requested = True

    @property
    def stop_pending(self) -> bool:
        return self._stop_requested

    def shutdown(self) -> None:
        """The graceful stop: claim nothing more, let the pages in flight finish for up to
        `shutdown_grace_seconds` (a page still running then is simply done again on the next start:
        finished pages are on disk), record every job's state, release the worker lock."""
        grace = self.config.pipeline.shutdown_grace_seconds
        log.info("stopping: no new claims; finishing %d pages in flight (up to %g s)", self.pipeline.busy, grace)
        self._calls.serving = False
        self._calls.run_pending()  # requests that arrived before the stop: answered (with NotServing)
        self.hooks.on_stop(self.snapshot())
        self._take_reports()
        self.intake.stop_watching()
        self.pipeline.stop(grace)
        for threads in (self.claims, self.jobs.results, self.jobs.saves):  # saves last: the others end jobs
            threads.wait()
            self._handle_events(None, stopping=True)  # what they came to, on the event queue now
        self.jobs.flush(everything=True)
        self.engines.close()
        self._write_heartbeat(stopped=True)  # our jobs may be taken over now, not after a lease
        self._calls.run_pending()  # HTTP requests that raced the stop: answered, not left waiting
        self.hooks.on_exit(self.snapshot())
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("stopped; %d unfinished jobs will resume on the next start", len(self.jobs.active))

    # -- requests from other threads (the HTTP API: observe.JobControl) ----------------------------
    def call(self, fn: Callable[[], T], timeout: float = 60.0) -> T:
        """Run `fn` on the main thread, where job state may change (see calls.CallQueue)."""
        return self._calls.call(fn, timeout)

    def claim_upload(self, inbox_path: str, filename: str, profile: str, sniff: Sniff, sha256: str) -> str:
        """Main thread (via `call`): an uploaded file, already in the inbox's hidden upload area,
        becomes a job exactly as a dropped file would."""
        engine = self.engine_name_for_profile(profile)
        request = claim_request(
            self.config, engine, inbox_path, profile, sniff, source_name=filename, origin="http", sha256=sha256
        )
        return self.claims.claim_upload(request)

    def cancel_now(self, job_id: str) -> None:
        """Main thread (via `call`): act on a CANCEL file of our job at once (another daemon acts on its own)."""
        check_control(self.jobs, job_id)

    def retry_now(self, job_id: str) -> None:
        """Main thread (via `call`): act on a RETRY file at once."""
        self.takeover.retry(job_id)

    # -- what observers are handed (observe.py) --------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The state as plain values; cheap (counts in memory, no I/O): built on every tick."""
        return snapshot_of(
            self.config,
            (active.meta.status for active in self.jobs.active.values()),
            self.scheduler.depth(),
            pages_in_flight=self.pipeline.busy,
            inbox_waiting=self.intake.waiting,
            outbox_bytes=self.outbox_bytes,
            engines=self.engines.engines,
            reload_pending=self._reload_requested,
            queue=lambda: self.scheduler.queue_view([active.job for active in self.jobs.active.values()]),
        )

    def _take_reports(self) -> None:
        """What the hooks found out for each other (retention: deletions, the outbox's size)."""
        for report in self.hooks.take_reports():
            if isinstance(report, OutboxMeasured):
                self.outbox_bytes = report.size_bytes
            else:
                self.hooks.hand_on(report)

    # -- heartbeats ------------------------------------------------------------------------------
    @property
    def _heartbeat_interval(self) -> float:
        return max(0.2, self.config.jobs.heartbeat_lease_seconds / 4)

    def _write_heartbeat(self, stopped: bool = False) -> None:
        self._last_heartbeat = time.monotonic()
        if self.presence.missing is not None:
            return  # not into whatever stands where the outbox was
        error = self.heartbeats.write(len(self.jobs.active), stopped=stopped)
        if error is None:
            self.storage.succeeded("heartbeat")
        else:
            self.storage.failed("heartbeat", error)

    # -- reload ----------------------------------------------------------------------------------
    def _reload(self) -> None:
        """SIGHUP: apply what can change while running (profiles, ignore rules and the other intake
        settings, retention limits, log level, job leases, page retries and error rate, shutdown
        grace); jobs in progress carry on. See daemon/reloading.py and reload.RESTART_ONLY."""
        self._reload_requested = False
        reloaded = read_reload(self.config, self.config_path, self.overrides, self.engines)
        if reloaded is None:
            return
        new = reloaded.config
        self.engines.engines.update(reloaded.engines)
        self.config = new
        self.heartbeats.lease_seconds = new.jobs.heartbeat_lease_seconds
        self.intake.apply_config(new)
        logging.getLogger().setLevel(new.log_level.upper())
        changed = ", ".join(reloaded.changed) if reloaded.changed else "no changes"
        log.info("configuration reloaded from %s: %s", reloaded.source, changed)


def install_signal_handlers(service: Service) -> None:
    """SIGTERM/SIGINT: graceful stop; a second SIGINT (Ctrl-C twice): leave at once, the next start
    resumes from the checkpoints. SIGHUP: reload the configuration. The handlers only set flags; the
    main loop notices them within a tick."""

    def stop(signum: int, _frame: object) -> None:
        if service.stop_pending and signum == signal.SIGINT:
            os.write(2, b"ocr-watcher: second interrupt, exiting now; unfinished pages are redone on the next start\n")
            os._exit(130)
        service.request_stop()

    def reload(_signum: int, _frame: object) -> None:
        service.request_reload()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
