"""The one writer of the job records this daemon owns: every change to a job's metadata.json, its
control files and its result goes through here, guarded the same way (fencing, a deleted folder, a
full, read-only or vanished outbox)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from enum import Enum

from ..spool.model import JobMeta, utc_now
from ..spool.store import JobStore
from ..storage_watch import StorageWatch

log = logging.getLogger("ocr_watcher")


class Saved(Enum):
    SAVED = "saved"
    FENCED = "fenced"  # another daemon holds a newer lease: the job is no longer ours
    DELETED = "deleted"  # its folder is gone while the outbox is there: a person deleted it
    WAITING = "waiting"  # the outbox is full, read-only or away: kept dirty, tried again


class JobRecords:
    def __init__(self, store: JobStore, storage: StorageWatch, on_storage_error: Callable[[str, str], None]) -> None:
        self.store = store
        self.storage = storage
        self._on_storage_error = on_storage_error

    def storage_failed(self, operation: str, error: OSError | str) -> None:
        """A write the daemon needs did not happen: observers hear of it, the storage state says it."""
        self._on_storage_error(operation, str(error))
        self.storage.failed(operation, error)

    def save(self, meta: JobMeta, epoch: int) -> Saved:
        """metadata.json of a job whose lease at `epoch` we hold, unless it was deleted or taken over."""
        job_id = meta.job_id
        try:
            if self.store.is_fenced(job_id, epoch):
                return Saved.FENCED
            meta.updated_at = utc_now()
            meta.worker.heartbeat_at = meta.updated_at
            self.store.save(meta)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and self.folder_deleted(job_id):
                return Saved.DELETED
            self.storage_failed("metadata", exc)
            self.store.touch_lease(job_id, epoch)  # a takeover not yet on disk is still ours
            return Saved.WAITING
        self.storage.succeeded("metadata")
        return Saved.SAVED

    def remove_result(self, job_id: str) -> None:
        try:
            self.store.remove_result(job_id)
        except OSError as exc:  # rewritten when the job completes again
            self._on_storage_error("result", str(exc))
            log.warning("%s: cannot remove the earlier result: %s", job_id, exc)

    def clear_control(self, job_id: str, control: str) -> OSError | None:
        """Remove a control file we acted on; the error when it cannot be (a read-only outbox)."""
        try:
            self.store.clear_control(job_id, control)
        except OSError as exc:
            self._on_storage_error("control", str(exc))
            log.warning("%s: cannot remove %s: %s", job_id, control, exc)
            return exc
        return None

    def folder_deleted(self, job_id: str) -> bool:
        """The job's folder is gone while the outbox is there: a person deleted it (a cancel)."""
        return self.store.missing() is None and not os.path.isdir(self.store.paths(job_id).dir)
