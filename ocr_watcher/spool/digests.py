"""Which job does the work for a content: one small file per content key in the outbox
(`.ocr-watcher/digests/<key>.json`, `{"job_id": ...}`), so that jobs of the same file agree on one
leader, on one daemon or on several sharing the outbox, without an index in memory.

A record is created exclusively (a complete temp file linked to its name: nobody reads half a
record), so of jobs racing for one content exactly one leads. Replacing a record (its leader failed
or is gone) and removing one (the sweep) happen under the key's lock file, also created exclusively,
and only if the record still names the job the caller saw: two jobs that both found a failed leader
do not both take its place. A lock left by a daemon that died is broken after LOCK_STALE_SECONDS.

Records are written without fsync: one lost in a power cut only means that content is OCRed once
more, never that a job waits for nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from .atomic import atomic_write_json, is_temp_name, temp_name_for
from .layout import OutboxLayout

LOCK_STALE_SECONDS = 60.0
UNREADABLE = ""  # the job id of a record that cannot be read: a leader that is gone


class DigestRecords:
    def __init__(self, layout: OutboxLayout) -> None:
        self.folder = layout.internal / "digests"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def leader(self, key: str) -> str | None:
        """The job the record names; None: there is no record; UNREADABLE: a damaged one."""
        try:
            raw = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        try:
            job_id = json.loads(raw).get("job_id")
        except (ValueError, AttributeError):
            return UNREADABLE
        return job_id if isinstance(job_id, str) and job_id else UNREADABLE

    def lead(self, key: str, job_id: str) -> bool:
        """Create the record naming `job_id`; False when there is one already."""
        self.folder.mkdir(exist_ok=True)  # not its parent: an outbox without one is not ours
        path = self.path(key)
        tmp = temp_name_for(path)
        atomic_write_json(tmp, {"job_id": job_id}, fsync=False)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def replace(self, key: str, was: str, job_id: str) -> bool:
        """Name `job_id` in the record that named `was`; False when it names another job by now, or
        its lock is held (try again later)."""
        return self._under_lock(key, was, lambda: atomic_write_json(self.path(key), {"job_id": job_id}, fsync=False))

    def remove(self, key: str, was: str) -> bool:
        return self._under_lock(key, was, lambda: self.path(key).unlink(missing_ok=True))

    def sweep(self, job_exists: Callable[[str], bool], older_than: float) -> int:
        """Remove the records, older than `older_than` seconds, whose job is gone (retention took it):
        without this the folder would keep a file for every content ever seen. Returns how many went."""
        removed, now = 0, time.time()
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        for entry in entries:
            key, dot, ext = entry.name.partition(".")
            if ext != "json" or is_temp_name(entry.name):  # temp files and locks of a daemon that died
                if _age(entry.path, now) > LOCK_STALE_SECONDS:
                    Path(entry.path).unlink(missing_ok=True)
                continue
            if _age(entry.path, now) <= older_than:
                continue
            job_id = self.leader(key)
            if job_id is not None and not (job_id and job_exists(job_id)) and self.remove(key, job_id):
                removed += 1
        return removed

    def _under_lock(self, key: str, was: str, change: Callable[[], object]) -> bool:
        lock = self.folder / f"{key}.lock"
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            if _age(lock, time.time()) > LOCK_STALE_SECONDS:
                lock.unlink(missing_ok=True)  # its holder died; the next try takes it
            return False
        try:
            if self.leader(key) != was:
                return False
            change()
            return True
        finally:
            lock.unlink(missing_ok=True)


def _age(path: str | Path, now: float) -> float:
    try:
        return now - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0
