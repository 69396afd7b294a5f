"""What happens to a job, decided from plain facts: no threads, no folders, no clock.

Each function takes what the daemon knows at one moment of a job's life (it opened, a page failed,
every page is done, the job was found in the outbox, a RETRY was asked for) and returns one
decision; `daemon/jobs.py` and `daemon/outbox_scan.py` carry it out. The rules live here, so
that changing one (a retry limit, the error-rate rule, who may take a job over) means reading this
file and its table-driven tests, not the main loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..pipeline.input_watch import InputStamp
from ..spool.model import RETRYABLE, JobError, Status


# -- decisions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartOver:
    """The input changed after the claim: drop what was done, wait for it to hold still."""

    stamp: InputStamp


@dataclass(frozen=True)
class WaitForStorage:
    """Not the job's fault: the outbox is full, read-only or away. Run it again later, without using
    up a retry; `problem` is what the storage said."""

    problem: OSError | str


@dataclass(frozen=True)
class FailJob:
    error: JobError


@dataclass(frozen=True)
class OpenAgain:
    """The render process died or timed out while opening: one more try (`schedule`: now, unless stopping)."""

    schedule: bool


@dataclass(frozen=True)
class Begin:
    """The document opened: `pages` pages; `to_processing`: the job was queued and now processes."""

    pages: int
    to_processing: bool
    schedule: bool


@dataclass(frozen=True)
class RunLater:
    """Run the page again after a while, without using up a retry and without a storage fault: it
    was dropped while being written (its folder gone, or a newer lease there); if the job was deleted
    or taken over, the control and fencing checks forget it first."""


@dataclass(frozen=True)
class RetryPage:
    front: bool  # stopping: back to the front of the job's own pages, not the shared queue


@dataclass(frozen=True)
class FailPage:
    error: str


@dataclass(frozen=True)
class Ignore:
    why: str


@dataclass(frozen=True)
class WriteResult:
    """Every page is done and few enough failed: assemble and write result.md."""


OpenDecision = StartOver | WaitForStorage | FailJob | OpenAgain | Begin
PageFailDecision = Ignore | RunLater | WaitForStorage | RetryPage | FailPage
CompleteDecision = StartOver | FailJob | WriteResult


# -- facts -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenFacts:
    changed: InputStamp | None  # the input's stamp when it differs from the claim's, else None
    error: JobError | None  # the input is bad (not a PDF, encrypted, ...)
    outbox_missing: str | None  # why the outbox is away, when the input could not be opened
    pages: int | None  # None: the opening did not finish (see `transient`)
    transient: str | None
    open_failures: int  # earlier openings that did not finish, this one not counted
    page_retries: int
    status: Status
    stopping: bool


@dataclass(frozen=True)
class PageFailFacts:
    stage: str  # "render", "engine", "write" or "cancelled"
    error: str
    permanent: bool
    tries: int  # tries of this page so far, this one included
    page_retries: int
    job_cancelled: bool
    outbox_missing: str | None  # asked only after a render failure: the input lives in the outbox
    os_error: OSError | None  # what the outbox said, when the write failed
    stopping: bool


def decide_opened(facts: OpenFacts) -> OpenDecision:
    if facts.changed is not None:
        return StartOver(facts.changed)  # also when it did not open: it may be half-written
    if facts.error is not None and facts.outbox_missing is not None:
        return WaitForStorage(facts.outbox_missing)  # the input is in the outbox: away, not bad
    if facts.error is not None:
        return FailJob(facts.error)
    if facts.pages is None:
        if facts.open_failures + 1 > facts.page_retries:
            message = f"the document could not be opened: {facts.transient}"
            return FailJob(JobError(type="render_failed", message=message))
        return OpenAgain(schedule=not facts.stopping)
    return Begin(facts.pages, to_processing=facts.status is Status.QUEUED, schedule=not facts.stopping)


def decide_page_failed(facts: PageFailFacts) -> PageFailDecision:
    if facts.job_cancelled:
        return Ignore("the job was cancelled, deleted or taken over: the control checks deal with it")
    if facts.stage == "cancelled":
        return RunLater()
    if facts.stage == "write" or facts.outbox_missing is not None:
        return WaitForStorage(facts.outbox_missing or facts.os_error or facts.error)
    if not facts.permanent and facts.tries <= facts.page_retries:
        return RetryPage(front=facts.stopping)
    return FailPage(facts.error)


def decide_complete(
    changed: InputStamp | None, pages_total: int, failed: dict[int, str], max_page_error_rate: float
) -> CompleteDecision:
    if changed is not None:
        return StartOver(changed)  # the pages are of an older version of the file
    if pages_total and len(failed) / pages_total > max_page_error_rate:
        first = min(failed)
        message = (
            f"{len(failed)} of {pages_total} pages failed (limit {max_page_error_rate:.0%});"
            f" page {first}: {failed[first]}"
        )
        return FailJob(JobError(type="pages_failed", message=message))
    return WriteResult()


# -- a job found in the outbox ---------------------------------------------------------------------
class Found(Enum):
    TERMINAL = "terminal"  # noted: completed ones are never read again, failed/cancelled watched for RETRY
    RESUME = "resume"  # ours, and our lease is the newest: carry on
    FINISH_TAKEOVER = "finish_takeover"  # ours by name but fenced: a takeover of ours that died half-way
    TAKE_OVER = "take_over"  # another daemon's, whose heartbeat expired
    WATCH = "watch"  # another daemon's, alive: looked at again on every scan


def decide_found(status: Status, ours: bool, fenced: bool, owner_gone: bool) -> Found:
    """`fenced` matters only for our own jobs, `owner_gone` only for others' unfinished ones."""
    if status.terminal:
        return Found.TERMINAL
    if ours:
        return Found.FINISH_TAKEOVER if fenced else Found.RESUME
    return Found.TAKE_OVER if owner_gone else Found.WATCH


class RetryAsked(Enum):
    RETRY = "retry"  # failed or cancelled: queued again at the next epoch
    IGNORE = "ignore"  # completed: the RETRY file is removed, nothing else happens
    FORGET = "forget"  # gone, unreadable or running: not a job to retry


def decide_retry(status: Status | None) -> RetryAsked:
    if status in RETRYABLE:
        return RetryAsked.RETRY
    return RetryAsked.IGNORE if status is Status.COMPLETED else RetryAsked.FORGET


# -- the same content twice ------------------------------------------------------------------------
class Duplicate(Enum):
    PROCESS = "process"  # do its pages: the profile processes duplicates, or this job leads
    LEAD = "lead"  # no job leads for this content yet: try to be the one
    FOLLOW = "follow"  # the leader completed: its results become this job's
    WAIT = "wait"  # the leader is not done yet: look again later
    REPLACE = "replace"  # the leader failed, was cancelled or is gone: try to take its place


def decide_duplicate(reuse: bool, job_id: str, leader: str | None, leader_status: Status | None) -> Duplicate:
    """`leader`: the job the content's record names (None: no record); `leader_status`: its status
    (None: gone, or its record unreadable)."""
    if not reuse or leader == job_id:
        return Duplicate.PROCESS
    if leader is None:
        return Duplicate.LEAD
    if leader_status is Status.COMPLETED:
        return Duplicate.FOLLOW
    if leader_status in (Status.QUEUED, Status.PROCESSING):
        return Duplicate.WAIT
    return Duplicate.REPLACE
