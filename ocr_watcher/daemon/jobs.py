"""The owner of the jobs this daemon works on: the one place their state changes. Events from the
pipeline, control files, fencing and the flush all come through here, on the main thread; the
rules each one follows are the pure decisions of lifecycle.py, carried out here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..hooks import HookList
from ..pipeline.assemble import PageMissing
from ..pipeline.input_watch import changed_since_claim
from ..pipeline.runner import Event, Opened, PageDone, PageFailed
from ..pipeline.scheduler import PageScheduler
from ..spool.model import JobError, JobMeta, Status, utc_now
from ..spool.shared_results import LeaderGone
from ..spool.store import JobStore
from ..storage_watch import StorageWatch
from .active import ActiveJob, running_job
from .deferred import STORAGE_RETRY_SECONDS, Deferred
from .duplicates import Duplicates
from .input_changes import InputChanges
from .lifecycle import (
    Begin,
    FailJob,
    FailPage,
    Ignore,
    OpenAgain,
    OpenFacts,
    PageFailFacts,
    RetryPage,
    RunLater,
    StartOver,
    WaitForStorage,
    decide_complete,
    decide_opened,
    decide_page_failed,
)
from .record_saves import RecordSaved, RecordSaves
from .records import JobRecords, Saved, stamp
from .result_writes import ResultWrites, ResultWritten, result_write
from .terminal import TerminalJobs

log = logging.getLogger("ocr_watcher")


class JobOwner:
    def __init__(
        self,
        config: Config,
        store: JobStore,
        scheduler: PageScheduler,
        hooks: HookList,
        storage: StorageWatch,
        terminal: TerminalJobs,
        engine_name: Callable[[str], str],
        settle_seconds: Callable[[], float],
        post: Callable[[ResultWritten | RecordSaved], None] = lambda event: None,
    ) -> None:
        self.config = config  # replaced on reload
        self.store = store
        self.scheduler = scheduler
        self.hooks = hooks
        self.storage = storage
        self.terminal = terminal
        self.engine_name = engine_name  # a profile's engine, for jobs claimed before it was recorded
        self.records = JobRecords(store, storage, hooks.on_storage_error)
        self.deferred = Deferred(scheduler)
        self.inputs = InputChanges(store, scheduler, settle_seconds)
        self.active: dict[str, ActiveJob] = {}
        self.results = ResultWrites(post)  # `post`: onto the main loop's event queue
        self.saves = RecordSaves(self.records, post)
        self.duplicates = Duplicates(store, lambda: self.config, self._follow)

    def queued(self) -> int:
        return sum(1 for active in self.active.values() if active.meta.status is Status.QUEUED)

    def activate(self, meta: JobMeta, *, fresh: bool = False) -> ActiveJob:
        done = set() if fresh else resume_point(self.store, meta.job_id)  # fresh: just claimed, holds nothing
        engine = self.engine_name(meta.profile) if meta.engine is None else meta.engine.kind
        input_path = self.store.paths(meta.job_id).input(meta.input_file)
        job = running_job(meta, input_path, done, engine)
        active = self.active[meta.job_id] = ActiveJob(job, meta)
        self.terminal.forget(meta.job_id)
        if self.duplicates.admit(active):  # else it waits for, or follows, a job of the same content
            self.scheduler.add(job)
        return active

    # -- pipeline events -------------------------------------------------------------------------
    def handle(self, event: Event | ResultWritten | RecordSaved, stopping: bool = False) -> None:
        active = self.active.get(event.job.job_id)
        if isinstance(event, RecordSaved):
            if active is not None and active.job is event.job and active.saving:
                self._record_saved(active, event)
            return
        if active is None or active.job is not event.job or active.meta.status.terminal:
            return  # a job we stopped working on (cancelled, taken over, finished)
        if isinstance(event, ResultWritten):
            self._result_written(active, event)
        elif isinstance(event, Opened):
            self._opened(active, event, stopping)
        elif isinstance(event, PageDone):
            self.storage.succeeded("page")
            self.scheduler.page_ended(event.job, event.page)
            event.job.done.add(event.page)
            event.job.failed.pop(event.page, None)
            self.hooks.on_page(event.job.job_id, event.page, "done", event.info)
            self._progress(active)
        elif isinstance(event, PageFailed):
            self._page_failed(active, event, stopping)

    def _opened(self, active: ActiveJob, event: Opened, stopping: bool) -> None:
        job = active.job
        self.scheduler.opened(job, None)
        changed = changed_since_claim(active.meta.source, job.input_path)
        error = None if event.error is None else JobError(type=event.error.type, message=str(event.error))
        facts = OpenFacts(
            changed=changed,
            error=error,
            outbox_missing=self.store.missing() if changed is None and error is not None else None,
            pages=None if event.info is None else event.info.pages,
            transient=event.transient,
            open_failures=active.open_failures,
            page_retries=self.config.pipeline.page_retries,
            status=active.meta.status,
            stopping=stopping,
        )
        decision = decide_opened(facts)
        if isinstance(decision, StartOver):
            self.inputs.start_over(active, decision.stamp)
            return
        if isinstance(decision, WaitForStorage):
            self.storage.failed("open", decision.problem)
            self.deferred.add(job, None)
            return
        self.storage.succeeded("open")
        if isinstance(decision, FailJob):
            self.finish(active, Status.FAILED, decision.error)
        elif isinstance(decision, OpenAgain):
            active.open_failures += 1
            if decision.schedule:
                self.scheduler.add(job)
        elif isinstance(decision, Begin):
            self._begin(active, decision)

    def _begin(self, active: ActiveJob, decision: Begin) -> None:
        job = active.job
        self.scheduler.opened(job, decision.pages)
        if decision.to_processing:
            active.meta.transition(Status.PROCESSING)
            active.meta.worker.heartbeat_at = utc_now()
            pages = f"{job.pages_total} page{'s' if job.pages_total != 1 else ''}"
            log.info("%s: processing, %s (%d already done)", job.job_id, pages, len(job.done))
            active.previous = Status.QUEUED
            # Saved by the next flush with the first progress; a short job's end comes first (finish).
            active.dirty = True
        if decision.schedule:
            self.scheduler.add(job)
        self._progress(active)

    def _page_failed(self, active: ActiveJob, event: PageFailed, stopping: bool) -> None:
        job = active.job
        self.scheduler.page_ended(job, event.page)
        facts = PageFailFacts(
            stage=event.stage,
            error=event.error,
            permanent=event.permanent,
            tries=job.page_tries.get(event.page, 1),
            page_retries=self.config.pipeline.page_retries,
            job_cancelled=job.cancelled,
            # A render failure may be the outbox's: the input lives there.
            outbox_missing=self.store.missing() if event.stage == "render" and not job.cancelled else None,
            os_error=event.os_error,
            stopping=stopping,
        )
        decision = decide_page_failed(facts)
        info: dict[str, Any] = {"error": event.error, "stage": event.stage, "engine": job.engine}
        if isinstance(decision, Ignore):
            return
        if isinstance(decision, RunLater):
            self.deferred.add(job, event.page)
        elif isinstance(decision, WaitForStorage):  # full, read-only or away: not the page's fault
            self.hooks.on_storage_error("page", event.error)
            self.storage.failed("page", decision.problem)
            self.deferred.add(job, event.page)
        elif isinstance(decision, RetryPage):
            log.warning("%s: page %d failed (%s); retrying", job.job_id, event.page, event.error)
            if decision.front:
                self.scheduler.hold_first(job, event.page)
            else:
                self.scheduler.requeue(job, event.page)
            self.hooks.on_page(job.job_id, event.page, "retried", info)
        elif isinstance(decision, FailPage):
            log.warning("%s: page %d failed for good: %s", job.job_id, event.page, event.error)
            job.failed[event.page] = decision.error
            self.hooks.on_page(job.job_id, event.page, "failed", info)
            self._progress(active)

    # -- the end of a job ------------------------------------------------------------------------
    def _progress(self, active: ActiveJob) -> None:
        job = active.job
        active.meta.set_progress(job.pages_total, len(job.done), len(job.failed))
        active.dirty = True
        if self.scheduler.finished(job):
            self.complete(active)

    def complete(self, active: ActiveJob) -> None:
        job = active.job
        changed = changed_since_claim(active.meta.source, job.input_path)
        decision = decide_complete(changed, job.pages_total or 0, job.failed, self.config.pipeline.max_page_error_rate)
        if isinstance(decision, StartOver):
            self.inputs.start_over(active, decision.stamp)
            return
        if isinstance(decision, FailJob):
            self.finish(active, Status.FAILED, decision.error)
            return
        active.result_due = None
        if not active.writing:
            active.writing, work = True, self.hooks.ending_work(active.meta)
            outputs = self.config.outputs(active.meta.profile)
            self.results.start(job, result_write(self.store, active, outputs), work)

    def _follow(self, active: ActiveJob, leader: JobMeta) -> None:
        """A duplicate of a completed job: completed with that job's results (daemon/duplicates.py)."""
        active.follows = active.meta.duplicate_of = leader.job_id
        done = leader.progress
        active.meta.set_progress(done.pages_total, done.pages_done, done.pages_failed)
        self.complete(active)

    def _result_written(self, active: ActiveJob, event: ResultWritten) -> None:
        job, exc = active.job, event.error
        active.writing = False
        if isinstance(exc, LeaderGone):  # the job it follows went meanwhile: decide again
            log.info("%s: %s; deciding again", job.job_id, exc)
            active.follows = None
            if self.duplicates.admit(active):
                self.scheduler.add(job)
        elif isinstance(exc, PageMissing):
            if self.store.missing() is None and not self.records.folder_deleted(job.job_id):
                log.warning("%s: page %d's Markdown is gone; doing the page again", job.job_id, exc.page)
                job.done.discard(exc.page)
                self.scheduler.requeue(job, exc.page)
                return
            self._result_waits(active, exc)  # the folder or the whole outbox is away
        elif isinstance(exc, OSError):
            self._result_waits(active, exc)
        elif exc is not None or event.result_meta is None:
            log.error("%s: internal error while writing the result; trying again", job.job_id, exc_info=exc)
            active.result_due = time.monotonic() + STORAGE_RETRY_SECONDS
        else:
            self.storage.succeeded("result")
            active.meta.warnings = [*active.notes, *event.result_meta["warnings"]][:100]
            self.finish(active, Status.COMPLETED, later=True)

    def _result_waits(self, active: ActiveJob, exc: OSError) -> None:
        """The result could not be written: a deleted folder ends the job's run here; a full,
        read-only or absent outbox makes it wait, and the flush tries again."""
        if isinstance(exc, FileNotFoundError) and self.records.folder_deleted(active.job_id):
            self.forget(active.job_id, "its folder was deleted")
            return
        self.records.storage_failed("result", exc)
        active.result_due = time.monotonic() + STORAGE_RETRY_SECONDS

    def finish(self, active: ActiveJob, status: Status, error: JobError | None = None, *, later: bool = False) -> None:
        active.job.cancelled = True  # nothing more of this job is processed
        if active.meta.status is Status.QUEUED and status is Status.COMPLETED:
            active.meta.transition(Status.PROCESSING)
        if active.previous is not None and not active.meta.status.terminal:
            # A start the flush had not written yet: observers hear of it before the end.
            previous, active.previous = active.previous, None
            self.hooks.on_job_status(active.meta, previous)
        active.previous = active.meta.status
        active.meta.transition(status, error=error)
        self._settle_terminal(active, later)

    def _settle_terminal(self, active: ActiveJob, later: bool = False) -> None:
        """A job that reached its end leaves the active set once that is on disk (full, read-only:
        it stays, the flush tries again). A completion is saved `later`, on a record thread (record_saves.py);
        a cancel or failure at once: its caller (the job API) may read the record next."""
        if active.saving:
            return
        self.hooks.on_job_ending(active.meta)  # before the save: a delivery owed is never lost
        if later and self.saves.open:
            stamp(active.meta)
            active.saving = True
            self.saves.start(active.job, active.meta.copy_whole())
        elif self.save(active):
            self._left(active)

    def _record_saved(self, active: ActiveJob, event: RecordSaved) -> None:
        active.saving, active.meta.revision = False, event.revision  # the record as it is on disk
        if self._judge_save(active, self.records.saved(active.job_id, active.job.epoch, event.written)):
            self._left(active)

    def _left(self, active: ActiveJob) -> None:
        """A job whose end is on disk: no longer ours to work on."""
        job, meta = active.job, active.meta
        self.active.pop(job.job_id, None)
        self.terminal.note(meta)
        self.hooks.on_job_status(meta, active.previous)
        self.duplicates.ended(job.job_id)
        _log_end(meta)

    def forget(self, job_id: str, why: str) -> None:
        active = self.active.pop(job_id, None)
        if active is not None:
            active.job.cancelled = True
            log.warning("%s: no longer working on it: %s", job_id, why)

    # -- records ---------------------------------------------------------------------------------
    def save(self, active: ActiveJob) -> bool:
        """Write the job's record through the one guarded save. False when it was not written: the
        job is then forgotten (deleted, taken over), or kept dirty and the flush tries again."""
        return self._judge_save(active, self.records.save(active.meta, active.job.epoch))

    def _judge_save(self, active: ActiveJob, saved: Saved) -> bool:
        if saved is Saved.FENCED:
            self.forget(active.job_id, "another daemon has taken it over")
        elif saved is Saved.DELETED:
            self.forget(active.job_id, "its folder was deleted (treated as cancel)")
        if saved is not Saved.SAVED:
            active.dirty = active.dirty or saved is Saved.WAITING
            return False
        active.dirty = False
        # Kept: those that could not be removed (a read-only outbox); the next save tries again.
        clear = self.records.clear_control
        active.clear_after_save = [c for c in active.clear_after_save if clear(active.job_id, c) is not None]
        if active.previous is not None and not active.meta.status.terminal:
            previous, active.previous = active.previous, None
            self.hooks.on_job_status(active.meta, previous)
        return True

    def flush(self, everything: bool = False) -> None:
        """Write what changed (`everything`: every job, as at a stop) and try waiting results again."""
        now = time.monotonic()
        self.duplicates.look_again(self.active, lambda waiting: self.scheduler.add(waiting.job))
        for active in list(self.active.values()):
            active.dirty = active.dirty or everything
            if active.result_due is not None and active.result_due <= now and not active.meta.status.terminal:
                self.complete(active)
            if not active.dirty:
                continue
            if active.meta.status.terminal:
                self._settle_terminal(active)
            else:
                self.save(active)


def resume_point(store: JobStore, job_id: str) -> set[int]:
    """Where work on a job folder goes on: the temp files a crash left removed, and its done pages."""
    store.sweep_temp_files(job_id)
    return store.done_pages(job_id)


def _log_end(meta: JobMeta) -> None:
    done = meta.progress
    pages = f"{done.pages_done}/{done.pages_total}" if done.pages_total is not None else "-"
    detail = f": {meta.error.type}: {meta.error.message}" if meta.error else ""
    log.info("%s: %s (pages %s)%s", meta.job_id, meta.status.value, pages, detail)
