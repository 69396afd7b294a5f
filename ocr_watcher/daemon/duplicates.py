"""The same file twice: under a profile with `duplicates: reuse`, a job whose content (sha256, with
the engine and its settings: other settings give other results) was done before gets that earlier
job's results instead of being OCRed again.

Which job does the work is settled by the content's record in the outbox (spool/digests.py), so
jobs on several daemons sharing an outbox agree. When a job is about to be scheduled its owner asks
`admit`; the rule is lifecycle.decide_duplicate. A job that waits stays queued with `duplicate_of`
naming its leader, and is looked at again every RECHECK_SECONDS; one that follows is completed by
its owner through the result thread, which links the leader's results (spool/shared_results.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping

from ..config import Config
from ..spool.digests import DigestRecords
from ..spool.model import JobMeta, Status
from ..spool.store import JobStore
from .active import ActiveJob
from .lifecycle import Duplicate, decide_duplicate

log = logging.getLogger("ocr_watcher")
RECHECK_SECONDS = 2.0
SWEEP_SECONDS = 3600.0
SWEEP_AFTER_SECONDS = 3600.0  # a record younger than this is never swept: its job may be being claimed
_TRIES = 3  # decisions in a row that lost a race before the job waits for the next look


def content_key(meta: JobMeta) -> str | None:
    """What makes two jobs' results the same: the input's bytes, the engine and its settings."""
    if meta.source.sha256 is None or meta.engine is None:
        return None
    settings = json.dumps([meta.source.sha256, meta.engine.kind, meta.engine.settings()], sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()


class Duplicates:
    def __init__(
        self,
        store: JobStore,
        config: Callable[[], Config],
        follow: Callable[[ActiveJob, JobMeta], None],
    ) -> None:
        self.store = store
        self.records = DigestRecords(store.layout)
        self._config = config  # the running one, as reloaded
        self._follow = follow  # the owner completes the job with the leader's results
        self.waiting: dict[str, str] = {}  # job id -> the leader it waits for
        self._next_look = 0.0
        self._next_sweep = 0.0

    def admit(self, active: ActiveJob) -> bool:
        """True: do the job's pages now. False: it waits for its leader, or follows it."""
        meta = active.meta
        key = content_key(meta) if self._config().reuses_duplicates(meta.profile) else None
        if key is None:
            return self._process(active)
        self._sweep_when_due()
        leader: str | None = None
        for _ in range(_TRIES):
            leader = self.records.leader(key)
            leader_meta = self.store.try_load(leader) if leader else None
            status = leader_meta.status if leader_meta is not None else None
            if status is Status.COMPLETED and not self._has_results(leader or ""):
                status = None  # its results were removed by hand: as good as gone
            decision = decide_duplicate(True, meta.job_id, leader, status)
            if decision is Duplicate.PROCESS or (decision is Duplicate.LEAD and self.records.lead(key, meta.job_id)):
                return self._process(active)
            if decision is Duplicate.REPLACE and self.records.replace(key, leader or "", meta.job_id):
                log.info("%s: leads for its content now (job %s did not finish it)", meta.job_id, leader)
                return self._process(active)
            if decision is Duplicate.FOLLOW and leader_meta is not None:
                self.waiting.pop(meta.job_id, None)
                log.info("%s: the same content as job %s, which completed: taking its results", meta.job_id, leader)
                self._follow(active, leader_meta)
                return False
            if decision is Duplicate.WAIT:
                break
        return self._wait(active, leader or "")

    def look_again(self, active: Mapping[str, ActiveJob], schedule: Callable[[ActiveJob], None]) -> None:
        """Every RECHECK_SECONDS: the waiting jobs whose leader has ended are admitted again."""
        now = time.monotonic()
        if not self.waiting or now < self._next_look:
            return
        self._next_look = now + RECHECK_SECONDS
        for job_id in list(self.waiting):
            job = active.get(job_id)
            if job is None or job.meta.status is not Status.QUEUED:
                self.waiting.pop(job_id, None)  # cancelled, deleted or taken over meanwhile
            elif self.admit(job):
                schedule(job)

    def _has_results(self, job_id: str) -> bool:
        paths = self.store.paths(job_id)
        return paths.result_md.exists() and paths.result_metadata.exists()

    def ended(self, job_id: str) -> None:
        """A job of ours reached its end: those waiting for it are looked at by the next flush."""
        if job_id in self.waiting.values():
            self._next_look = 0.0

    def _process(self, active: ActiveJob) -> bool:
        self.waiting.pop(active.job_id, None)
        if active.meta.duplicate_of is not None:
            active.meta.duplicate_of, active.dirty = None, True
        return True

    def _wait(self, active: ActiveJob, leader: str) -> bool:
        if self.waiting.get(active.job_id) != leader:
            log.info("%s: the same content as job %s, which is not done yet: waiting for it", active.job_id, leader)
        self.waiting[active.job_id] = leader
        if leader and active.meta.duplicate_of != leader:
            active.meta.duplicate_of, active.dirty = leader, True
        return False

    def _sweep_when_due(self) -> None:
        """Hourly, on a thread of its own, while jobs reuse: the records of jobs retention took."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        threading.Thread(target=self._sweep, name="digest-sweep", daemon=True).start()

    def _sweep(self) -> None:
        try:
            if removed := self.records.sweep(self.store.exists, SWEEP_AFTER_SECONDS):
                log.info("removed %d content records whose jobs are gone", removed)
        except OSError as exc:  # the outbox away or read-only: the next sweep tries again
            log.warning("cannot sweep the content records: %s", exc)
