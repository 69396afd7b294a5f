"""Which jobs the outbox holds, in what status, newest first: for `GET /jobs` and `/health`.

Listing must stay cheap with a hundred thousand job folders, and other daemons (and people) change
the outbox too, so the folder is the truth and this is a cache of it: one scandir per refresh (at
most every `ttl` seconds), metadata.json read once per new job, and again only when its mtime
changes. Completed jobs never change: they are the job store's `completed` (spool/completed.py),
which the daemon's start-up scan has mostly filled already, so they are neither read nor stat'ed
again, and cost no memory here. The few other jobs (queued, processing, failed, cancelled) are kept
here, each re-stat'ed on every refresh.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from heapq import merge
from itertools import islice
from typing import Any

from ..spool.completed import created_of, iso_ms
from ..spool.layout import METADATA
from ..spool.model import Status
from ..spool.store import JobStore
from ..spool.walk import OutboxWalker

_COMPLETED = Status.COMPLETED.value
_STATUSES = frozenset(s.value for s in Status)


@dataclass(slots=True)
class _Entry:
    created_ms: int  # sorts newest first; 0 when unreadable
    status: str
    mtime_ns: int


class JobIndex:
    def __init__(self, store: JobStore, ttl: float = 1.0) -> None:
        self.store = store
        self.completed = store.completed
        self.ttl = ttl
        self._root = os.fspath(store.root)
        self._walker = OutboxWalker(store)
        self._others: dict[str, _Entry] = {}  # every job not completed
        self._others_newest: list[tuple[int, str]] = []  # (created, id) of `_others`, newest first
        self._refreshed = float("-inf")
        self._lock = threading.Lock()

    def warm_up(self) -> threading.Thread:
        """Build the index on a background thread (the first refresh of a big outbox takes a while)."""
        thread = threading.Thread(target=self.page, args=(set(), 0, 1), name="job-index", daemon=True)
        thread.start()
        return thread

    # -- answers ---------------------------------------------------------------------------------
    def page(self, statuses: set[str], offset: int, limit: int) -> tuple[list[str], int]:
        """The ids of one page of jobs in these statuses (all when empty), newest first, and how many
        match: what `GET /jobs` shows. Reads only as far as the page when completed jobs are wanted."""
        with self._lock:
            self._refresh_if_due()
            wanted_completed = not statuses or _COMPLETED in statuses
            others = [item for item in self._others_newest if not statuses or self._others[item[1]].status in statuses]
            total = len(others) + (len(self.completed) if wanted_completed else 0)
            newest = self._newest(others, wanted_completed)
            return [job_id for _, job_id in islice(newest, offset, offset + limit)], total

    def counts(self) -> dict[str, int]:
        """Jobs by status (every status present, 0 when none): what `/health` shows."""
        with self._lock:
            self._refresh_if_due()
            counts = dict.fromkeys((status.value for status in Status), 0)
            for entry in self._others.values():
                counts[entry.status] += 1
            counts[_COMPLETED] += len(self.completed)
            return counts

    def newest_first(self) -> list[tuple[str, str]]:
        """(job_id, status) of every job, newest first, at most `ttl` seconds old."""
        with self._lock:
            self._refresh_if_due()
            statuses = {job_id: entry.status for job_id, entry in self._others.items()}
            return [(job_id, statuses.get(job_id, _COMPLETED)) for _, job_id in self._newest(self._others_newest, True)]

    def _newest(self, others: list[tuple[int, str]], with_completed: bool) -> Iterator[tuple[int, str]]:
        """(created, id) newest first: the completed jobs (lazily) merged with `others`."""
        if not with_completed:
            return iter(others)
        order, completed = self.completed.ordered(), self.completed
        done = (
            (created_of(completed.packed(job_id) or 0), job_id) for job_id in reversed(order) if job_id in completed
        )
        return merge(done, others, reverse=True)

    # -- refresh ---------------------------------------------------------------------------------
    def _refresh_if_due(self) -> None:
        if time.monotonic() - self._refreshed >= self.ttl:
            self._refresh()
            self._refreshed = time.monotonic()

    def _refresh(self) -> None:
        completed, others = self.completed, self._others
        walk = self._walker.walk(list(others))  # an unchanged outbox: only the jobs not completed
        changed = False
        others_listed = set()
        for job_id in walk:
            others_listed.add(job_id)
            path = os.path.join(self._root, job_id, METADATA)
            try:
                mtime_ns = os.stat(path).st_mtime_ns
            except OSError:
                continue  # being published or deleted: next time
            entry = others.get(job_id)
            if entry is not None and entry.mtime_ns == mtime_ns:
                continue
            doc = self.store.peek(job_id)
            if completed.note(job_id, doc):
                walk.completed_found()
                others_listed.discard(job_id)
                continue
            fresh = _entry(doc, mtime_ns)
            if fresh is not None:  # else unreadable: kept as it was, read again next time
                others[job_id] = fresh
                changed = True
        walk.finish()
        for job_id in [job_id for job_id in others if job_id not in others_listed]:
            del others[job_id]  # deleted, or completed (maybe noted by the daemon meanwhile)
            changed = True
        if changed:
            self._others_newest = sorted(((e.created_ms, job_id) for job_id, e in others.items()), reverse=True)


def _entry(doc: Any, mtime_ns: int) -> _Entry | None:
    if not isinstance(doc, dict) or doc.get("status") not in _STATUSES:
        return None
    return _Entry(iso_ms(doc.get("created_at")) or 0, doc["status"], mtime_ns)
