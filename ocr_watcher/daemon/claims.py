"""Files become jobs: a claim (spool/claim.py) moves the file into its job folder, and the job is
handed to its owner. The one code path for inbox files and HTTP uploads alike."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable

from ..hooks import HookList
from ..spool.claim import Claimer, ClaimRequest, InputStillWritten
from ..spool.model import Status
from .jobs import JobOwner
from .presence import OutboxPresence

log = logging.getLogger("ocr_watcher")


class Claims:
    def __init__(self, claimer: Claimer, owner: JobOwner, hooks: HookList, presence: OutboxPresence) -> None:
        self.claimer = claimer
        self.owner = owner
        self.hooks = hooks
        self.presence = presence

    def claim_all(self, requests: Iterable[ClaimRequest]) -> None:
        """Files the intake found ready; one that cannot be claimed now is left for recovery."""
        for request in requests:
            try:
                self.claim(request)
            except OSError as exc:
                self.owner.records.storage_failed("claim", exc)
                log.error("cannot claim %s: %s (recovery finishes the claim later)", request.inbox_path, exc)
            except InputStillWritten as exc:
                log.warning("%s: its writer is not done; the claim is finished once it holds still", exc)
            except Exception:
                log.exception("internal error while claiming %s; recovery will finish it", request.inbox_path)

    def claim(self, request: ClaimRequest, *, give_back: bool = False) -> str | None:
        """Claim one file into a job and start on it; None when another daemon (or a person) took
        the file first."""
        if self.presence.missing is not None:  # not into an empty folder where the outbox should be
            raise FileNotFoundError(errno.ENOENT, self.presence.missing)
        job_id = self.claimer.claim(request, give_back=give_back)
        if job_id is None:
            return None
        self.owner.storage.succeeded("claim")
        meta = self.owner.store.try_load(job_id)
        if meta is None:
            return job_id
        self.hooks.on_job_status(meta, None)
        if meta.status is Status.QUEUED:
            self.owner.activate(meta)
        else:
            self.owner.terminal.note(meta)
        return job_id
