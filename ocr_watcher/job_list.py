"""`ocr-watcher jobs`: which jobs to read for the newest few, and the aligned table they print as.

A job id carries its claim time (`{name}_{YYYYMMDD}_{HHMMSS}_{hex}`, spool/ids.py), so the newest jobs
are found from the folder names alone: listing the last 20 of 100,000 jobs reads 20 metadata.json files
(and those claimed in the same second as the 20th), not 100,000.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from .eta.published import QueueFiles
from .spool.ids import JOB_ID_PATTERN
from .spool.model import JobMeta, Status, utc_now
from .spool.store import JobStore

DEFAULT_LIMIT = 50  # rows of the table when --limit is not given


def claim_second(job_id: str) -> str:
    """The claim time in a job id as "YYYYMMDDHHMMSS" (sorts as time); "" when the id has none."""
    match = JOB_ID_PATTERN.match(job_id)
    return match.group("date") + match.group("time") if match else ""


def newest_first(job_ids: Iterable[str]) -> list[str]:
    return sorted(job_ids, key=lambda job_id: (claim_second(job_id), job_id), reverse=True)


def select(
    job_ids: Iterable[str], load: Callable[[str], JobMeta | None], status: str | None, limit: int
) -> list[JobMeta]:
    """The `limit` newest jobs (all with limit 0) with `status` (any with None), newest first, loading
    metadata.json only as far as needed: in id order, then every job claimed in the same second as the
    last one kept, since ids order jobs only to the second."""
    found: list[JobMeta] = []
    boundary = None
    for job_id in newest_first(job_ids):
        if boundary is not None and claim_second(job_id) != boundary:
            break
        meta = load(job_id)
        if meta is None or (status is not None and meta.status.value != status):
            continue
        found.append(meta)
        if limit and len(found) >= limit and boundary is None:
            boundary = claim_second(job_id)
    found.sort(key=lambda meta: meta.created_at, reverse=True)
    return found[:limit] if limit else found


def span(seconds: float) -> str:
    """'42 s', '17 min', '5 h', '3 d': a length of time, in the largest unit that fits."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def age(moment: datetime, now: datetime) -> str:
    """How long ago."""
    return span((now - moment).total_seconds())


def eta_cell(eta: Mapping[str, Any] | None) -> str:
    """The ETA column: 'in 3 min' (to the finish), 'starts in 40 s' while only the start is known."""
    if eta is None:
        return ""
    if eta.get("seconds_to_finish") is not None:
        return f"in {span(eta['seconds_to_finish'])}"
    if eta.get("seconds_to_start") is not None:
        return f"starts in {span(eta['seconds_to_start'])}"
    return f"{eta.get('pages_ahead', 0)} pages ahead"


def describe_eta(eta: Mapping[str, Any] | None) -> str:
    """`ocr-watcher status`'s queue line."""
    if eta is None:
        return "no estimate (the daemon that holds it is not running, or has not published one yet)"
    parts = [f"{eta.get('pages_ahead', 0)} pages of other jobs ahead"]
    if eta.get("seconds_to_start") is not None:
        parts.append(f"next page in {span(eta['seconds_to_start'])}")
    if eta.get("seconds_to_finish") is not None:
        parts.append(f"done in about {span(eta['seconds_to_finish'])} ({eta['estimated_finish']})")
    elif eta.get("seconds_to_start") is None:
        parts.append("no page measured yet to time it by")
    return ", ".join(parts)


def waits_for(meta: JobMeta) -> str | None:
    """A queued duplicate waits for the job of the same content (daemon/duplicates.py), not the queue."""
    return meta.duplicate_of if meta.duplicate_of and meta.status is Status.QUEUED else None


def queue_line(store: JobStore, meta: JobMeta) -> str:
    if leader := waits_for(meta):
        return f"waits for job {leader}, of the same content, and then takes its results"
    return describe_eta(QueueFiles(store.layout).eta(meta.worker.id, meta.job_id, time.time()))


def live_eta(store: JobStore) -> Callable[[JobMeta], str]:
    """For `ocr-watcher wait`'s bars: a job's ETA cell, read afresh at each call."""
    estimates = QueueFiles(store.layout)

    def cell(meta: JobMeta) -> str:
        if leader := waits_for(meta):
            return f"after {leader}"
        return "" if meta.status.terminal else eta_cell(estimates.eta(meta.worker.id, meta.job_id, time.time()))

    return cell


def row(meta: JobMeta, now: datetime, eta: Mapping[str, Any] | None = None) -> list[str]:
    progress = meta.progress
    total = "?" if progress.pages_total is None else str(progress.pages_total)
    error = f"{meta.error.type}: {meta.error.message}" if meta.error else ""
    return [
        meta.job_id,
        meta.status.value,
        f"{progress.pages_done}/{total}",
        f"{progress.percent:.0f}%",
        age(meta.created_at, now),
        f"after {leader}" if (leader := waits_for(meta)) else eta_cell(eta),
        error,
    ]


HEADER = ["JOB", "STATUS", "PAGES", "DONE", "CLAIMED", "ETA", "ERROR"]
RIGHT_ALIGNED = {2, 3, 4}  # numbers line up on their last digit


def table(rows: list[list[str]], header: list[str] = HEADER) -> list[str]:
    """Rows as lines with every column as wide as its widest cell; the last column is not padded."""
    lines = [header, *rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    out = []
    for line in lines:
        cells = [
            cell.rjust(widths[n]) if n in RIGHT_ALIGNED else cell.ljust(widths[n]) for n, cell in enumerate(line[:-1])
        ]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return out


def print_jobs(store: JobStore, status: str | None, limit: int | None, as_json: bool) -> None:
    """The command itself: the table on stdout (what was left out on stderr), or JSON for scripts,
    which get every job unless they ask for a limit."""
    ids = list(store.iter_job_ids())
    limit = limit if limit is not None else (0 if as_json else DEFAULT_LIMIT)
    metas = select(ids, store.try_load, status, limit)
    if as_json:
        print(json.dumps([meta.to_json() for meta in metas], indent=2, ensure_ascii=False))
    elif not metas:
        print("no jobs", file=sys.stderr)
    else:
        now, estimates = utc_now(), QueueFiles(store.layout)

        def eta(meta: JobMeta) -> Mapping[str, Any] | None:
            return None if meta.status.terminal else estimates.eta(meta.worker.id, meta.job_id, now.timestamp())

        rows = [row(meta, now, eta(meta)) for meta in metas]
        print("\n".join(table(rows)))
        if limit and len(metas) == limit and len(ids) > limit:
            print(f"the newest {limit} of {len(ids)} jobs; --limit 0 lists all", file=sys.stderr)
