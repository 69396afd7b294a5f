"""A completed job's last record (metadata.json) written on a few threads of its own: the one fsync
per job the main loop still waited for, in turn, for every job. (A cancel or a failure is saved
on the main thread at once: the job API that asked for it reads the record next.)

The single-writer rule holds: while its last record is being written a job is `ActiveJob.saving`,
and the main thread writes nothing of it (the flush and the pipeline's events pass it by; it is
terminal already). The thread writes a copy and only the I/O (JobRecords.write); what the write came
to returns to the main thread as a `RecordSaved` event, where the owner judges it (saved, fenced,
deleted, waiting for storage) as it did when the write was its own. At a stop, once `wait` has
returned, saves are made on the main thread again.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..pipeline.scheduler import RunningJob
from ..spool.model import JobMeta
from .records import JobRecords, Written

SAVE_THREADS = 4  # like the result threads: enough for the journal to commit several saves together


@dataclass(frozen=True)
class RecordSaved:
    job: RunningJob
    written: Written
    revision: int  # the copy's after the write (a save bumps it; one that failed does not)


class RecordSaves:
    def __init__(self, records: JobRecords, post: Callable[[RecordSaved], None]) -> None:
        self.records = records
        self._post = post  # onto the main loop's event queue
        self._pool: ThreadPoolExecutor | None = None
        self.open = True  # False after `wait`: the stop's last saves are made on the main thread

    def start(self, job: RunningJob, meta: JobMeta) -> None:
        """Write `meta` (a copy no one changes) as the record of `job` at its epoch."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SAVE_THREADS, thread_name_prefix="record")
        self._pool.submit(self._save, job, meta)

    def wait(self) -> None:
        """Let the saves running finish (at a stop); their events are on the queue afterwards."""
        self.open = False
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _save(self, job: RunningJob, meta: JobMeta) -> None:
        try:
            written = self.records.write(meta, job.epoch)
        except Exception as exc:  # a bug: judged like a failed write, so the flush tries again
            written = OSError(f"internal error while saving: {exc!r}")
        self._post(RecordSaved(job, written, meta.revision))
