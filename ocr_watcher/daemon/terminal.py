"""Jobs that reached their end, as the daemon keeps them in memory: completed ones are noted in the
store's completed set (shared with the job API's listing and retention) and never read again;
failed and cancelled ones are watched for a RETRY."""

from __future__ import annotations

from ..spool.model import RETRYABLE, JobMeta, Status
from ..spool.store import JobStore, MetadataStamp


class TerminalJobs:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        # Failed/cancelled job id -> metadata.json's stamp when last read, so that a job another
        # daemon retried (and now runs, or died running) is read again.
        self.retryable: dict[str, MetadataStamp | None] = {}

    def note(self, meta: JobMeta, stamp: MetadataStamp | None = None) -> None:
        """`stamp`: metadata.json's stamp taken before `meta` was read (else taken now)."""
        if meta.status is Status.COMPLETED:
            self.store.completed.add_meta(meta)
        elif meta.status in RETRYABLE:
            self.retryable[meta.job_id] = stamp if stamp is not None else self.store.metadata_stamp(meta.job_id)

    def forget(self, job_id: str) -> None:
        self.retryable.pop(job_id, None)
