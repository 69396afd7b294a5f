"""Pages (None: a job's opening) that wait for the outbox to be writable again, or to come back:
they run again after a while, without using up a retry."""

from __future__ import annotations

import time

from ..pipeline.scheduler import PageScheduler, RunningJob

STORAGE_RETRY_SECONDS = 5.0  # how long a page (or a result) that could not be written waits


class Deferred:
    def __init__(self, scheduler: PageScheduler) -> None:
        self.scheduler = scheduler
        self._waiting: list[tuple[float, RunningJob, int | None]] = []

    def add(self, job: RunningJob, page: int | None) -> None:
        if page is not None:
            self.scheduler.forgive_try(job, page)
        self._waiting.append((time.monotonic() + STORAGE_RETRY_SECONDS, job, page))

    def requeue_due(self, now: float) -> None:
        if not self._waiting or self._waiting[0][0] > now:  # in order: every entry waits as long
            return
        due = [entry for entry in self._waiting if entry[0] <= now]
        self._waiting = [entry for entry in self._waiting if entry[0] > now]
        for _, job, page in due:
            if job.cancelled:
                continue
            if page is None:
                self.scheduler.add(job)  # opened again
            else:
                self.scheduler.requeue(job, page)
