"""Which jobs the outbox holds, in what status, newest first: for `GET /jobs` and `/health`.

Listing must stay cheap with a hundred thousand job folders, and other daemons (and people) change
the outbox too, so the folder is the truth and this is a cache of it: one scandir per refresh (at
most every `ttl` seconds), metadata.json read once per new job, and again only when its mtime
changes. Completed jobs never change, so they are not even stat'ed again; the rest are few.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

from ..spool.model import Status
from ..spool.store import JobStore

_COMPLETED = Status.COMPLETED.value


@dataclass(slots=True)
class _Entry:
    created: str  # ISO time: sorts as it reads
    status: str
    mtime_ns: int


class JobIndex:
    def __init__(self, store: JobStore, ttl: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._ordered: list[tuple[str, str]] = []  # (job_id, status), newest first
        self._refreshed = float("-inf")
        self._lock = threading.Lock()

    def newest_first(self) -> list[tuple[str, str]]:
        """(job_id, status) of every job, newest first, at most `ttl` seconds old."""
        with self._lock:
            if time.monotonic() - self._refreshed >= self.ttl:
                self._refresh()
            return self._ordered

    def _refresh(self) -> None:
        changed = False
        seen: set[str] = set()
        for job_id in self.store.iter_job_ids():
            seen.add(job_id)
            entry = self._entries.get(job_id)
            if entry is not None and entry.status == _COMPLETED:
                continue
            path = self.store.paths(job_id).metadata
            try:
                mtime_ns = os.stat(path).st_mtime_ns
            except OSError:
                continue  # being published or deleted: next time
            if entry is not None and entry.mtime_ns == mtime_ns:
                continue
            fresh = _read_entry(path, mtime_ns)
            if fresh is not None:
                self._entries[job_id] = fresh
                changed = True
        for gone in [job_id for job_id in self._entries if job_id not in seen]:
            del self._entries[gone]
            changed = True
        if changed or not self._ordered and self._entries:
            ordered = sorted(self._entries.items(), key=lambda item: (item[1].created, item[0]), reverse=True)
            self._ordered = [(job_id, entry.status) for job_id, entry in ordered]
        self._refreshed = time.monotonic()


def _read_entry(path, mtime_ns: int) -> _Entry | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    status = doc.get("status") if isinstance(doc, dict) else None
    if status not in {s.value for s in Status}:
        return None
    created = doc.get("created_at")
    return _Entry(created if isinstance(created, str) else "", status, mtime_ns)
