"""Files become jobs: a claim (spool/claim.py) moves the file into its job folder, and the job is
handed to its owner. The one code path for inbox files and HTTP uploads alike.

Inbox files are claimed on a few threads of their own: a claim is three fsyncs (the claim record,
the staged metadata.json, the outbox folder) that the main loop used to wait for, and several claims
at once let the journal commit them together. The single-writer rule holds: a claim thread writes
only into the claim and staging folders, which belong to no job yet, and publishes the job whole;
the job's owner takes it up on the main thread (a `Claimed` event) before anything else touches it,
since recovery and the outbox scan leave a busy claim (`Claimer.is_busy`) alone.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..hooks import HookList
from ..spool.claim import Claimer, ClaimRequest, InputStillWritten
from ..spool.model import Status
from .jobs import JobOwner
from .presence import OutboxPresence

log = logging.getLogger("ocr_watcher")
# As many as the default intake.max_queued_jobs: a claim waiting for a thread holds one of those
# places doing nothing (5% more jobs/s than 4 threads on a journaled ext4, bench/overhead.py).
CLAIM_THREADS = 8


@dataclass(frozen=True)
class Claimed:
    """What a claim thread's claim came to: the new job's id, None when someone else took the file
    first, or the error that stopped it."""

    request: ClaimRequest
    job_id: str | None
    error: BaseException | None = None


class Claims:
    def __init__(
        self,
        claimer: Claimer,
        owner: JobOwner,
        hooks: HookList,
        presence: OutboxPresence,
        *,
        post: Callable[[Claimed], None] = lambda event: None,
        settled: Callable[[str], None] = lambda inbox_path: None,
    ) -> None:
        self.claimer = claimer
        self.owner = owner
        self.hooks = hooks
        self.presence = presence
        self._post = post  # onto the main loop's event queue
        self._settled = settled  # the intake may look at this inbox path again
        self._pool: ThreadPoolExecutor | None = None
        self.in_flight = 0  # claims handed to the threads whose Claimed is not handled yet

    def claim_all(self, requests: Iterable[ClaimRequest]) -> None:
        """Files the intake found ready, claimed on the claim threads (see `handle`)."""
        for request in requests:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(CLAIM_THREADS, thread_name_prefix="claim")
            self._pool.submit(self._claim_posted, request)
            self.in_flight += 1

    def handle(self, event: Claimed) -> None:
        """Main thread: a claim thread's claim taken up (or its failure reported)."""
        self.in_flight -= 1
        request, exc = event.request, event.error
        self._settled(request.inbox_path)
        if isinstance(exc, OSError):  # a claim that cannot be made now is left for recovery
            self.owner.records.storage_failed("claim", exc)
            log.error("cannot claim %s: %s (recovery finishes the claim later)", request.inbox_path, exc)
        elif isinstance(exc, InputStillWritten):
            log.warning("%s: its writer is not done; the claim is finished once it holds still", exc)
        elif exc is not None:
            log.error("internal error while claiming %s; recovery will finish it", request.inbox_path, exc_info=exc)
        elif event.job_id is not None:
            self._taken_up(event.job_id)

    def wait(self) -> None:
        """Let the claims running finish (at a stop); their events are on the queue afterwards."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def claim(self, request: ClaimRequest, *, give_back: bool = False) -> str | None:
        """Main thread: claim one file into a job and start on it; None when another daemon (or a
        person) took the file first. Errors are raised (an HTTP upload answers with them)."""
        self._check_outbox()
        job_id = self.claimer.claim(request, give_back=give_back)
        if job_id is not None:
            self._taken_up(job_id)
        return job_id

    def claim_upload(self, request: ClaimRequest) -> str:
        """Main thread: an uploaded file's claim. give_back: a job that cannot be built now leaves no
        trace, so the client's "503, send it again" can never make a second job."""
        job_id = self.claim(request, give_back=True)
        if job_id is None:
            raise FileNotFoundError(f"the uploaded file {request.inbox_path} disappeared before it was claimed")
        return job_id

    def _claim_posted(self, request: ClaimRequest) -> None:
        """A claim thread's work; what it came to goes to the main thread."""
        try:
            self._check_outbox()
            job_id = self.claimer.claim(request)
        except BaseException as exc:  # handled (logged, counted) on the main thread
            self._post(Claimed(request, None, exc))
        else:
            self._post(Claimed(request, job_id))

    def _check_outbox(self) -> None:
        if self.presence.missing is not None:  # not into an empty folder where the outbox should be
            raise FileNotFoundError(errno.ENOENT, self.presence.missing)

    def _taken_up(self, job_id: str) -> None:
        try:
            self.owner.storage.succeeded("claim")
            if job_id in self.owner.active:
                return
            made = self.claimer.made(job_id)  # what the claim wrote: no second read of it
            meta = made or self.owner.store.try_load(job_id)
            if meta is None:
                return
            self.hooks.on_job_status(meta, None)
            if meta.status is Status.QUEUED:
                self.owner.activate(meta, fresh=made is not None)
            else:
                self.owner.terminal.note(meta)
        finally:
            self.claimer.release(job_id)
