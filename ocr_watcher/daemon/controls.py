"""What the main loop checks of the jobs its owner runs, besides their events: control files
(CANCEL), folders deleted under them, and fencing (another daemon took one over)."""

from __future__ import annotations

import logging

from ..spool.layout import CANCEL
from ..spool.model import JobError, Status
from .jobs import JobOwner

log = logging.getLogger("ocr_watcher")
CANCELLED = JobError(type="cancelled", message="cancelled on request (a CANCEL file, or DELETE /jobs/{id})")


def check_controls(owner: JobOwner) -> None:
    for job_id in list(owner.active):
        check_control(owner, job_id)


def check_control(owner: JobOwner, job_id: str) -> None:
    active = owner.active.get(job_id)
    if active is None:
        return
    paths = owner.store.paths(job_id)
    if not paths.dir.exists():
        owner.forget(job_id, "its folder was deleted (treated as cancel)")
    elif paths.cancel.exists() and not active.meta.status.terminal and not active.writing:
        # (A job whose result is being written has done every page: a cancel comes too late.)
        # Said now: on a full or read-only outbox the cancelled status is written only later.
        log.info("%s: cancel requested; no more of its pages are done", job_id)
        owner.finish(active, Status.CANCELLED, CANCELLED)
        owner.records.clear_control(job_id, CANCEL)  # one left behind is cleared by a retry


def check_fencing(owner: JobOwner) -> None:
    """After a pause (SIGSTOP, a stalled share) another daemon may own some of our jobs."""
    for job_id, active in list(owner.active.items()):
        if owner.store.is_fenced(job_id, active.job.epoch):
            owner.forget(job_id, "another daemon has taken it over")
