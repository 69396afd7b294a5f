"""Becoming a job's owner: a RETRY of a failed or cancelled job, a job whose daemon's heartbeat
expired, and a takeover of ours that died half-way. Exactly one daemon wins each (the lease at the
next epoch, spool/store.py); the winner adopts the job through the one guarded save."""

from __future__ import annotations

import logging
import os

from ..spool.layout import CANCEL, RETRY
from ..spool.model import JobMeta, Status, Worker, utc_now
from ..storage_watch import StorageWatch
from .jobs import JobOwner
from .lifecycle import RetryAsked, decide_retry

log = logging.getLogger("ocr_watcher")


class Takeover:
    def __init__(self, owner: JobOwner, storage: StorageWatch, worker_id: str, host: str) -> None:
        self.owner = owner
        self.store = owner.store
        self.records = owner.records
        self.storage = storage
        self.worker_id = worker_id
        self.host = host

    def retry(self, job_id: str) -> None:
        meta = self.store.try_load(job_id)
        asked = decide_retry(None if meta is None else meta.status)
        if meta is None or asked is not RetryAsked.RETRY:
            self.owner.terminal.forget(job_id)
            if asked is RetryAsked.IGNORE:
                log.info("%s: completed; RETRY ignored", job_id)
                self.records.clear_control(job_id, RETRY)
            return
        # A CANCEL left behind would cancel the retried job at once: it goes first, and while it
        # cannot (a read-only outbox) the RETRY waits for the next scan.
        if (error := self.records.clear_control(job_id, CANCEL)) is not None:
            self.storage.failed("retry", error)
            return
        self.storage.succeeded("retry")
        self.owner.terminal.forget(job_id)
        if not self.take_over(meta, reason="retry requested"):
            return
        previous = meta.status
        meta.transition(Status.QUEUED)
        self.records.remove_result(job_id)
        log.info("%s: queued again (attempt %d)", job_id, meta.attempts)
        self.adopt(meta, previous, clear_after_save=[RETRY])

    def take_over(self, meta: JobMeta, *, reason: str) -> bool:
        """Become the job's owner at the next epoch (exactly one daemon can)."""
        lease = self.owner.config.jobs.heartbeat_lease_seconds
        taken = self.store.take_next_lease(meta.job_id, meta.worker.epoch, abandoned_after=lease)
        if not taken:
            return False
        epoch = taken[-1]
        previous = meta.worker.id
        meta.worker = Worker(id=self.worker_id, host=self.host, pid=os.getpid(), heartbeat_at=utc_now(), epoch=epoch)
        if previous != self.worker_id:
            log.info("%s: taken over from %s (%s)", meta.job_id, previous, reason)
        return True

    def adopt(self, meta: JobMeta, previous: Status | None, clear_after_save: list[str] | None = None) -> None:
        """Work on a job just taken over (its lease is ours): in memory at once, and its record
        written through the guarded save. Where that cannot be written yet (the outbox full or
        read-only), the flush tries again: the lease we hold and the record come together, and
        until they do, no other daemon steps over a lease younger than a heartbeat lease."""
        active = self.owner.activate(meta)
        active.previous = previous
        active.clear_after_save = list(clear_after_save or [])
        active.dirty = True
        self.owner.save(active)
