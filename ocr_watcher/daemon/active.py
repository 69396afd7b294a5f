"""A job this daemon works on: its record (metadata.json as last written or about to be) and its
place in the page pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..pipeline.scheduler import RunningJob
from ..spool.model import JobMeta, Status


@dataclass
class ActiveJob:
    job: RunningJob  # the pipeline's view: pages pending, in flight, done, failed
    meta: JobMeta  # the record; changed only on the main thread, written by JobRecords.save
    open_failures: int = 0
    dirty: bool = False  # `meta` has changes not yet on disk
    # The status before a change not yet on disk: observers hear of the change once it is.
    previous: Status | None = None
    notes: list[str] = field(default_factory=list)  # warnings of this run that go into metadata.json
    clear_after_save: list[str] = field(default_factory=list)  # control files done with once saved
    result_due: float | None = None  # every page is done, the result could not be written: try then
    writing: bool = False  # its result is being written (daemon/result_writes.py)
    saving: bool = False  # its last record is being written (daemon/record_saves.py)
    follows: str | None = None  # a duplicate: the job whose results complete it (daemon/duplicates.py)

    @property
    def job_id(self) -> str:
        return self.job.job_id


def running_job(meta: JobMeta, input_path: Path, done: set[int], engine: str) -> RunningJob:
    """The pipeline's view of a job taken up: `done`, the pages already on disk (a resume)."""
    return RunningJob(
        job_id=meta.job_id,
        input_path=input_path,
        kind=meta.kind or "pdf",
        priority=meta.priority,
        created_at=meta.created_at.timestamp(),
        profile=meta.profile,
        engine=engine,
        settings=meta.engine.settings() if meta.engine is not None else {},
        epoch=meta.worker.epoch,
        done=done,
        served=len(done),
    )
