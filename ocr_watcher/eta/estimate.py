"""When a claimed job will start and finish, as a pure function of the page queue and measured page
costs: the scheduler's order (priority, then the small-job lane, then age; pipeline/scheduler.py) is
played forward, a job's pages at a time, so a queue of many jobs costs one heap step per job.

Times come from the seconds one page costs the daemon's throughput on an engine (the gap between
pages finishing while it is busy, not one page's own latency: pages run side by side). A page handed
out now is done after the pages already in flight are, so finishing adds the in-flight pages' cost.
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


def page_cost(costs: Mapping[str, float], engine: str) -> float | None:
    """An engine's measured seconds per page; an engine not measured yet borrows the mean of the others."""
    if engine in costs:
        return costs[engine]
    return sum(costs.values()) / len(costs) if costs else None


def estimate_queue(
    entries: Sequence[QueueEntry], fast_lane_pages: int, costs: Mapping[str, float]
) -> dict[str, Estimate]:
    """Every entry's Estimate. An entry whose page count is unknown (not opened yet) gets its start;
    its pages, unknown, delay no one in the estimate (opening takes a moment: they are known soon)."""
    known = [page_cost(costs, entry.engine) for entry in entries]
    timed = bool(costs)  # then every engine has a cost, its own or borrowed
    flight_pages = sum(entry.in_flight for entry in entries)
    flight_cost = sum(entry.in_flight * (cost or 0.0) for entry, cost in zip(entries, known, strict=True))
    heap: list[tuple[tuple, int, _Playing]] = []
    first: dict[str, tuple[int, float]] = {}  # job -> (pages, seconds) handed out before its next page
    last: dict[str, float] = {}  # job -> seconds of pages handed out up to and including its last one
    for n, (entry, cost) in enumerate(zip(entries, known, strict=True)):
        left = entry.pending or 0
        job = _Playing(entry.job_id, entry.priority, entry.created_at, entry.served, left, cost)
        if entry.pending is None or left > 0:
            heapq.heappush(heap, (order_key(job, fast_lane_pages), n, job))
    pages, seconds = flight_pages, 0.0
    while heap:
        _, n, job = heapq.heappop(heap)
        first.setdefault(job.job_id, (pages, seconds))
        if job.left == 0:  # not opened: its own pages are unknown
            continue
        chunk = job.left if job.served >= fast_lane_pages else min(job.left, fast_lane_pages - job.served)
        job.served += chunk
        job.left -= chunk
        pages += chunk
        seconds += chunk * (job.cost or 0.0)
        if job.left:
            heapq.heappush(heap, (order_key(job, fast_lane_pages), n, job))
        else:
            last[job.job_id] = seconds
    estimates = {}
    for entry in entries:
        # A job with nothing left to hand out (its last pages in flight) has no one ahead of it.
        ahead, before = first.get(entry.job_id, (entry.in_flight, 0.0))
        known_pages = entry.pending is not None and timed
        estimates[entry.job_id] = Estimate(
            pages_ahead=max(0, ahead - entry.in_flight),
            start_in=before if timed else None,
            finish_in=last.get(entry.job_id, 0.0) + flight_cost if known_pages else None,
        )
    return estimates
