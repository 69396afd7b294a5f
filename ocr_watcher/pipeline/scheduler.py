"""One page queue shared by all jobs.

Order: profile priority first; then a job's first `fast_lane_pages` pages go ahead of the later
pages of jobs that already had theirs (so a 1-page job dropped behind a 300-page job is done in
seconds, not after it); then job age (FIFO, so big jobs finish one after another rather than all
at the very end). Jobs are kept as cursors, not as one entry per page, so a 5,000-page job costs
one heap entry.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(eq=False)
class RunningJob:
    """What the pipeline knows of a job this daemon is working on (the disk holds the truth)."""

    job_id: str
    input_path: Path
    kind: str
    priority: int
    created_at: float  # epoch seconds, for ordering
    profile: str
    engine: str
    settings: dict = field(default_factory=dict)  # the engine settings fixed at the claim (EngineInfo)
    epoch: int = 1
    pages_total: int | None = None
    pending: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    in_flight: set[int] = field(default_factory=set)
    served: int = 0  # pages handed out, plus pages done before this run: drives the fast lane
    opening: bool = False
    cancelled: bool = False  # set by the main loop; workers drop this job's results

    @property
    def finished(self) -> bool:
        return (
            self.pages_total is not None
            and not self.pending
            and not self.in_flight
            and len(self.done) + len(self.failed) >= self.pages_total
        )


@dataclass(frozen=True)
class OpenTask:
    job: RunningJob


@dataclass(frozen=True)
class PageTask:
    job: RunningJob
    page: int
    attempt: int
    order: tuple  # the job's place in the queue when this page was handed out


Task = OpenTask | PageTask


def order_key(job: RunningJob, fast_lane_pages: int) -> tuple:
    return (-job.priority, job.served >= fast_lane_pages, job.created_at, job.job_id)


class PageScheduler:
    def __init__(self, fast_lane_pages: int) -> None:
        self.fast_lane_pages = fast_lane_pages
        self._heap: list[tuple[tuple, int, RunningJob]] = []
        self._queued: set[str] = set()  # job ids that have a heap entry
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def add(self, job: RunningJob) -> None:
        """A job with work to hand out: opening (page count unknown) or pending pages."""
        with self._cond:
            self._push(job)
            self._cond.notify()

    def requeue(self, job: RunningJob, page: int) -> None:
        """A page to try again: first in its job's line."""
        with self._cond:
            job.pending.appendleft(page)
            self._push(job)
            self._cond.notify()

    def next_task(self, timeout: float) -> Task | None:
        with self._cond:
            while True:
                task = self._pop_task()
                if task is not None or self._closed:
                    return task
                if not self._cond.wait(timeout):
                    return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def depth(self) -> tuple[int, int]:
        """(jobs, pages) waiting to be handed out."""
        with self._cond:
            jobs = [entry[2] for entry in self._heap if not entry[2].cancelled]
            return len(jobs), sum(len(job.pending) for job in jobs)

    # -- internals (hold the lock) -------------------------------------------------------------
    def _push(self, job: RunningJob) -> None:
        if job.job_id in self._queued or job.cancelled:
            return
        if job.pages_total is None and job.opening:
            return
        if job.pages_total is not None and not job.pending:
            return
        heapq.heappush(self._heap, (order_key(job, self.fast_lane_pages), next(self._seq), job))
        self._queued.add(job.job_id)

    def _pop_task(self) -> Task | None:
        while self._heap:
            key, _, job = heapq.heappop(self._heap)
            self._queued.discard(job.job_id)
            if job.cancelled:
                continue
            if job.pages_total is None:
                if job.opening:
                    continue
                job.opening = True
                return OpenTask(job)
            if not job.pending:
                continue
            page = job.pending.popleft()
            job.in_flight.add(page)
            job.served += 1
            attempt = job.attempts.get(page, 0) + 1
            job.attempts[page] = attempt
            self._push(job)
            return PageTask(job, page, attempt, key)
        return None
