"""The one writer of the job records this daemon owns: every change to a job's metadata.json, its
control files and its result goes through here, guarded the same way (fencing, a deleted folder, a
full, read-only or vanished outbox)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from enum import Enum
from typing import Literal

from ..spool.model import JobMeta, utc_now
from ..spool.store import JobStore
from ..storage_watch import StorageWatch

log = logging.getLogger("ocr_watcher")


class Saved(Enum):
    SAVED = "saved"
    FENCED = "fenced"  # another daemon holds a newer lease: the job is no longer ours
    DELETED = "deleted"  # its folder is gone while the outbox is there: a person deleted it
    WAITING = "waiting"  # the outbox is full, read-only or away: kept dirty, tried again


Written = Literal[Saved.FENCED] | OSError | None  # what JobRecords.write came to


def stamp(meta: JobMeta) -> None:
    """The record says when it was written, which is also its owner's heartbeat."""
    meta.updated_at = utc_now()
    meta.worker.heartbeat_at = meta.updated_at


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
        stamp(meta)
        return self.saved(meta.job_id, epoch, self.write(meta, epoch))

    def write(self, meta: JobMeta, epoch: int) -> Written:
        """The I/O of a save, on any thread (daemon/record_saves.py): None when written, else
        Saved.FENCED or the error, for `saved` to judge on the main thread."""
        try:
            if self.store.is_fenced(meta.job_id, epoch):
                return Saved.FENCED
            self.store.save(meta)
        except OSError as exc:
            return exc
        return None

    def saved(self, job_id: str, epoch: int, written: Written) -> Saved:
        """Main thread: what a write came to, told to the storage state and the observers."""
        if written is Saved.FENCED:
            return Saved.FENCED
        if isinstance(written, OSError):
            if isinstance(written, FileNotFoundError) and self.folder_deleted(job_id):
                return Saved.DELETED
            self.storage_failed("metadata", written)
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
