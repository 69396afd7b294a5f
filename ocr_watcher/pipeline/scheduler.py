"""One page queue shared by all jobs.

Order: profile priority first; then a job's first `fast_lane_pages` pages go ahead of the later
pages of jobs that already had theirs (so a 1-page job dropped behind a 300-page job is done in
seconds, not after it); then job age (FIFO, so big jobs finish one after another rather than all
at the very end). Jobs are kept as cursors, not as one entry per page, so a 5,000-page job costs
one heap entry.

Suspect jobs: a job one of whose renders timed out or crashed (a hanging or crashing document) is
marked suspect. Its tasks keep their place in that order but may hold at most `render_slots // 2`
render slots at a time, so the other half always serves healthy jobs; with one render slot a suspect
job's task is handed out only when no healthy job has work. A suspect job's retries go to the end of
its line, after its other pages. The render loop reports each task's end (`task_finished`), which is
what frees a slot.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


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
    page_tries: dict[int, int] = field(default_factory=dict)  # page -> tries so far (a job's runs are JobMeta.attempts)
    in_flight: set[int] = field(default_factory=set)
    handed_at: dict[int, float] = field(default_factory=dict)  # page in flight -> monotonic hand-out time
    served: int = 0  # pages handed out, plus pages done before this run: drives the fast lane
    opening: bool = False
    cancelled: bool = False  # set by the main loop; workers drop this job's results
    suspect: bool = False  # a render of it timed out or crashed: it gets limited render slots

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
    try_number: int  # 1 for the page's first try in this run
    order: tuple  # the job's place in the queue when this page was handed out


Task = OpenTask | PageTask


class Ordered(Protocol):
    job_id: str
    priority: int
    created_at: float
    served: int


def order_key(job: Ordered, fast_lane_pages: int) -> tuple:
    """A job's place in the queue: what the scheduler serves by, and what ocr_watcher.eta simulates."""
    return (-job.priority, job.served >= fast_lane_pages, job.created_at, job.job_id)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A job with work left, as `PageScheduler.queue_view` copies it for estimates."""

    job_id: str
    priority: int
    created_at: float
    served: int
    engine: str
    pending: int | None  # pages not handed out yet; None until the job has opened
    in_flight: int
    flight_ages: tuple[float, ...] = ()  # seconds since each page in flight was handed out


class PageScheduler:
    def __init__(self, fast_lane_pages: int, render_slots: int = 1) -> None:
        self.fast_lane_pages = fast_lane_pages
        self._render_slots = max(1, render_slots)
        self._heap: list[tuple[tuple, int, RunningJob]] = []
        # The RunningJobs (by id()) that have a heap entry: a job retried after a cancel is a new
        # RunningJob of the same job id, pushed while the cancelled one may still be in the heap.
        self._queued: set[int] = set()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        # Tasks handed out and not reported finished: counted, not kept as a number, so that a job
        # turning suspect also counts its tasks already running.
        self._running: set[Task] = set()

    def set_render_slots(self, slots: int) -> None:
        """How many tasks run at once (the pipeline's render threads): sets the suspect share."""
        with self._cond:
            self._render_slots = max(1, slots)
            self._cond.notify_all()

    def mark_suspect(self, job: RunningJob) -> bool:
        """A render of `job` timed out or crashed: limit it from now on. True if it was not yet."""
        with self._cond:
            if job.suspect:
                return False
            job.suspect = True
            return True

    def task_finished(self, task: Task) -> None:
        """The render slot `task` held is free (rendered, failed or dropped). Idempotent."""
        with self._cond:
            if task in self._running:
                self._running.discard(task)
                if task.job.suspect:  # a suspect slot is free: a waiting suspect task may go
                    self._cond.notify()

    def add(self, job: RunningJob) -> None:
        """A job with work to hand out: opening (page count unknown) or pending pages."""
        with self._cond:
            self._push(job)
            self._cond.notify()

    def requeue(self, job: RunningJob, page: int) -> None:
        """A page to try again: first in its job's line; last if the job is suspect (the retry of a
        hanging page would otherwise hold its slot again before the job's good pages run)."""
        with self._cond:
            if job.suspect:
                job.pending.append(page)
            else:
                job.pending.appendleft(page)
            self._push(job)
            self._cond.notify()

    # The main thread's changes to a job's pages: under the lock, as the render threads' are, so that
    # a page being handed out is never seen half-way (out of `pending`, not yet in `in_flight`).
    def opened(self, job: RunningJob, pages: int | None) -> None:
        """The job's opening ended; `pages`: its page count, None when it did not open."""
        with self._cond:
            job.opening = False
            if pages is not None:
                job.pages_total = pages
                job.pending.extend(p for p in range(1, pages + 1) if p not in job.done)
                job.done &= set(range(1, pages + 1))

    def page_ended(self, job: RunningJob, page: int) -> None:
        """A page handed out came back (done or failed)."""
        with self._cond:
            job.in_flight.discard(page)
            job.handed_at.pop(page, None)

    def hold_first(self, job: RunningJob, page: int) -> None:
        """A page to try again when the job runs next (at a stop: not handed out now)."""
        with self._cond:
            job.pending.appendleft(page)

    def forgive_try(self, job: RunningJob, page: int) -> None:
        """The last try of `page` does not count (the outbox failed it, not the page)."""
        with self._cond:
            job.page_tries[page] = job.page_tries.get(page, 1) - 1

    def finished(self, job: RunningJob) -> bool:
        with self._cond:
            return job.finished

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

    def queue_view(self, jobs: Iterable[RunningJob]) -> list[QueueEntry]:
        """Those of `jobs` (the daemon's) with work left, copied under the lock: the heap alone
        misses jobs whose last pages are all handed out."""
        now = time.monotonic()
        with self._cond:
            return [
                QueueEntry(
                    job.job_id,
                    job.priority,
                    job.created_at,
                    job.served,
                    job.engine,
                    None if job.pages_total is None else len(job.pending),
                    len(job.in_flight),
                    tuple(now - job.handed_at.get(page, now) for page in job.in_flight),
                )
                for job in jobs
                if not job.cancelled and (job.pages_total is None or job.pending or job.in_flight)
            ]

    def depth(self) -> tuple[int, int]:
        """(jobs, pages) waiting to be handed out."""
        with self._cond:
            jobs = [entry[2] for entry in self._heap if not entry[2].cancelled]
            return len(jobs), sum(len(job.pending) for job in jobs)

    # -- internals (hold the lock) -------------------------------------------------------------
    def _push(self, job: RunningJob) -> None:
        if id(job) in self._queued or job.cancelled:
            return
        if job.pages_total is None and job.opening:
            return
        if job.pages_total is not None and not job.pending:
            return
        heapq.heappush(self._heap, (order_key(job, self.fast_lane_pages), next(self._seq), job))
        self._queued.add(id(job))

    def _suspect_running(self) -> int:
        return sum(1 for task in self._running if task.job.suspect)

    def _pop_task(self) -> Task | None:
        # Suspect jobs over their share are set aside (keeping their heap entry) while the heap is
        # searched for a healthy job; they go back into the heap before returning.
        suspect_cap = self._render_slots // 2
        running_suspect: int | None = None  # counted once, when the first suspect job comes up
        held: list[tuple[tuple, int, RunningJob]] = []
        try:
            while self._heap:
                entry = heapq.heappop(self._heap)
                job = entry[2]
                self._queued.discard(id(job))
                if job.cancelled or not self._has_work(job):
                    continue
                if job.suspect:
                    if running_suspect is None:
                        running_suspect = self._suspect_running()
                    if running_suspect >= suspect_cap:
                        held.append(entry)
                        continue
                return self._hand_out(entry)
            # No healthy job has work: a suspect job may have a slot even when render_slots is 1.
            if held and running_suspect is not None and running_suspect < max(1, suspect_cap):
                return self._hand_out(held.pop(0))
            return None
        finally:
            for entry in held:
                heapq.heappush(self._heap, entry)
                self._queued.add(id(entry[2]))

    @staticmethod
    def _has_work(job: RunningJob) -> bool:
        if job.pages_total is None:
            return not job.opening
        return bool(job.pending)

    def _hand_out(self, entry: tuple[tuple, int, RunningJob]) -> Task:
        key, _, job = entry
        task: Task
        if job.pages_total is None:
            job.opening = True
            task = OpenTask(job)
        else:
            page = job.pending.popleft()
            job.in_flight.add(page)
            job.handed_at[page] = time.monotonic()
            job.served += 1
            try_number = job.page_tries.get(page, 0) + 1
            job.page_tries[page] = try_number
            self._push(job)
            task = PageTask(job, page, try_number, key)
        self._running.add(task)
        return task
