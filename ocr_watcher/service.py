"""The daemon: wires intake -> job store -> pipeline together and owns every job state change.

One main thread runs a short tick loop. Signal handlers only set flags; pipeline threads only send
events; so every change to a job's metadata happens here, in one place, in order.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import re
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from .calls import CallQueue
from .config import Config, ConfigError, ProfileConfig, load_config
from .engines.base import Engine, EngineUnavailable
from .engines.registry import build_engine, build_managed_server, job_settings, resolve_engine_name
from .hooks import HookList
from .intake.intake import Intake, claim_request
from .intake.sniff import Sniff
from .observe import JobDeleted, Snapshot, Started, snapshot_of
from .pipeline.assemble import PageMissing, assemble_result
from .pipeline.input_watch import SettleWatch, Stamp, changed_since_claim, stamp_of
from .pipeline.runner import Event, Opened, PageDone, PageFailed, Pipeline, PipelineSettings
from .pipeline.scheduler import PageScheduler, RunningJob
from .reload import FIXED_KEYS, changed_keys, keep_restart_only, one_line
from .spool.claim import Claimer, ClaimRequest, InputStillWritten, size_and_sha256
from .spool.layout import CANCEL, RETRY
from .spool.listing import OutboxWatch
from .spool.model import RETRYABLE, TERMINAL, JobError, JobMeta, Status, Worker, utc_now
from .spool.store import JobStore, MetadataStamp
from .spool.workers import Beat, Heartbeats, WorkerIdInUse, lock_worker_id
from .storage_watch import StorageWatch

log = logging.getLogger("ocr_watcher")
TICK_SECONDS = 0.25
CONTROL_CHECK_SECONDS = 1.0
STORAGE_RETRY_SECONDS = 5.0  # a page (or a result) that could not be written waits this long before it runs again
PRESENCE_CHECK_SECONDS = 0.25  # how often the outbox is checked to be the one we started on
METADATA_FLUSH_SECONDS = 1.0


WAKE: Any = object()  # put on the event queue to end the main loop's wait early
T = TypeVar("T")


def engine_key(name: str, profile: ProfileConfig) -> tuple:
    """Profiles that ask for the same engine settings share one engine instance."""
    return (name, profile.language, profile.dpi, profile.model, profile.mode)


class StartupError(Exception):
    """The daemon cannot start (exit code 78 like a config error: restarting will not help)."""


@dataclass
class _Active:
    job: RunningJob
    meta: JobMeta
    open_failures: int = 0
    dirty: bool = False
    # The status before a change not yet on disk: observers hear of the change once it is.
    previous: Status | None = None
    notes: list[str] = field(default_factory=list)  # warnings of this run that go into metadata.json
    clear_after_save: list[str] = field(default_factory=list)  # control files done with once saved
    result_due: float | None = None  # every page is done, the result could not be written: try then


class Service:
    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        hooks: HookList | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks or HookList()
        self.config_path = config_path
        self.overrides = overrides or {}  # command-line flags: applied again on every reload
        self.worker_id = config.resolved_worker_id
        self.host = socket.gethostname()
        self.store = JobStore(config.outbox, fsync=config.jobs.fsync)
        self.heartbeats = Heartbeats(self.store.layout, self.worker_id, self.host, config.jobs.heartbeat_lease_seconds)
        self.claimer = Claimer(config.inbox, self.store, self.worker_id)
        self.intake = Intake(config, self._engine_name_for_profile, wake=lambda: self.events.put(WAKE))
        self.scheduler = PageScheduler(config.pipeline.fast_lane_pages)
        self.events: queue.Queue[Event] = queue.Queue()
        self.active: dict[str, _Active] = {}
        self._engines: dict[tuple, Engine] = {}
        # Completed jobs seen in the outbox are never read again: self.store.completed, shared with
        # the job API's listing and retention.
        # Failed/cancelled jobs, watched for RETRY: job id -> metadata.json's stamp when last read, so
        # that a job another daemon retried (and now runs, or died running) is read again.
        self._retryable: dict[str, MetadataStamp | None] = {}
        self._watched: set[str] = set()  # others' unfinished jobs and unreadable ones: read on every scan
        self._held: set[str] = set()  # active or retryable at the last outbox scan
        self._outbox_watch = OutboxWatch(config.outbox)  # whether the outbox must be listed again
        self.outbox_bytes: int | None = None  # as retention last reported it (observe.OutboxMeasured)
        # Pages (None: the opening) waiting for the outbox to be writable, or to come back.
        self._deferred: list[tuple[float, RunningJob, int | None]] = []
        self._settling = SettleWatch()  # jobs whose input changed after the claim, waiting for it to hold still
        self.storage = StorageWatch(self.hooks.on_storage_state)
        self._missing: str | None = None  # why the outbox is not there, at the last look
        self._last_presence = -PRESENCE_CHECK_SECONDS
        self.managed_server: Any = None  # the supervised `vllm serve`, when engine vllm runs one
        self._stop_requested = False
        self._reload_requested = False
        self._lock_fd: int | None = None
        self._last_heartbeat = 0.0
        self._last_control = 0.0
        self._last_flush = 0.0
        self._last_outbox_scan = 0.0
        self._last_rescan = time.monotonic()
        self.last_tick: float | None = None  # monotonic; read by other threads to judge liveness
        self._calls = CallQueue(wake=lambda: self.events.put(WAKE))
        self.pipeline = self._build_pipeline()

    # -- set-up ----------------------------------------------------------------------------------
    def _build_pipeline(self) -> Pipeline:
        pipeline_config = self.config.pipeline
        workers = self.config.worker_count
        # Named after the worker, not the process: a restart after kill -9 finds and clears what the
        # dead process had rendered (the worker lock says no live daemon of this id uses it).
        worker_name = re.sub(r"[^A-Za-z0-9._-]", "_", self.worker_id)
        # The outbox's hash too: daemons of the same name on other outboxes (tests) must not share it.
        outbox_tag = hashlib.sha256(str(self.config.outbox.resolve()).encode()).hexdigest()[:8]
        work_dir = (pipeline_config.work_dir or Path(tempfile.gettempdir())) / f"ocr-watcher-{worker_name}-{outbox_tag}"
        settings = PipelineSettings(
            render_threads=workers,
            engine_threads=workers,
            render_ahead=max(2, workers),
            render_timeout=pipeline_config.render_timeout_seconds,
            render_memory_mb=pipeline_config.render_memory_mb,
            work_dir=work_dir,
            worker_id=self.worker_id,
        )
        return Pipeline(settings, self.scheduler, self.store, self._engine_for_job, self.events.put)

    def _engine_name_for_profile(self, profile: str) -> str:
        return resolve_engine_name(self.config.profile(profile).engine or self.config.engine, self.config)

    def _engine(self, name: str, profile: ProfileConfig) -> Engine:
        settings = job_settings(name, self.config, profile)  # resolved: one engine per distinct setting
        key = engine_key(name, settings)
        engine = self._engines.get(key)
        if engine is None:
            engine = build_engine(name, self.config, settings, managed=self.managed_server)
            self._engines[key] = engine
        return engine

    def _start_managed_server(self) -> None:
        """Engine vllm without configured servers: start `vllm serve` ourselves, without waiting for it.
        Loading the model takes minutes (a first start downloads it); meanwhile files are claimed, the
        HTTP endpoints say what is happening (/readyz: "vLLM is starting (42 s)"), and pages wait for
        the server (engines/vllm.py: a start-up does not use up their connect_retry_max_seconds)."""
        profiles = {"default", *self.config.profiles}
        if self.config.vllm.servers or all(self._engine_name_for_profile(p) != "vllm" for p in profiles):
            return
        # No notifier: READY=1 comes before the model is loaded, and EXTEND_TIMEOUT_USEC= after it would
        # stretch the watchdog instead of the start-up timeout.
        self.managed_server = build_managed_server(self.config)
        log.info("starting vLLM (%s); pages wait for it to load the model", self.config.vllm.model)
        self.managed_server.start()

    def _engine_for_job(self, job: RunningJob) -> Engine:
        # The settings recorded at the claim, so a reload cannot change them half-way through a job;
        # a job claimed before they were recorded takes its profile's current ones.
        pinned = ProfileConfig(**job.settings) if job.settings else None
        return self._engine(job.engine, pinned or self.config.profile(job.profile))

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
        self._start_managed_server()
        for profile in {"default", *self.config.profiles}:
            name = self._engine_name_for_profile(profile)
            try:
                self._engine(name, self.config.profile(profile))
            except EngineUnavailable as exc:
                raise StartupError(f"engine {name!r} (profile {profile!r}) cannot run: {exc}") from exc
        wanted = max((engine.concurrency for engine in self._engines.values()), default=0)
        self.pipeline.settings.engine_threads = max(self.config.worker_count, wanted)
        self.pipeline.settings.render_ahead = max(2, self.config.worker_count, wanted)
        self._write_heartbeat()
        recovered = self.claimer.recover(self.heartbeats.is_gone)
        if recovered:
            log.info("finished %d claims interrupted by a crash", len(recovered))
        self._guarded("scan", self._scan_outbox, True)  # a full or read-only outbox: the loop's scans go on
        self.intake.start_watching()
        self.pipeline.start()
        self.hooks.on_start(Started(self.snapshot(), self.store, self))
        log.info(
            "ocr-watcher started: worker %s, inbox %s, outbox %s, engine %s, %d workers, settle %.1f s",
            self.worker_id,
            self.config.inbox,
            self.config.outbox,
            self._engine_name_for_profile("default"),
            self.config.worker_count,
            self.intake.settle,
        )

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> int:
        self.start()
        try:
            while not self._stop_requested:
                self._tick()
        finally:
            self.shutdown()
        return 0

    def _tick(self) -> None:
        # Sleep until an event, an inotify hint (WAKE), or the next intake deadline, at most a tick.
        timeout = min(TICK_SECONDS, self.intake.seconds_until_due(time.monotonic()))
        try:
            event = self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            event = None
        while event is not None:
            try:
                if event is not WAKE:
                    self._handle(event)
            except Exception:  # a bug around one job must not stop the others
                log.exception("%s: internal error while handling %s", event.job.job_id, type(event).__name__)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                event = None
        now = time.monotonic()
        if now - self._last_heartbeat >= self._heartbeat_interval:
            self._guarded("heartbeat", self._check_fencing)
            self._write_heartbeat()
        self.intake.refresh(now)
        self._requeue_deferred(now)
        # While the outbox is away (an unmounted share, a moved folder) nothing is claimed into it,
        # and nothing read from it counts: an empty listing is not "every job is gone".
        present = self._outbox_present(now)
        if present and self._settling:
            self._guarded("settle", self._start_settled_inputs, now)
        if present:
            self._guarded("claim", self._claim_ready)
        if present and now - self._last_control >= CONTROL_CHECK_SECONDS:
            self._guarded("control", self._check_controls)
            self._last_control = now
        if present and now - self._last_outbox_scan >= self.config.jobs.outbox_scan_interval_seconds:
            self._guarded("scan", self._scan_outbox)
        if now - self._last_flush >= METADATA_FLUSH_SECONDS:
            self._guarded("metadata", self._flush_dirty)
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

    def _outbox_present(self, now: float) -> bool:
        if now - self._last_presence < PRESENCE_CHECK_SECONDS:
            return self._missing is None
        self._last_presence = now
        was, self._missing = self._missing, self.store.missing()
        if self._missing is not None:
            self.storage.failed("outbox", self._missing)
        elif was is not None:
            self.storage.succeeded("outbox")
            log.info("the outbox %s is back; listing it again", self.config.outbox)
            self._outbox_watch = OutboxWatch(self.config.outbox)  # a full listing on the next scan
            self._last_outbox_scan = 0.0
        return self._missing is None

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
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            try:
                self._handle(event, stopping=True)
            except Exception:  # as in _tick: one job's bug must not keep the others' state unwritten
                log.exception("%s: internal error while handling %s", event.job.job_id, type(event).__name__)
        for active in list(self.active.values()):
            active.dirty = True
        self._flush_dirty()
        for engine in self._engines.values():
            try:
                engine.close()
            except Exception:
                log.exception("closing engine %s failed", getattr(engine, "name", engine))
        if self.managed_server is not None:
            self.managed_server.stop()
        self._write_heartbeat(stopped=True)  # our jobs may be taken over now, not after a lease
        self._calls.run_pending()  # HTTP requests that raced the stop: answered, not left waiting
        self.hooks.on_exit(self.snapshot())
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("stopped; %d unfinished jobs will resume on the next start", len(self.active))

    # -- intake -> claims ------------------------------------------------------------------------
    def _claim_ready(self) -> None:
        waiting = sum(1 for a in self.active.values() if a.meta.status is Status.QUEUED)
        for request in self.intake.take(self.config.intake.max_queued_jobs - waiting):
            try:
                self._claim(request)
            except OSError as exc:
                self.hooks.on_storage_error("claim", str(exc))
                self.storage.failed("claim", exc)
                log.error("cannot claim %s: %s (recovery finishes the claim later)", request.inbox_path, exc)
            except InputStillWritten as exc:
                log.warning("%s: its writer is not done; the claim is finished once it holds still", exc)
            except Exception:
                log.exception("internal error while claiming %s; recovery will finish it", request.inbox_path)

    def _claim(self, request: ClaimRequest, *, give_back: bool = False) -> str | None:
        """Claim one file into a job and start on it; None when another daemon (or a person) took
        the file first. The one code path for inbox files and HTTP uploads alike."""
        if self._missing is not None:  # not into an empty folder where the outbox should be
            raise FileNotFoundError(errno.ENOENT, self._missing)
        job_id = self.claimer.claim(request, give_back=give_back)
        if job_id is None:
            return None
        self.storage.succeeded("claim")
        meta = self.store.try_load(job_id)
        if meta is None:
            return job_id
        self.hooks.on_job_status(meta, None)
        if meta.status is Status.QUEUED:
            self._activate(meta)
        else:
            self._note_terminal(meta)
        return job_id

    # -- requests from other threads (the HTTP API) ------------------------------------------------
    def call(self, fn: Callable[[], T], timeout: float = 60.0) -> T:
        """Run `fn` on the main thread, where job state may change (see calls.CallQueue)."""
        return self._calls.call(fn, timeout)

    def claim_upload(self, inbox_path: str, filename: str, profile: str, sniff: Sniff, sha256: str) -> str:
        """Main thread (via `call`): an uploaded file, already in the inbox's hidden upload area,
        becomes a job exactly as a dropped file would."""
        engine = self._engine_name_for_profile(profile)
        request = claim_request(
            self.config, engine, inbox_path, profile, sniff, source_name=filename, origin="http", sha256=sha256
        )
        # give_back: a job that cannot be built now leaves no trace, so the client's "503, send it
        # again" can never make a second job.
        job_id = self._claim(request, give_back=True)
        if job_id is None:
            raise FileNotFoundError(f"the uploaded file {inbox_path} disappeared before it was claimed")
        return job_id

    def cancel_now(self, job_id: str) -> None:
        """Main thread (via `call`): act on a CANCEL file at once when the job is ours; a job another
        daemon runs is cancelled by that daemon when it sees the file."""
        active = self.active.get(job_id)
        if active is not None:
            self._check_control(job_id, active)

    def retry_now(self, job_id: str) -> None:
        """Main thread (via `call`): act on a RETRY file at once."""
        self._retry(job_id)

    # -- job lifecycle ---------------------------------------------------------------------------
    def _activate(self, meta: JobMeta) -> _Active:
        paths = self.store.paths(meta.job_id)
        self.store.sweep_temp_files(meta.job_id)
        done = self.store.done_pages(meta.job_id)
        job = RunningJob(
            job_id=meta.job_id,
            input_path=paths.input(meta.input_file),
            kind=meta.kind or "pdf",
            priority=meta.priority,
            created_at=meta.created_at.timestamp(),
            profile=meta.profile,
            engine=self._engine_name_for_profile(meta.profile) if meta.engine is None else meta.engine.kind,
            settings=meta.engine.settings() if meta.engine is not None else {},
            epoch=meta.worker.epoch,
            done=done,
            served=len(done),
        )
        active = self.active[meta.job_id] = _Active(job, meta)
        self._retryable.pop(meta.job_id, None)
        self.scheduler.add(job)
        return active

    def _handle(self, event: Event, stopping: bool = False) -> None:
        active = self.active.get(event.job.job_id)
        if active is None or active.job is not event.job or active.meta.status.terminal:
            return  # a job we stopped working on (cancelled, taken over, finished)
        if isinstance(event, Opened):
            self._on_opened(active, event, stopping)
        elif isinstance(event, PageDone):
            self.storage.succeeded("page")
            event.job.in_flight.discard(event.page)
            event.job.done.add(event.page)
            event.job.failed.pop(event.page, None)
            self.hooks.on_page(event.job.job_id, event.page, "done", event.info)
            self._progress(active)
        elif isinstance(event, PageFailed):
            self._on_page_failed(active, event, stopping)

    def _on_opened(self, active: _Active, event: Opened, stopping: bool) -> None:
        job = active.job
        job.opening = False
        if (changed := changed_since_claim(active.meta.source, job.input_path)) is not None:
            self._start_over(active, changed)  # also when it did not open: it may be half-written
            return
        if event.error is not None and (missing := self.store.missing()) is not None:
            self.storage.failed("open", missing)  # the input is in the outbox: it is away, not bad
            self._defer(job, None)
            return
        self.storage.succeeded("open")
        if event.error is not None:
            self._finish(active, Status.FAILED, JobError(type=event.error.type, message=str(event.error)))
            return
        if event.info is None:
            active.open_failures += 1
            if active.open_failures > self.config.pipeline.page_retries:
                message = f"the document could not be opened: {event.transient}"
                self._finish(active, Status.FAILED, JobError(type="render_failed", message=message))
            elif not stopping:
                self.scheduler.add(job)
            return
        job.pages_total = event.info.pages
        job.pending.extend(p for p in range(1, job.pages_total + 1) if p not in job.done)
        job.done &= set(range(1, job.pages_total + 1))
        if active.meta.status is Status.QUEUED:
            active.meta.transition(Status.PROCESSING)
            active.meta.worker.heartbeat_at = utc_now()
            pages = f"{job.pages_total} page{'s' if job.pages_total != 1 else ''}"
            log.info("%s: processing, %s (%d already done)", job.job_id, pages, len(job.done))
            active.previous = Status.QUEUED
            self._save(active)
        if not stopping:
            self.scheduler.add(job)
        self._progress(active)

    def _on_page_failed(self, active: _Active, event: PageFailed, stopping: bool) -> None:
        job = active.job
        job.in_flight.discard(event.page)
        if job.cancelled:
            return  # the job was cancelled, deleted or taken over: the control checks deal with it
        if event.stage == "cancelled":
            # Its folder was gone, or a lease newer than ours there, when the page was written: the
            # control and fencing checks forget the job if so; if not (the outbox was away), it runs again.
            self._defer(job, event.page)
            return
        missing = self.store.missing() if event.stage == "render" else None  # the input is in the outbox
        if event.stage == "write" or missing is not None:  # full, read-only or away: not the page's fault
            self.hooks.on_storage_error("page", event.error)
            self.storage.failed("page", missing or event.os_error or event.error)
            self._defer(job, event.page)
            return
        retries_left = job.attempts.get(event.page, 1) <= self.config.pipeline.page_retries
        if not event.permanent and retries_left:
            log.warning("%s: page %d failed (%s); retrying", job.job_id, event.page, event.error)
            if stopping:
                job.pending.appendleft(event.page)
            else:
                self.scheduler.requeue(job, event.page)
            self.hooks.on_page(job.job_id, event.page, "retried", self._failure_info(job, event))
            return
        log.warning("%s: page %d failed for good: %s", job.job_id, event.page, event.error)
        job.failed[event.page] = event.error
        self.hooks.on_page(job.job_id, event.page, "failed", self._failure_info(job, event))
        self._progress(active)

    def _defer(self, job: RunningJob, page: int | None) -> None:
        """Run the page (None: open the job) again after a while, without using up a retry."""
        if page is not None:
            job.attempts[page] = job.attempts.get(page, 1) - 1
        self._deferred.append((time.monotonic() + STORAGE_RETRY_SECONDS, job, page))

    @staticmethod
    def _failure_info(job: RunningJob, event: PageFailed) -> dict[str, Any]:
        return {"error": event.error, "stage": event.stage, "engine": job.engine}

    # -- what observers are handed (observe.py) --------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The state as plain values; cheap (counts in memory, no I/O): built on every tick."""
        return snapshot_of(
            self.config,
            (active.meta.status for active in self.active.values()),
            self.scheduler.depth(),
            pages_in_flight=self.pipeline.busy,
            inbox_waiting=self.intake.waiting,
            outbox_bytes=self.outbox_bytes,
            engines=self._engines,
            reload_pending=self._reload_requested,
        )

    def _take_reports(self) -> None:
        """What the hooks found out for each other (retention: deletions, the outbox's size)."""
        for report in self.hooks.take_reports():
            if isinstance(report, JobDeleted):
                self.hooks.on_job_deleted(report.job_id, report.reason, report.size_bytes)
            else:
                self.outbox_bytes = report.size_bytes

    def _progress(self, active: _Active) -> None:
        job = active.job
        active.meta.set_progress(job.pages_total, len(job.done), len(job.failed))
        active.dirty = True
        if job.finished:
            self._complete(active)

    def _complete(self, active: _Active) -> None:
        job = active.job
        if (changed := changed_since_claim(active.meta.source, job.input_path)) is not None:
            self._start_over(active, changed)  # the pages are of an older version of the file
            return
        total = job.pages_total or 0
        if total and len(job.failed) / total > self.config.pipeline.max_page_error_rate:
            first = min(job.failed)
            message = (
                f"{len(job.failed)} of {total} pages failed (limit {self.config.pipeline.max_page_error_rate:.0%});"
                f" page {first}: {job.failed[first]}"
            )
            self._finish(active, Status.FAILED, JobError(type="pages_failed", message=message))
            return
        active.result_due = None
        try:
            markdown, result_meta = assemble_result(self.store, active.meta, job.failed)
            self.store.write_result(job.job_id, markdown, result_meta)
        except PageMissing as exc:
            if self.store.missing() is None and not self._folder_deleted(job.job_id):
                log.warning("%s: page %d's Markdown is gone; doing the page again", job.job_id, exc.page)
                job.done.discard(exc.page)
                self.scheduler.requeue(job, exc.page)
                return
            self._result_waits(active, exc)  # the folder or the whole outbox is away
            return
        except OSError as exc:
            self._result_waits(active, exc)
            return
        self.storage.succeeded("result")
        active.meta.warnings = [*active.notes, *result_meta["warnings"]][:100]
        self._finish(active, Status.COMPLETED)

    def _result_waits(self, active: _Active, exc: OSError) -> None:
        """The result could not be written: a deleted folder ends the job's run here; a full,
        read-only or absent outbox makes it wait, and the flush tries again."""
        if isinstance(exc, FileNotFoundError) and self._folder_deleted(active.job.job_id):
            self._forget(active.job.job_id, "its folder was deleted")
            return
        self.hooks.on_storage_error("result", str(exc))
        self.storage.failed("result", exc)
        active.result_due = time.monotonic() + STORAGE_RETRY_SECONDS

    def _finish(self, active: _Active, status: Status, error: JobError | None = None) -> None:
        job = active.job
        job.cancelled = True  # nothing more of this job is processed
        if active.meta.status is Status.QUEUED and status is Status.COMPLETED:
            active.meta.transition(Status.PROCESSING)
        active.previous = active.meta.status
        active.meta.transition(status, error=error)
        self._settle_terminal(active)

    def _settle_terminal(self, active: _Active) -> None:
        """A job that reached its end leaves the active set once that is on disk; while the outbox
        cannot be written (full, read-only) it stays, and the flush tries again."""
        if not self._save(active):
            return
        job, meta = active.job, active.meta
        self.active.pop(job.job_id, None)
        self._note_terminal(meta)
        self.hooks.on_job_status(meta, active.previous)
        pages = f"{len(job.done)}/{job.pages_total}" if job.pages_total is not None else "-"
        detail = f": {meta.error.type}: {meta.error.message}" if meta.error else ""
        log.info("%s: %s (pages %s)%s", job.job_id, meta.status.value, pages, detail)

    def _forget(self, job_id: str, why: str) -> None:
        active = self.active.pop(job_id, None)
        if active is not None:
            active.job.cancelled = True
            log.warning("%s: no longer working on it: %s", job_id, why)

    def _folder_deleted(self, job_id: str) -> bool:
        """The job's folder is gone while the outbox is there: a person deleted it (a cancel)."""
        return self.store.missing() is None and not os.path.isdir(self.store.paths(job_id).dir)

    def _save(self, active: _Active) -> bool:
        """The one guarded write of a job record we own: metadata.json, unless the job was deleted or
        taken over meanwhile. False when it could not be written: the job is then forgotten, or (the
        outbox full, read-only or away) kept dirty, and the flush tries again."""
        job_id = active.job.job_id
        try:
            if self.store.is_fenced(job_id, active.job.epoch):
                self._forget(job_id, "another daemon has taken it over")
                return False
            active.meta.updated_at = utc_now()
            active.meta.worker.heartbeat_at = active.meta.updated_at
            self.store.save(active.meta)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and self._folder_deleted(job_id):
                self._forget(job_id, "its folder was deleted (treated as cancel)")
                return False
            active.dirty = True
            self.hooks.on_storage_error("metadata", str(exc))
            self.storage.failed("metadata", exc)
            self.store.touch_lease(job_id, active.job.epoch)  # a takeover not yet on disk is still ours
            return False
        active.dirty = False
        self.storage.succeeded("metadata")
        active.clear_after_save = [c for c in active.clear_after_save if self._clear_control(job_id, c) is not None]
        if active.previous is not None and not active.meta.status.terminal:
            previous, active.previous = active.previous, None
            self.hooks.on_job_status(active.meta, previous)
        return True

    def _clear_control(self, job_id: str, control: str) -> OSError | None:
        """Remove a control file we acted on; the error when it cannot be (a read-only outbox)."""
        try:
            self.store.clear_control(job_id, control)
        except OSError as exc:
            self.hooks.on_storage_error("control", str(exc))
            log.warning("%s: cannot remove %s: %s", job_id, control, exc)
            return exc
        return None

    def _flush_dirty(self) -> None:
        now = time.monotonic()
        for active in list(self.active.values()):
            if active.result_due is not None and active.result_due <= now and not active.meta.status.terminal:
                self._complete(active)
            if not active.dirty:
                continue
            if active.meta.status.terminal:
                self._settle_terminal(active)
            else:
                self._save(active)

    def _note_terminal(self, meta: JobMeta, stamp: MetadataStamp | None = None) -> None:
        """`stamp`: metadata.json's stamp taken before `meta` was read (else taken now)."""
        if meta.status is Status.COMPLETED:
            self.store.completed.add_meta(meta)
        elif meta.status in RETRYABLE:
            self._retryable[meta.job_id] = stamp if stamp is not None else self.store.metadata_stamp(meta.job_id)

    # -- an input whose writer was not done (pipeline/input_watch.py) --------------------------------
    def _start_over(self, active: _Active, stamp: Stamp) -> None:
        """Drop what was done of the job (it is of an older version of the file) and wait for the
        input to hold still for the settle time; `_start_settled_inputs` then starts it again."""
        old = active.job
        old.cancelled = True  # the pipeline drops whatever of it is still in flight
        source = active.meta.source
        log.warning(
            "%s: %s changed after it was claimed (%d -> %d bytes): its writer was not done; starting over "
            "once it is unchanged for %g s",
            old.job_id,
            source.name,
            source.size,
            stamp[0],
            self.intake.settle,
        )
        self.store.discard_pages(old.job_id)
        active.job = replace(
            old,
            pages_total=None,
            pending=deque(),
            done=set(),
            failed={},
            attempts={},
            in_flight=set(),
            served=0,
            opening=False,
            cancelled=False,
            suspect=False,
        )
        active.open_failures = 0
        active.meta.set_progress(None, 0, 0)
        active.dirty = True
        self._settling.add(old.job_id, stamp, time.monotonic())

    def _start_settled_inputs(self, now: float) -> None:
        def stamp(job_id: str) -> Stamp | None:
            active = self.active.get(job_id)
            return stamp_of(active.job.input_path) if active is not None else None

        for job_id in self._settling.settled(now, self.intake.settle, stamp):
            active = self.active.get(job_id)
            if active is None or active.meta.status.terminal:
                continue  # cancelled, deleted or taken over meanwhile
            path, source = active.job.input_path, active.meta.source
            # On the main loop, and the whole file: rare (a writer that paused), and then needed.
            try:
                before = path.stat()
                size, digest = size_and_sha256(path)
            except OSError:  # gone or unreadable: opening it reports that as the job's error
                self.scheduler.add(active.job)
                continue
            if stamp_of(path) != (before.st_size, before.st_mtime_ns):
                self._settling.add(job_id, stamp_of(path), now)  # written to while it was hashed
                continue
            source.size, source.sha256, source.mtime_ns = size, digest, before.st_mtime_ns
            self.store.discard_pages(job_id)  # again: a page whose write raced the first discard
            note = "the input changed after it was claimed (its writer was not done); the job was started over"
            active.notes.append(note)
            log.info("%s: the input holds still (%d bytes); starting over", job_id, size)
            active.dirty = True
            self.scheduler.add(active.job)

    # -- control files, retry, takeover ----------------------------------------------------------
    def _requeue_deferred(self, now: float) -> None:
        if not self._deferred or self._deferred[0][0] > now:
            return
        due = [entry for entry in self._deferred if entry[0] <= now]
        self._deferred = [entry for entry in self._deferred if entry[0] > now]
        for _, job, page in due:
            if job.cancelled:
                continue
            if page is None:
                self.scheduler.add(job)  # opened again
            else:
                self.scheduler.requeue(job, page)

    def _check_controls(self) -> None:
        for job_id, active in list(self.active.items()):
            self._check_control(job_id, active)

    def _check_control(self, job_id: str, active: _Active) -> None:
        paths = self.store.paths(job_id)
        if not paths.dir.exists():
            self._forget(job_id, "its folder was deleted (treated as cancel)")
        elif paths.cancel.exists() and not active.meta.status.terminal:
            error = JobError(type="cancelled", message="cancelled on request (a CANCEL file, or DELETE /jobs/{id})")
            # Said now: on a full or read-only outbox the cancelled status is written only later.
            log.info("%s: cancel requested; no more of its pages are done", job_id)
            self._finish(active, Status.CANCELLED, error)
            self._clear_control(job_id, CANCEL)  # one left behind is cleared by a retry

    def _retry(self, job_id: str) -> None:
        meta = self.store.try_load(job_id)
        if meta is None or meta.status not in RETRYABLE:
            self._retryable.pop(job_id, None)
            if meta is not None and meta.status is Status.COMPLETED:
                log.info("%s: completed; RETRY ignored", job_id)
                self._clear_control(job_id, RETRY)
            return
        # A CANCEL left behind would cancel the retried job at once: it goes first, and while it
        # cannot (a read-only outbox) the RETRY waits for the next scan.
        if (error := self._clear_control(job_id, CANCEL)) is not None:
            self.storage.failed("retry", error)
            return
        self.storage.succeeded("retry")
        self._retryable.pop(job_id, None)
        if not self._take_over(meta, reason="retry requested"):
            return
        previous = meta.status
        meta.transition(Status.QUEUED)
        self._remove_result(job_id)
        log.info("%s: queued again (attempt %d)", job_id, meta.attempts)
        self._adopt(meta, previous, clear_after_save=[RETRY])

    def _remove_result(self, job_id: str) -> None:
        try:
            self.store.remove_result(job_id)
        except OSError as exc:  # rewritten when the job completes again
            self.hooks.on_storage_error("result", str(exc))
            log.warning("%s: cannot remove the earlier result: %s", job_id, exc)

    def _adopt(self, meta: JobMeta, previous: Status | None, clear_after_save: list[str] | None = None) -> None:
        """Work on a job just taken over (its lease is ours): in memory at once, and its record
        written through the guarded save. Where that cannot be written yet (the outbox full or
        read-only), the flush tries again: the lease we hold and the record come together, and
        until they do, no other daemon steps over a lease younger than a heartbeat lease."""
        active = self._activate(meta)
        active.previous = previous
        active.clear_after_save = list(clear_after_save or [])
        active.dirty = True
        self._save(active)

    def _take_over(self, meta: JobMeta, *, reason: str) -> bool:
        """Become the job's owner at the next epoch (exactly one daemon can)."""
        taken = self.store.take_next_lease(
            meta.job_id, meta.worker.epoch, abandoned_after=self.config.jobs.heartbeat_lease_seconds
        )
        if not taken:
            return False
        epoch = taken[-1]
        previous = meta.worker.id
        meta.worker = Worker(id=self.worker_id, host=self.host, pid=os.getpid(), heartbeat_at=utc_now(), epoch=epoch)
        if previous != self.worker_id:
            log.info("%s: taken over from %s (%s)", meta.job_id, previous, reason)
        return True

    def _scan_outbox(self, startup: bool = False) -> None:
        self._last_outbox_scan = time.monotonic()
        if not startup:  # claims are made on this thread, so none of ours is half-way now
            try:
                for job_id in self.claimer.recover(self.heartbeats.is_gone):
                    log.warning("%s: finished an interrupted claim", job_id)
            except OSError as exc:  # a full or read-only outbox: the claim stays where it is
                self.storage.failed("claim", exc)
            else:
                self.storage.succeeded("claim")
        stamp = self._outbox_watch.stamp()
        full = startup or not self._outbox_watch.unchanged(stamp)
        # An unchanged outbox holds the folders of the last listing: only the jobs that can change are
        # looked at again (failed/cancelled ones for RETRY, others' unfinished or unreadable ones, and
        # those that were ours at the last scan), not every finished job (see spool/listing.py).
        job_ids = self.store.iter_job_ids() if full else list(self._watched | set(self._retryable) | self._held)
        completed, retryable_before = self.store.completed, set(self._retryable)
        completed_listed, retryable_listed, watched = 0, set(), set()
        beats: dict[str, Beat | None] = {}
        for job_id in job_ids:
            read_at = None
            if job_id in self._retryable:
                retryable_listed.add(job_id)
                if self.store.has_control(job_id, RETRY):
                    self._retry(job_id)
                    continue
                read_at = self.store.metadata_stamp(job_id)
                if read_at == self._retryable[job_id]:
                    continue
                del self._retryable[job_id]  # rewritten (another daemon retried it): read it again
            if job_id in self.active:
                continue
            if job_id in completed:
                completed_listed += 1
                continue
            # Taken before the read: a rewrite while reading shows as a change on the next scan.
            read_at = read_at or self.store.metadata_stamp(job_id)
            meta = self.store.load_unless_completed(job_id)  # a completed one is only noted
            if meta is None:
                if job_id in completed:
                    completed_listed += 1
                else:
                    watched.add(job_id)  # unreadable (or gone): looked at again next time
                continue
            if meta.status in TERMINAL:
                self._note_terminal(meta, read_at)
                completed_listed += job_id in completed
            elif meta.worker.id == self.worker_id and not self._is_fenced_meta(meta):
                log.info("%s: resuming (%s, %d pages done)", job_id, meta.status.value, meta.progress.pages_done)
                self._activate(meta)
            elif meta.worker.id == self.worker_id:  # fenced, yet still ours: a takeover that died half-way
                if self._take_over(meta, reason="an abandoned takeover"):
                    self._adopt(meta, None)
            elif self.heartbeats.job_owner_gone(meta, beats) and self._take_over(meta, reason="heartbeat expired"):
                self._adopt(meta, None)
            if job_id not in self.active and not meta.status.terminal:
                watched.add(job_id)  # another daemon's: watched for its heartbeat
        # Forget the jobs whose folders are gone (without holding the whole listing), unless the
        # outbox went away during the listing: then nothing listed, and nothing is gone.
        if full and self.store.missing() is None:
            for gone in retryable_before - retryable_listed:
                self._retryable.pop(gone, None)
            if completed_listed < len(completed):
                completed.prune(set(self.store.iter_job_ids()), self.store.root)
            self._outbox_watch.listed(stamp)
        self._watched = watched
        self._held = set(self.active) | set(self._retryable)

    def _is_fenced_meta(self, meta: JobMeta) -> bool:
        return self.store.is_fenced(meta.job_id, meta.worker.epoch)

    # -- heartbeats and fencing ------------------------------------------------------------------
    @property
    def _heartbeat_interval(self) -> float:
        return max(0.2, self.config.jobs.heartbeat_lease_seconds / 4)

    def _write_heartbeat(self, stopped: bool = False) -> None:
        self._last_heartbeat = time.monotonic()
        if self._missing is not None:
            return  # not into whatever stands where the outbox was
        error = self.heartbeats.write(len(self.active), stopped=stopped)
        if error is None:
            self.storage.succeeded("heartbeat")
        else:
            self.storage.failed("heartbeat", error)

    def _check_fencing(self) -> None:
        """After a pause (SIGSTOP, a stalled share) another daemon may own some of our jobs."""
        for job_id, active in list(self.active.items()):
            if self.store.is_fenced(job_id, active.job.epoch):
                self._forget(job_id, "another daemon has taken it over")

    # -- reload ----------------------------------------------------------------------------------
    def _reload(self) -> None:
        """SIGHUP: read the configuration again and apply what can change while running (profiles,
        ignore rules and the other intake settings, retention limits, log level, job leases, page
        retries and error rate, shutdown grace). Jobs in progress carry on. A configuration that does
        not load, or names an engine that cannot run, is refused and the running one kept. Settings
        read only at start keep their running values, with a warning; see RESTART_ONLY."""
        self._reload_requested = False
        source = str(self.config_path) if self.config_path else "the environment"
        try:
            loaded = load_config(self.config_path, overrides=self.overrides)
            new, ignored = keep_restart_only(self.config, loaded)
            engines = self._engines_for(new)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", one_line(str(exc)))
            return
        except Exception:  # whatever went wrong, the daemon keeps serving with what it has
            log.exception("reload failed, keeping the running configuration")
            return
        for key, running, wanted in ignored:
            log.warning(
                "reload: %s is %r in %s, but it %s; keeping %r until the service is restarted",
                key,
                wanted,
                source,
                "cannot change while the daemon runs" if key in FIXED_KEYS else "is read only at start",
                running,
            )
        changed = changed_keys(self.config, new)
        self._engines.update(engines)
        self.config = new
        self.heartbeats.lease_seconds = new.jobs.heartbeat_lease_seconds
        self.intake.apply_config(new)
        logging.getLogger().setLevel(new.log_level.upper())
        log.info("configuration reloaded from %s: %s", source, ", ".join(changed) if changed else "no changes")

    def _engines_for(self, config: Config) -> dict[tuple, Engine]:
        """Engines the new configuration needs that are not running yet, built and checked now, so
        that a reload naming an engine that cannot run is refused rather than failing jobs later."""
        built: dict[tuple, Engine] = {}
        for name in {"default", *config.profiles}:
            profile = config.profile(name)
            engine_name = resolve_engine_name(profile.engine or config.engine, config)
            settings = job_settings(engine_name, config, profile)
            key = engine_key(engine_name, settings)
            if key in self._engines or key in built:
                continue
            try:
                built[key] = build_engine(engine_name, config, settings, managed=self.managed_server)
            except EngineUnavailable as exc:
                for engine in built.values():
                    engine.close()
                setting = f"profiles.{name}.engine" if profile.engine else "engine"
                raise ConfigError(f"{setting}: engine {engine_name!r} cannot run: {exc}") from exc
        return built


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
