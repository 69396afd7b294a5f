"""An input whose writer was not done when it was claimed (pipeline/input_watch.py): what was done of
the job is dropped, and the job starts over once the file holds still for the settle time."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace

from ..pipeline.input_watch import InputStamp, SettleWatch, stamp_of
from ..pipeline.scheduler import PageScheduler
from ..spool.file_hash import size_and_sha256
from ..spool.store import JobStore
from .active import ActiveJob

log = logging.getLogger("ocr_watcher")


class InputChanges:
    def __init__(self, store: JobStore, scheduler: PageScheduler, settle_seconds: Callable[[], float]) -> None:
        self.store = store
        self.scheduler = scheduler
        self.settle_seconds = settle_seconds  # the intake's, as reloaded
        self._settling = SettleWatch()

    def __bool__(self) -> bool:
        return bool(self._settling)

    def start_over(self, active: ActiveJob, stamp: InputStamp) -> None:
        """Drop what was done of the job (it is of an older version of the file) and wait for the
        input to hold still; `start_settled` then starts it again."""
        old = active.job
        old.cancelled = True  # the pipeline drops whatever of it is still in flight
        source = active.meta.source
        log.warning(
            "%s: %s changed after it was claimed (%d -> %d bytes): its writer was not done; starting over "
            "once it is unchanged for %g s",
            old.job_id,
            source.name,
            source.size,
            stamp[0],
            self.settle_seconds(),
        )
        self.store.discard_pages(old.job_id)
        active.job = replace(
            old,
            pages_total=None,
            pending=deque(),
            done=set(),
            failed={},
            page_tries={},
            in_flight=set(),
            handed_at={},
            served=0,
            opening=False,
            cancelled=False,
            suspect=False,
        )
        active.open_failures = 0
        active.follows = active.meta.duplicate_of = None  # other content now: its own pages are done
        active.meta.set_progress(None, 0, 0)
        active.dirty = True
        self._settling.add(old.job_id, stamp, time.monotonic())

    def start_settled(self, now: float, active: Mapping[str, ActiveJob]) -> None:
        """Start the jobs whose input has held still for the settle time (`active`: the jobs we own)."""

        def stamp(job_id: str) -> InputStamp | None:
            job = active.get(job_id)
            return stamp_of(job.job.input_path) if job is not None else None

        for job_id in self._settling.settled(now, self.settle_seconds(), stamp):
            job = active.get(job_id)
            if job is None or job.meta.status.terminal:
                continue  # cancelled, deleted or taken over meanwhile
            path, source = job.job.input_path, job.meta.source
            # On the main loop, and the whole file: rare (a writer that paused), and then needed.
            try:
                before = path.stat()
                size, digest = size_and_sha256(path)
            except OSError:  # gone or unreadable: opening it reports that as the job's error
                self.scheduler.add(job.job)
                continue
            if stamp_of(path) != (before.st_size, before.st_mtime_ns):
                self._settling.add(job_id, stamp_of(path), now)  # written to while it was hashed
                continue
            source.size, source.sha256, source.mtime_ns = size, digest, before.st_mtime_ns
            self.store.discard_pages(job_id)  # again: a page whose write raced the first discard
            note = "the input changed after it was claimed (its writer was not done); the job was started over"
            job.notes.append(note)
            log.info("%s: the input holds still (%d bytes); starting over", job_id, size)
            job.dirty = True
            self.scheduler.add(job.job)
