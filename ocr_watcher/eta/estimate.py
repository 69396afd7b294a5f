"""When a claimed job will start and finish, as a pure function of the page queue and measured page
costs: the scheduler's order (priority, then the small-job lane, then age; pipeline/scheduler.py) is
played forward, a job's pages at a time, so a queue of many jobs costs one heap step per job.

Two figures per engine time it (eta/rates.py): what a page costs the daemon's throughput (pages run
side by side, so this is less than one page's own time), which spaces the hand-outs; and a page's
life from hand-out to done, which is how long after its hand-out a page is done.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..pipeline.scheduler import QueueEntry, order_key


@dataclass(frozen=True, slots=True)
class Estimate:
    pages_ahead: int  # pages of other jobs handed out before this job's next page (in flight included)
    start_in: float | None  # seconds until its next page is handed out; None without any measured cost
    finish_in: float | None  # seconds until its last page is done; None also while its page count is unknown


@dataclass(slots=True)
class _Playing:
    """A job's cursor while the queue is played forward."""

    job_id: str
    priority: int
    created_at: float
    served: int
    left: int
    cost: float | None


def borrowed(measured: Mapping[str, float], engine: str) -> float | None:
    """An engine's measured figure; an engine not measured yet borrows the mean of the others'."""
    if engine in measured:
        return measured[engine]
    return sum(measured.values()) / len(measured) if measured else None


def estimate_queue(
    entries: Sequence[QueueEntry],
    fast_lane_pages: int,
    costs: Mapping[str, float],
    lives: Mapping[str, float] | None = None,
) -> dict[str, Estimate]:
    """Every entry's Estimate, from the seconds a page costs the throughput (`costs`) and a page's
    mean life from hand-out to done (`lives`; without it, Little's law: the pages in flight times
    their cost), per engine.

    A page handed out from now on is done a life after its hand-out; a page in flight is done a life
    after it was handed out. An entry whose page count is unknown (not opened yet: a job opens at its
    turn in the order) gets its start but no finish, and is assumed, for the jobs behind it, to be as
    long as the opened jobs are on average."""
    known = [borrowed(costs, entry.engine) for entry in entries]
    timed = bool(costs)  # then every engine has a cost, its own or borrowed
    flight_pages = sum(entry.in_flight for entry in entries)
    flight_cost = sum(entry.in_flight * (cost or 0.0) for entry, cost in zip(entries, known, strict=True))
    heap: list[tuple[tuple, int, _Playing]] = []
    first: dict[str, tuple[int, float]] = {}  # job -> (pages, seconds) handed out before its next page
    last: dict[str, float] = {}  # job -> seconds until its last page is handed out
    opened = [entry.served + entry.pending for entry in entries if entry.pending is not None]
    assumed = round(sum(opened) / len(opened)) if opened else 0
    for n, (entry, cost) in enumerate(zip(entries, known, strict=True)):
        left = assumed if entry.pending is None else entry.pending
        job = _Playing(entry.job_id, entry.priority, entry.created_at, entry.served, left, cost)
        if left > 0 or entry.pending is None:
            heapq.heappush(heap, (order_key(job, fast_lane_pages), n, job))
    pages, seconds = flight_pages, 0.0
    while heap:
        _, n, job = heapq.heappop(heap)
        first.setdefault(job.job_id, (pages, seconds))
        if job.left == 0:  # not opened, and nothing opened to assume a length from
            continue
        chunk = job.left if job.served >= fast_lane_pages else min(job.left, fast_lane_pages - job.served)
        job.served += chunk
        job.left -= chunk
        pages += chunk
        seconds += chunk * (job.cost or 0.0)
        if job.left:
            heapq.heappush(heap, (order_key(job, fast_lane_pages), n, job))
        else:
            last[job.job_id] = seconds - (job.cost or 0.0)  # its last page's hand-out, not its end
    all_ages = [age for entry in entries for age in entry.flight_ages]
    estimates = {}
    for entry, cost in zip(entries, known, strict=True):
        life = borrowed(lives or {}, entry.engine)
        life = flight_cost if life is None else life
        # A job with nothing left to hand out (its last pages in flight) has no one ahead of it.
        ahead, before = first.get(entry.job_id, (entry.in_flight, 0.0))
        if entry.pending is None or not timed:
            finish_in = None
        elif entry.pending:
            finish_in = last[entry.job_id] + max(life, cost or 0.0)
        else:  # its last pages are in flight: done a life after their hand-out, and not before the
            # pages handed out before them are through (one of them part done already)
            newest = min(entry.flight_ages or (0.0,))
            before_it = sum(1 for age in all_ages if age >= newest)
            finish_in = max(0.0, life - newest, (before_it - 0.5) * (cost or 0.0))
        estimates[entry.job_id] = Estimate(
            pages_ahead=max(0, ahead - entry.in_flight), start_in=before if timed else None, finish_in=finish_in
        )
    return estimates
