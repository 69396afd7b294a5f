"""The periodic look at the outbox: interrupted claims finished, RETRY files acted on, our own
unfinished jobs resumed, other daemons' jobs watched and taken over when their heartbeat expires.

An unchanged outbox holds the folders of the last listing: only the jobs that can change are looked
at again (failed/cancelled ones for RETRY, others' unfinished or unreadable ones, and those that
were ours at the last scan), never a completed job (spool/walk.py). That keeps a hundred thousand
finished jobs cheap."""

from __future__ import annotations

import logging
import time

from ..spool.claim import Claimer
from ..spool.layout import RETRY
from ..spool.walk import OutboxWalker
from ..spool.workers import Beat, Heartbeats
from .jobs import JobOwner
from .lifecycle import Found, decide_found
from .takeover import Takeover

log = logging.getLogger("ocr_watcher")
TAKEOVER_REASONS = {Found.FINISH_TAKEOVER: "an abandoned takeover", Found.TAKE_OVER: "heartbeat expired"}


class OutboxScanner:
    def __init__(self, owner: JobOwner, takeover: Takeover, claimer: Claimer, heartbeats: Heartbeats) -> None:
        self.owner = owner
        self.takeover = takeover
        self.store = owner.store
        self.terminal = owner.terminal
        self.claimer = claimer
        self.heartbeats = heartbeats
        self._watched: set[str] = set()  # others' unfinished jobs and unreadable ones: read on every scan
        self._held: set[str] = set()  # active or retryable at the last scan
        self._walker = OutboxWalker(self.store)
        self.last_scan = 0.0  # monotonic

    def relist(self) -> None:
        """The outbox came back (or was replaced): list it in full on the next scan, which is due now."""
        self._walker.relist()
        self.last_scan = 0.0

    def scan(self, startup: bool = False) -> None:
        self.last_scan = time.monotonic()
        if not startup:  # recovery leaves the claims in progress on the claim threads alone
            try:
                for job_id in self.claimer.recover(self.heartbeats.is_gone):
                    log.warning("%s: finished an interrupted claim", job_id)
            except OSError as exc:  # a full or read-only outbox: the claim stays where it is
                self.owner.storage.failed("claim", exc)
            else:
                self.owner.storage.succeeded("claim")
        retryable, active = self.terminal.retryable, self.owner.active
        walk = self._walker.walk(list(self._watched | set(retryable) | self._held), full=startup)
        completed, retryable_before = self.store.completed, set(retryable)
        retryable_listed, watched = set(), set()
        beats: dict[str, Beat | None] = {}
        for job_id in walk:
            read_at = None
            if job_id in retryable:
                retryable_listed.add(job_id)
                if self.store.has_control(job_id, RETRY):
                    self.takeover.retry(job_id)
                    continue
                read_at = self.store.metadata_stamp(job_id)
                if read_at == retryable[job_id]:
                    continue
                del retryable[job_id]  # rewritten (another daemon retried it): read it again
            if job_id in active or self.claimer.is_busy(job_id):
                continue  # ours already, or about to be (its Claimed event is on the way)
            # Taken before the read: a rewrite while reading shows as a change on the next scan.
            read_at = read_at or self.store.metadata_stamp(job_id)
            meta = self.store.load_unless_completed(job_id)  # a completed one is only noted
            if meta is None:
                if job_id in completed:
                    walk.completed_found()
                else:
                    watched.add(job_id)  # unreadable (or gone): looked at again next time
                continue
            ours = meta.worker.id == self.takeover.worker_id
            found = decide_found(
                meta.status,
                ours=ours,
                fenced=ours and not meta.status.terminal and self.store.is_fenced(job_id, meta.worker.epoch),
                owner_gone=not ours and not meta.status.terminal and self.heartbeats.job_owner_gone(meta, beats),
            )
            if found is Found.TERMINAL:
                self.terminal.note(meta, read_at)
                if job_id in completed:
                    walk.completed_found()
            elif found is Found.RESUME:
                log.info("%s: resuming (%s, %d pages done)", job_id, meta.status.value, meta.progress.pages_done)
                self.owner.activate(meta)
            elif found in TAKEOVER_REASONS and self.takeover.take_over(meta, reason=TAKEOVER_REASONS[found]):
                self.takeover.adopt(meta, None)
            if job_id not in active and not meta.status.terminal:
                watched.add(job_id)  # another daemon's: watched for its heartbeat
        if walk.finish():  # a full listing: the retryable jobs not in it are gone
            for gone in retryable_before - retryable_listed:
                retryable.pop(gone, None)
        self._watched = watched
        self._held = set(active) | set(retryable)
